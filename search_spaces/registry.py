"""Registry of named hyperparameter search spaces (like timm's model registry).

A space is a small function ``space(arm) -> SearchSpace`` registered with ``@register_space(name)``;
it decides per arm which hyperparameters are searched (an arm only searches what its loss uses, see
``Arm.hyperparams``). Ranges are plain dataclasses, not Tune domains, so this package stays free of
Ray; ``study.tuner`` turns them into Tune domains once, for ``param_space``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trainables.config import TrialConfig
from trainables.registry import Registry

if TYPE_CHECKING:
    from trainables.model_sets import Arm

SEARCHABLE: tuple[str, ...] = ("lr", "gamma", "seg_ratio")  # TrialConfig fields a space may search


@dataclass(frozen=True)
class FloatRange:
    """A continuous range, sampled uniformly or uniformly in log space."""

    low: float  # inclusive lower bound
    high: float  # upper bound
    log: bool = False  # sample log-uniformly (learning rates)

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"invalid range {self}: need low < high (and low > 0 when log)")

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high and math.isfinite(value)


@dataclass(frozen=True)
class SearchSpace:
    """What one arm searches, and the point evaluated first."""

    params: dict[str, FloatRange] = field(default_factory=dict)  # hyperparameter -> range
    # the baseline code's values (all of SEARCHABLE)
    baseline: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.params) - set(SEARCHABLE)
        if unknown:
            raise KeyError(f"cannot search {sorted(unknown)}; searchable: {', '.join(SEARCHABLE)}")
        for name, rng in self.params.items():
            if not rng.contains(self.baseline[name]):
                raise ValueError(f"baseline {name}={self.baseline[name]} lies outside {rng}")

    def points_to_evaluate(self) -> list[dict[str, float]]:
        """The baseline configuration restricted to the searched parameters (enqueued first)."""
        return [{k: self.baseline[k] for k in self.params}] if self.params else []


def baseline_values() -> dict[str, float]:
    """The baseline code's hyperparameters, taken from TrialConfig's defaults (one source)."""
    defaults = TrialConfig()
    return {name: float(getattr(defaults, name)) for name in SEARCHABLE}


SpaceFn = Callable[["Arm"], SearchSpace]
SPACES: Registry[SpaceFn] = Registry("search space")


def register_space(name: str) -> Callable[[SpaceFn], SpaceFn]:
    """Decorator registering ``fn(arm) -> SearchSpace`` under ``name``."""
    return SPACES.register(name)


def get_space(name: str) -> SpaceFn:
    """The space function registered as ``name`` (KeyError listing the valid names)."""
    return SPACES.get(name)


def list_spaces() -> list[str]:
    """Names of all registered search spaces, sorted."""
    return sorted(SPACES.names())


def space_for_arm(arm: Arm, ranges: dict[str, FloatRange]) -> SearchSpace:
    """Keep the ranges of the hyperparameters this arm's loss uses (``arm.hyperparams``)."""
    return SearchSpace(
        params={k: r for k, r in ranges.items() if k in arm.hyperparams}, baseline=baseline_values()
    )
