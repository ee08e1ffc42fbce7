"""Every registered preset builds a valid StudyConfig, keeps its settings where they belong, and
changes nothing about real data that only the synthetic twin should get."""

from __future__ import annotations

import dataclasses

import pytest

from study.presets import PRESETS, get_preset, list_presets, register_preset
from trainables.config import DataConfig, model_stride
from trainables.model_sets import get_arm

PRESET_NAMES = list_presets()


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_is_a_valid_config_of_its_own_name(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    assert cfg.data.image_size % model_stride(cfg.trial.decoder_channels) == 0
    for arm in cfg.arms:
        get_arm(arm)  # every arm it names exists
    # max_concurrent / gpus_per_trial None: left to the cluster (study.resources)
    assert (cfg.max_concurrent is None or cfg.max_concurrent >= 1) and cfg.trials_per_arm >= 1
    # A preset is a fresh object each time (no shared mutable state between studies).
    assert get_preset(name) == cfg and get_preset(name) is not cfg


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_changes_no_data_setting_that_would_apply_to_real_data(name):
    """Settings a preset may change: the training size, where files go, and the twin's own ones
    (synthetic_*, used only without --data). Gaze drawing, coordinates, weighting and the split
    are the dataset's: a preset must not change them behind a user's back (issue 12)."""
    data, default = get_preset(name).data, DataConfig()
    allowed = {"image_size", "data_dir"} | {f for f in vars(default) if f.startswith("synthetic_")}
    changed = {f.name for f in dataclasses.fields(DataConfig)
               if getattr(data, f.name) != getattr(default, f.name)}  # fmt: skip
    assert changed <= allowed, changed - allowed


def test_the_registry_refuses_twins_and_lists_names():
    with pytest.raises(ValueError, match="registered twice"):
        register_preset("demo")(lambda: get_preset("demo"))
    with pytest.raises(KeyError, match="demo"):
        get_preset("nope")
    assert set(PRESETS.names()) == set(PRESET_NAMES) >= {"demo", "paper", "smoke", "shortcut"}


def test_a_study_searches_on_a_known_metric_that_its_trials_log():
    from trainables.config import ConfigError, TrialConfig

    cfg = get_preset("demo")
    assert cfg.search_metric == "val/auc_mean"
    with pytest.raises(ConfigError, match="search_metric must be one of"):
        dataclasses.replace(cfg, search_metric="val/loss")
    with pytest.raises(ConfigError, match="selection_signals=true"):
        dataclasses.replace(cfg, search_metric="val/masked_auc_mean")
    signals = dataclasses.replace(cfg.trial, selection_signals=True)
    blind = dataclasses.replace(cfg, search_metric="val/masked_auc_mean", trial=signals)
    assert blind.search_metric == "val/masked_auc_mean" and not TrialConfig().selection_signals
