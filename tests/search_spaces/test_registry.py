"""The search-space registry, parametrised over every registered space and every arm."""

from __future__ import annotations

import math

import pytest

from search_spaces import FloatRange, SearchSpace, baseline_values, get_space, list_spaces
from trainables.config import TrialConfig
from trainables.model_sets import get_arm, list_arms

SPACES = list_spaces()
ARMS = list_arms()


def test_registry_has_the_documented_spaces():
    assert {"paper", "demo", "lr-only"} <= set(SPACES)


def test_unknown_space_lists_valid_names():
    with pytest.raises(KeyError) as err:
        get_space("no-such-space")
    for name in SPACES:
        assert name in str(err.value)


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("arm_name", ARMS)
def test_space_searches_only_what_the_arm_uses(space_name, arm_name):
    arm = get_arm(arm_name)
    space = get_space(space_name)(arm)
    assert isinstance(space, SearchSpace)
    # Every space searches the learning rate, on a log scale.
    assert space.params["lr"].log
    assert space.params["lr"].low > 0
    # r only changes set 3's loss; gamma only matters when there is a segmentation loss.
    assert ("seg_ratio" in space.params) == (arm.model_set == "set3" and space_name != "lr-only")
    if arm.model_set == "no-seg":
        assert "gamma" not in space.params
    assert set(space.params) <= set(arm.hyperparams)


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("arm_name", ARMS)
def test_baseline_point_is_first_and_inside_the_ranges(space_name, arm_name):
    space = get_space(space_name)(get_arm(arm_name))
    (point,) = space.points_to_evaluate()
    assert set(point) == set(space.params)
    defaults = TrialConfig()
    for name, value in point.items():
        assert value == getattr(defaults, name)
        assert space.params[name].contains(value)


def test_baseline_values_are_the_baseline_codes():
    assert baseline_values() == {"lr": 1e-3, "gamma": 0.41731, "seg_ratio": 0.5}


def test_paper_ranges_match_the_brief():
    space = get_space("paper")(get_arm("set3-gbp"))
    assert space.params["lr"] == FloatRange(1e-5, 1e-2, log=True)
    assert space.params["seg_ratio"] == FloatRange(0.0, 1.0)
    assert space.params["gamma"] == FloatRange(0.05, 0.95)


def test_invalid_ranges_and_names_are_refused():
    with pytest.raises(ValueError):
        FloatRange(0.0, 1.0, log=True)
    with pytest.raises(ValueError):
        FloatRange(1.0, 1.0)
    with pytest.raises(KeyError, match="searchable"):
        SearchSpace(params={"momentum": FloatRange(0.1, 0.9)}, baseline=baseline_values())
    with pytest.raises(ValueError, match="outside"):
        SearchSpace(params={"lr": FloatRange(0.1, 0.9)}, baseline=baseline_values())
    assert not FloatRange(0.0, 1.0).contains(math.nan)
