"""Make the MLflow record agree with what Tune did: every Tune trial has exactly one run with a
final status, runs Tune does not know are closed and left out, and a study that fails says so."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainables.model_sets import get_arm
from trainables.record import Status, trial_tags
from trainables.record import writer as record
from trainables.record.store import TRACKING_ERRORS, TrackingContext, store
from trainables.trainable import TAG_PREFIX, extra_tags

_LOST = (
    "no Tune trial: the driver stopped before Tune saved this trial, so the resumed study runs "
    "its configuration as a new trial (status before: {status})"
)


def _arm_tags(config: dict[str, Any], stage: str) -> dict[str, str]:
    name = str(config.get("arm", ""))
    extra = extra_tags(config)
    try:
        arm = get_arm(name)
    except KeyError:  # the trial may have failed precisely because of its arm
        return {**trial_tags(name, stage), **extra}
    return {**trial_tags(arm.name, stage, arm.model_set, arm.generator), **extra}


def close_open_trials(ctx: TrackingContext, outcome: Any, stage: str) -> None:
    """Give every ended trial of an experiment a final status in MLflow.

    Runs still "running" after their experiment returned were stopped by ASHA ("stopped") or
    errored in a way the trial could not record itself (e.g. a node lost after the last retry:
    "failed"). A trial that errored before it opened its run gets a failed run, so every trial has
    exactly one.
    """
    trials = {t.trial_id: t for t in store(ctx.tracking_uri).trials(ctx, artifacts=False)}
    for result in outcome.results:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        error = f"{type(result.error).__name__}: {result.error}" if result.error else None
        trial = trials.get(trial_id)
        if trial is None:
            if error is None:
                continue
            params = {k: v for k, v in result.config.items() if not k.startswith(TAG_PREFIX)}
            tags = _arm_tags(result.config, stage)
            run_id = record.trial_run(ctx, trial_id, run_id=None, tags=tags, params=params)
            record.set_status(ctx, run_id, Status.FAILED, error)
        elif trial.status == Status.RUNNING:
            record.set_status(ctx, trial.run_id, Status.FAILED if error else Status.STOPPED, error)


def saved_trial_ids(experiment_path: str) -> set[str]:
    """Ids of the trials in a Tune experiment's saved state (empty when there is none yet):
    exactly the trials ``Tuner.restore`` will bring back."""
    from ray import tune

    from study.storage_guard import verify_experiment

    if not tune.Tuner.can_restore(experiment_path):
        return set()
    verify_experiment(experiment_path)  # ExperimentAnalysis unpickles the experiment state
    return {t.trial_id for t in tune.ExperimentAnalysis(experiment_path).trials}


def orphan_lost_trials(
    ctx: TrackingContext, experiment_path: str, stage: str, arms: Sequence[str]
) -> list[str]:
    """Before a resumed experiment runs: close the runs of its stage and arms that no saved trial
    owns.

    Tune saves its experiment state every few seconds, so a driver killed in between loses the
    trials started since; their runs would stay RUNNING for ever and count as extra trials. They
    are marked orphaned (KILLED, with the reason; data kept, left out of the tables). A finished
    one may then be adopted by the trial that the restored searcher suggests with the same
    configuration (``writer.finished_trial``), so that configuration does not run twice.

    Returns:
        The run ids marked orphaned.
    """
    known = saved_trial_ids(experiment_path)
    lost = [
        t
        for t in store(ctx.tracking_uri).trials(ctx, stage=stage, artifacts=False)
        if t.arm in arms and t.trial_id not in known
    ]
    for trial in lost:
        record.mark_orphaned(ctx, trial, _LOST.format(status=trial.status))
    if lost:
        print(
            f"[study] {len(lost)} MLflow run(s) of {', '.join(sorted({t.arm for t in lost}))} "
            f"({stage}) had no trial in Tune's saved state: marked orphaned",
            flush=True,
        )
    return [t.run_id for t in lost]


def close_after_failure(ctx: TrackingContext, exc: BaseException) -> None:
    """The study raised: its parent run ends FAILED with the error, and trial runs still open
    are marked failed (a later ``--resume`` reopens those that Tune restores)."""
    error = f"{type(exc).__name__}: {exc}"
    try:
        for trial in store(ctx.tracking_uri).trials(ctx, artifacts=False):
            if trial.status == Status.RUNNING:
                record.set_status(ctx, trial.run_id, Status.FAILED, f"the study stopped: {error}")
        record.end_study_run(ctx, "FAILED", error=error)
    except TRACKING_ERRORS as err:  # the caller re-raises the original error
        print(f"[study] could not close the MLflow runs after the failure: {err}", flush=True)
