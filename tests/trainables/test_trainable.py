"""The Ray Tune trainable's pure parts. Under Tune it is exercised by tests/study: one MLflow run
per trial and the run id in every checkpoint (test_study_e2e), restore after a lost node
(test_multinode), failures (test_failures)."""

from __future__ import annotations

import math

import pytest

from trainables.config import Placement, TrialConfig
from trainables.record.store import TrackingContext
from trainables.trainable import (
    DATASET_KEY,
    TAG_PREFIX,
    StudyContext,
    _finite_for_tune,
    extra_tags,
    placement_for,
    run_params,
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


def test_a_run_logs_only_the_loss_hyperparameters_its_arm_reads():
    """no-seg has no segmentation loss: gamma and seg_ratio would read as used in MLflow."""
    no_seg = run_params(TrialConfig(arm="no-seg"), 64)
    assert "gamma" not in no_seg and "seg_ratio" not in no_seg and "rrr_lambda" not in no_seg
    assert no_seg["lr"] == 1e-3 and no_seg["image_size"] == 64 and no_seg["epochs"]
    unet = run_params(TrialConfig(arm="unet"), 64)
    assert unet["gamma"] == 0.41731 and "seg_ratio" not in unet
    assert run_params(TrialConfig(arm="set3-gbp"), 64)["seg_ratio"] == 0.5
    assert run_params(TrialConfig(arm="rrr"), 64)["rrr_lambda"] == TrialConfig().rrr_lambda
    # Whatever it leaves out, the config read back from the params is the one that trained.
    cfg = TrialConfig(arm="no-seg", lr=3e-4)
    back = TrialConfig.from_params({k: str(v) for k, v in run_params(cfg, 64).items()})
    assert back.lr == 3e-4 and back.arm == "no-seg"
