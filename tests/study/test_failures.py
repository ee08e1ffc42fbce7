"""A trial that diverges or raises does not stop the study: Tune and MLflow both record it."""

from __future__ import annotations

import dataclasses
import math

import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from study import tuner
from study.driver import run_study
from study.reconcile import close_open_trials
from tests.study.conftest import launch, open_study, tiny_study, tiny_trial

pytestmark = pytest.mark.slow

DIVERGING_LR, GOOD_LR = 1e30, 1e-3
# A trial that raises inside fit, after its run exists (a bad lr is now refused by TrialConfig
# before the trial starts): encoder weights that are not there.
MISSING_WEIGHTS = "/no/such/encoder.pth"


def test_diverging_and_raising_trials_are_recorded(ray_local, tiny_data, data_config, tmp_path):
    cfg = tiny_study(tmp_path, data_config, max_concurrent=2, max_failures=1)
    ctx = open_study(cfg)
    uri, exp = ctx.tracking_uri, ctx.experiment_id
    go = launch(cfg, tiny_data, ctx)
    base = tiny_trial(arm="unet")
    points = [dataclasses.replace(base, lr=lr).to_dict() for lr in (DIVERGING_LR, GOOD_LR)]
    outcome = tuner.grid(go, "failures", points)
    raising = tuner.grid(
        go, "raising", [dataclasses.replace(base, encoder_weights=MISSING_WEIGHTS).to_dict()]
    )
    close_open_trials(ctx, outcome, "search")
    close_open_trials(ctx, raising, "search")

    # Tune: one ERROR (after its retry), the others ended normally.
    assert not outcome.interrupted and not raising.interrupted
    assert len(outcome.results) == 2 and outcome.results.num_errors == 0
    (raised,) = raising.results
    assert raising.results.num_errors == 1 and "encoder weights file not found" in str(raised.error)
    by_lr = {r.config["lr"]: r for r in outcome.results}
    diverged = by_lr[DIVERGING_LR]
    assert diverged.error is None and diverged.metrics["diverged"] == 1.0
    # no score is NaN, as for an undefined AUC: Optuna is told the trial failed, ASHA skips it
    assert math.isnan(diverged.metrics["val/auc_mean"])
    assert by_lr[GOOD_LR].error is None and "best/val_auc_mean" in by_lr[GOOD_LR].metrics

    # MLflow: exactly one run per trial (the retried trial found its run by its trial_id tag).
    client = MlflowClient(uri)
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'")
    assert len(runs) == 3
    (failed,) = [r for r in runs if r.data.params["encoder_weights"] == MISSING_WEIGHTS]
    status = {float(r.data.params["lr"]): r for r in runs if r is not failed}
    div, ok = status[DIVERGING_LR], status[GOOD_LR]
    assert failed.data.tags["status"] == "failed" and failed.info.status == "FAILED"
    assert failed.data.tags["error"].startswith(
        "EncoderWeightsError: encoder weights file not found"
    )
    assert div.data.tags["status"] == "diverged" and div.info.status == "FAILED"
    assert "non-finite" in div.data.tags["error"]
    assert not [k for k in div.data.metrics if k.startswith(("val/", "test/"))]  # no placeholder 0
    assert ok.data.tags["status"] == "ok" and "error" not in ok.data.tags  # no empty tags
    assert "test/auc_mean" in ok.data.metrics


class _FailTheDriver(tune.Callback):
    """An error in the driver (not in a trial) once the first epoch is reported."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        raise RuntimeError("injected driver failure")


def test_a_study_that_raises_ends_its_parent_run_failed(
    ray_local, tiny_data, data_config, tmp_path
):
    cfg = tiny_study(tmp_path, data_config, arms=("no-seg",), trials_per_arm=1)
    with pytest.raises(Exception, match="injected driver failure"):
        run_study(cfg, callbacks=[_FailTheDriver()])
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    (parent,) = client.search_runs([exp], "tags.role = 'study'")
    assert parent.info.status == "FAILED"
    assert "injected driver failure" in parent.data.tags["error"]
    children = client.search_runs([exp], "tags.role = 'trial'")
    assert children and all(r.info.status != "RUNNING" for r in children)
