"""The Ray Tune trainable's pure parts. Under Tune it is exercised by tests/study: one MLflow run
per trial and the run id in every checkpoint (test_study_e2e), restore after a lost node
(test_multinode), failures (test_failures)."""

from __future__ import annotations

import math

import pytest

from trainables import tracking
from trainables.trainable import StudyContext, _finite_for_tune, trial_config

CTX = tracking.TrackingContext("sqlite:////nowhere.db", "0", "parent")


def test_trial_config_from_tune_config():
    cfg = trial_config(
        {"arm": "set3-gbp", "lr": 0.02, "epochs": 3},
        StudyContext(CTX, cpus_per_trial=3),
        has_gpu=False,
    )
    assert (cfg.arm, cfg.lr, cfg.epochs) == ("set3-gbp", 0.02, 3)
    assert cfg.device == "cpu" and cfg.num_threads == 3
    with pytest.raises(KeyError, match="learning_rate"):
        trial_config({"learning_rate": 0.1}, StudyContext(CTX), has_gpu=False)
    with pytest.raises(ValueError, match="search"):
        StudyContext(CTX, stage="tuning")


def test_tune_sees_finite_values_and_an_undefined_search_metric_as_nan():
    out = _finite_for_tune(
        {"val/auc_mean": math.nan, "val/loss": math.inf, "train/loss": 0.3, "epoch": 2.0}
    )
    # NaN, not a made-up AUC: ASHA's rung cutoffs skip it (nanpercentile), the study's
    # OptunaSearch records the trial as failed.
    assert set(out) == {"val/auc_mean", "train/loss", "epoch"} and math.isnan(out["val/auc_mean"])
    assert out["train/loss"] == 0.3 and out["epoch"] == 2.0
