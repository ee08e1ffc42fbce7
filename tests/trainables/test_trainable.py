"""The Ray Tune trainable's pure parts. Under Tune it is exercised by tests/study: one MLflow run
per trial and the run id in every checkpoint (test_study_e2e), restore after a lost node
(test_multinode), failures (test_failures)."""

from __future__ import annotations

import math

import pytest

from trainables.config import Placement
from trainables.record.store import TrackingContext
from trainables.trainable import (
    DATASET_KEY,
    TAG_PREFIX,
    StudyContext,
    _finite_for_tune,
    extra_tags,
    placement_for,
    trial_config,
)

CTX = TrackingContext("sqlite:////nowhere.db", "0", "parent")


def test_trial_config_from_tune_config():
    config = {"arm": "set3-gbp", "lr": 0.02, "epochs": 3, DATASET_KEY: "clean", TAG_PREFIX + "twin": "clean"}  # fmt: skip
    cfg = trial_config(config)
    assert extra_tags(config) == {"twin": "clean"}
    assert (cfg.arm, cfg.lr, cfg.epochs) == ("set3-gbp", 0.02, 3)
    with pytest.raises(KeyError, match="learning_rate"):
        trial_config({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="tuning"):
        StudyContext(CTX, stage="tuning")


def test_placement_comes_from_the_trials_resources_unless_the_study_sets_it():
    assert placement_for(StudyContext(CTX, cpus_per_trial=3), has_gpu=False) == Placement("cpu", 3)
    # --set placement.device=cpu / placement.num_threads=2 win over what Ray gave the trial
    study = StudyContext(CTX, cpus_per_trial=3, placement=Placement("cpu", 2))
    assert placement_for(study, has_gpu=True) == Placement("cpu", 2)


def test_tune_sees_finite_values_and_an_undefined_search_metric_as_nan():
    out = _finite_for_tune(
        {"val/auc_mean": math.nan, "val/loss": math.inf, "train/loss": 0.3, "epoch": 2.0}
    )
    # NaN, not a made-up AUC: ASHA's rung cutoffs skip it (nanpercentile), the study's
    # OptunaSearch records the trial as failed.
    assert set(out) == {"val/auc_mean", "train/loss", "epoch"} and math.isnan(out["val/auc_mean"])
    assert out["train/loss"] == 0.3 and out["epoch"] == 2.0
