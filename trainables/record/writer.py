"""Writing the record: the study's parent run (driver) and each trial's run (trainable).

Exactly once, whatever kills the driver: an epoch's metrics are not logged again by a restarted
trial (``logged_epochs``), final values not twice (``log_final``), a finished trial is not run
again (``finished_trial``), and runs of trials Tune lost are closed as orphaned
(``mark_orphaned``). Filter values are quoted so that no name widens a search (``store.eq``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from trainables.record.schema import (
    ARTIFACT_DIRS,
    EPOCH_PREFIXES,
    FINAL_PREFIXES,
    ROLE_STUDY,
    ROLE_TRIAL,
    RUN_STATUS,
    STUDY_CONFIG,
    STUDY_DATA,
    TAG_ADOPTED_FROM,
    TAG_ARM,
    TAG_ERROR,
    TAG_ORPHANED_FROM,
    TAG_PARENT,
    TAG_PRESET,
    TAG_ROLE,
    TAG_STAGE,
    TAG_STATUS,
    TAG_STUDY_NAME,
    TAG_TRIAL_ID,
    TRAIN_LOSS,
    Status,
)
from trainables.record.store import (
    TrackingContext,
    eq,
    is_local_store,
    local_artifact_root,
    parent_clause,
    store,
)
from trainables.record.trial import SEED_INDEPENDENT_PARAMS, Trial
from trainables.record.values import MAX_TAG_CHARS
from trainables.record.values import finite_metrics as _finite_metrics
from trainables.record.values import now_ms as _now_ms
from trainables.record.values import params as _params
from trainables.record.values import tags as _tags


# -- the experiment and the parent run -----------------------------------------------------------
def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """Experiment id for ``name``, created if needed.

    A new experiment in a sqlite store keeps its artifacts in ``mlartifacts/<name>`` beside the
    database, so a store is self-contained; with an mlflow server the server decides.
    """
    s = store(tracking_uri)
    exp = s.call("get_experiment_by_name", name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            s.call("restore_experiment", exp.experiment_id)
        return exp.experiment_id
    location = None
    if is_local_store(tracking_uri):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = (local_artifact_root(tracking_uri) / safe).resolve().as_uri()
    try:
        return s.call("create_experiment", name, artifact_location=location)
    except MlflowException:
        exp = s.call("get_experiment_by_name", name)  # another process created it meanwhile
        if exp is None:
            raise
        return exp.experiment_id


def study_runs(
    tracking_uri: str,
    experiment_id: str,
    *,
    study_name: str | None = None,
    preset: str | None = None,
) -> list:
    """The study parent runs matching the filters, newest first."""
    parts = [eq(f"tags.{TAG_ROLE}", ROLE_STUDY, TAG_ROLE)]
    if study_name:
        parts.append(eq(f"tags.{TAG_STUDY_NAME}", study_name, TAG_STUDY_NAME))
    if preset:
        parts.append(eq(f"tags.{TAG_PRESET}", preset, TAG_PRESET))
    return store(tracking_uri).search(experiment_id, " and ".join(parts), oldest_first=False)


def create_study_run(
    tracking_uri: str, experiment_id: str, *, study_name: str, tags: Mapping[str, str]
) -> TrackingContext:
    """Create a study's parent run (``tags``: preset, kind ...); its params come next."""
    run = store(tracking_uri).call(
        "create_run",
        experiment_id,
        run_name=study_name,
        tags={TAG_ROLE: ROLE_STUDY, TAG_STUDY_NAME: study_name, **tags},
    )
    return TrackingContext(tracking_uri, experiment_id, run.info.run_id)


def delete_run(ctx: TrackingContext, run_id: str) -> None:
    """Delete a run (e.g. the parent of a study that lost a name collision)."""
    store(ctx.tracking_uri).call("delete_run", run_id)


def reopen_study_run(ctx: TrackingContext) -> None:
    store(ctx.tracking_uri).call("update_run", ctx.parent_run_id, status="RUNNING")


def log_study_settings(
    ctx: TrackingContext, params: Mapping[str, Any], config: Mapping[str, Any]
) -> None:
    """The study settings as params of the parent run and the resolved configs as
    ``study/config.json``."""
    s = store(ctx.tracking_uri)
    s.call("log_batch", ctx.parent_run_id, params=_params(params))
    s.call("log_dict", ctx.parent_run_id, json.loads(json.dumps(config, default=str)), STUDY_CONFIG)


def set_run_tags(ctx: TrackingContext, tags: Mapping[str, Any], run_id: str | None = None) -> None:
    """Set tags on a run (default: the study's parent run); empty values are left out (an empty
    tag says nothing), use ``delete_tags`` to clear one."""
    tags = {k: v for k, v in tags.items() if str(v) != ""}
    if tags:
        store(ctx.tracking_uri).call("log_batch", run_id or ctx.parent_run_id, tags=_tags(tags))


def delete_tags(ctx: TrackingContext, run_id: str, keys: Iterable[str]) -> None:
    """Remove tags a run carries (e.g. a stale ``error`` when a trial runs again)."""
    s = store(ctx.tracking_uri)
    held = s.run(run_id).data.tags
    for key in keys:
        if key in held:
            s.call("delete_tag", run_id, key)


def end_study_run(ctx: TrackingContext, status: str = "FINISHED", error: str | None = None) -> None:
    """Close the parent run ("FINISHED", "FAILED" or "KILLED"); ``error`` goes to its tag."""
    s = store(ctx.tracking_uri)
    if error:
        s.call("set_tag", ctx.parent_run_id, TAG_ERROR, error[:MAX_TAG_CHARS])
    s.call("set_terminated", ctx.parent_run_id, status)


def set_experiment_tags(tracking_uri: str, experiment_id: str, tags: Mapping[str, str]) -> None:
    """Set experiment tags (the UI's experiment kind, saved runs-table views)."""
    s = store(tracking_uri)
    for key, value in tags.items():
        s.call("set_experiment_tag", experiment_id, key, str(value))


def log_study_data(
    ctx: TrackingContext, summary: Mapping[str, Any], params: Mapping[str, Any]
) -> None:
    """The data summary (``study/data.json``) and the ``data/*`` params of the parent run (a
    resumed study logs only those it lacks; the driver refuses data that changed)."""
    s = store(ctx.tracking_uri)
    before = s.run(ctx.parent_run_id).data.params
    new = {k: v for k, v in params.items() if k not in before}
    s.call("log_batch", ctx.parent_run_id, params=_params(new))
    s.call("log_dict", ctx.parent_run_id, json.loads(json.dumps(summary)), STUDY_DATA)


def log_study_results(ctx: TrackingContext, metrics: Mapping[str, float], step: int) -> None:
    """Log the parent's comparison metrics; one whose latest value is already the same is not
    logged again (re-running a study's end on ``--resume`` adds nothing), a changed one is logged
    at ``step`` (a count that grows with the study, e.g. its ended trials)."""
    s = store(ctx.tracking_uri)
    current = s.run(ctx.parent_run_id).data.metrics
    batch = [
        Metric(k, float(v), _now_ms(), step)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(v) and current.get(k) != float(v)
    ]
    if batch:
        s.call("log_batch", ctx.parent_run_id, metrics=batch)


# -- trial runs -----------------------------------------------------------------------------------
def find_trial_run(ctx: TrackingContext, trial_id: str) -> str | None:
    """Run id of the child run of this study tagged with ``trial_id``, or None."""
    filt = (
        eq(f"tags.{TAG_TRIAL_ID}", trial_id, TAG_TRIAL_ID)
        + " and "
        + parent_clause(ctx.parent_run_id)
    )
    runs = store(ctx.tracking_uri).search(ctx.experiment_id, filt)
    return runs[0].info.run_id if runs else None


def trial_run(
    ctx: TrackingContext,
    trial_id: str,
    *,
    run_id: str | None,
    tags: Mapping[str, Any],
    params: Mapping[str, Any],
) -> str:
    """Get or create the one child run of a Tune trial and mark it running.

    Args:
        ctx: the study's tracking context.
        trial_id: Tune's trial id (stable across restarts and study resumes).
        run_id: the run id saved in the trial's checkpoint, if it restored from one.
        tags: arm, model_set, generator, stage (added to a new run).
        params: the resolved TrialConfig (logged once, when the run is created).

    Returns:
        The child run id; a restarted trial gets the run it had before (by checkpoint, else by
        its ``trial_id`` tag, for a restart before the first checkpoint).
    """
    s = store(ctx.tracking_uri)
    if run_id is not None and not s.run_exists(run_id):
        run_id = None  # a checkpoint from a study logged elsewhere (another tracking URI)
    existing = run_id or find_trial_run(ctx, trial_id)
    if existing is not None:
        delete_tags(ctx, existing, (TAG_ORPHANED_FROM,))  # its trial is back
        set_status(ctx, existing, Status.RUNNING)
        return existing
    run = s.call(
        "create_run",
        ctx.experiment_id,
        run_name=f"{tags.get(TAG_ARM, 'trial')}-{trial_id}",
        tags={TAG_PARENT: ctx.parent_run_id, TAG_ROLE: ROLE_TRIAL, TAG_TRIAL_ID: trial_id,
              TAG_STATUS: Status.RUNNING.value, **{k: str(v) for k, v in tags.items()}},
    )  # fmt: skip
    s.call("log_batch", run.info.run_id, params=_params(params))
    return run.info.run_id


def set_status(
    ctx: TrackingContext, run_id: str, status: Status | str, error: str | None = None
) -> None:
    """Set the ``status`` tag and the run's lifecycle to match; ``error`` (why it failed) goes to
    the ``error`` tag, and a run set running or ok again loses a stale one."""
    if status not in tuple(Status):
        raise ValueError(f"unknown trial status {status!r}; valid: {', '.join(Status)}")
    status = Status(status)
    s = store(ctx.tracking_uri)
    tags = {TAG_STATUS: status.value}
    if error:
        tags[TAG_ERROR] = error
    s.call("log_batch", run_id, tags=_tags(tags))
    if not error and status in (Status.RUNNING, Status.OK):
        delete_tags(ctx, run_id, (TAG_ERROR,))
    if status == Status.RUNNING:
        s.call("update_run", run_id, status="RUNNING")
    else:
        s.call("set_terminated", run_id, RUN_STATUS[status])


def _placement_free(values: Mapping[str, Any]) -> dict[str, str]:
    return {
        p.key: p.value for p in _params(values) if p.key not in SEED_INDEPENDENT_PARAMS - {"seed"}
    }


def _finished(run: Any) -> bool:
    """The run holds a whole record: status ok, or orphaned when it was ok."""
    tags = run.data.tags
    return tags.get(TAG_STATUS) == Status.OK or (
        tags.get(TAG_STATUS) == Status.ORPHANED and tags.get(TAG_ORPHANED_FROM) == Status.OK
    )


def _adopt(ctx: TrackingContext, run_id: str, tags: Mapping[str, str]) -> None:
    set_run_tags(ctx, tags, run_id)
    delete_tags(ctx, run_id, (TAG_ORPHANED_FROM, TAG_ERROR))
    set_status(ctx, run_id, Status.OK)


def finished_trial(
    ctx: TrackingContext,
    trial_id: str,
    *,
    run_id: str | None,
    stage: str,
    arm: str,
    params: Mapping[str, Any],
) -> tuple[str, dict[str, float]] | None:
    """(run id, final metrics) when this trial's record is already complete, else None.

    Tune may start a trial again after its MLflow record was finished: the driver died after the
    trial logged ``status=ok`` but before Tune saved that. Such a trial must not be trained,
    evaluated or logged again. A trial without a run of its own adopts an orphaned run
    (``mark_orphaned``) of the same stage, arm and configuration that had finished: the
    configuration Tune lost and its searcher suggested again, which is thereby not run twice.

    Args:
        ctx: the study's tracking context.
        trial_id: Tune's trial id.
        run_id: the run id from the trial's checkpoint, if any.
        stage, arm: the trial's stage and arm (an orphan must match both).
        params: the trial's resolved config (an orphan must match it, placement aside).
    """
    s = store(ctx.tracking_uri)
    if run_id is not None and not s.run_exists(run_id):
        run_id = None
    own = run_id or find_trial_run(ctx, trial_id)
    if own is not None:
        run = s.run(own)
        if not _finished(run):
            return None
        if run.data.tags.get(TAG_STATUS) != Status.OK:  # orphaned, and its trial came back
            _adopt(ctx, own, {})
        return own, dict(run.data.metrics)
    filt = " and ".join([
        parent_clause(ctx.parent_run_id),
        eq(f"tags.{TAG_STATUS}", Status.ORPHANED, TAG_STATUS),
        eq(f"tags.{TAG_ORPHANED_FROM}", Status.OK, TAG_ORPHANED_FROM),
        eq(f"tags.{TAG_STAGE}", stage, TAG_STAGE),
        eq(f"tags.{TAG_ARM}", arm, TAG_ARM),
    ])  # fmt: skip
    wanted = _placement_free(params)
    for run in s.search(ctx.experiment_id, filt):
        if _placement_free(run.data.params) != wanted:
            continue
        adopted = {TAG_TRIAL_ID: trial_id, TAG_ADOPTED_FROM: run.data.tags.get(TAG_TRIAL_ID, "")}
        _adopt(ctx, run.info.run_id, adopted)
        return run.info.run_id, dict(run.data.metrics)
    return None


def mark_orphaned(ctx: TrackingContext, trial: Trial, reason: str) -> None:
    """Close a run whose Tune trial the study lost: status orphaned (MLflow KILLED), the status
    it had in ``orphaned_from``, ``reason`` in ``error``. Its metrics and artifacts stay."""
    set_run_tags(ctx, {TAG_ORPHANED_FROM: trial.status}, trial.run_id)
    set_status(ctx, trial.run_id, Status.ORPHANED, reason)


def log_epoch(ctx: TrackingContext, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    """Log the finite ``train/*`` and ``val/*`` values of one epoch (step = epoch); a missing or
    non-finite value (an undefined AUC) is left out: the record's one convention for no score."""
    batch = _finite_metrics(metrics, EPOCH_PREFIXES, step)
    if batch:
        store(ctx.tracking_uri).call("log_batch", run_id, metrics=batch)


def logged_epochs(ctx: TrackingContext, run_id: str, key: str = TRAIN_LOSS) -> set[int]:
    """Epochs (steps) of ``key`` the run already holds: what a restarted trial must not log again.

    ``train/loss`` is in every logged epoch, and an epoch's metrics go in one batch, so its steps
    are the logged epochs.
    """
    return {m.step for m in store(ctx.tracking_uri).call("get_metric_history", run_id, key)}


def log_final(
    ctx: TrackingContext, run_id: str, metrics: Mapping[str, Any], out_dir: str | Path | None
) -> None:
    """Log the finite ``best/*`` and ``test/*`` values and the artifact folders of a trial.

    Exactly once: a value the run already holds is not logged again (a trial restarted after a
    partial final record); artifacts are files at fixed paths, so uploading again replaces them.
    """
    s = store(ctx.tracking_uri)
    held = set(s.run(run_id).data.metrics)
    batch = [m for m in _finite_metrics(metrics, FINAL_PREFIXES, 0) if m.key not in held]
    if batch:
        s.call("log_batch", run_id, metrics=batch)
    for name in ARTIFACT_DIRS if out_dir is not None else ():
        folder = Path(out_dir) / name
        if folder.is_dir():
            s.call("log_artifacts", run_id, str(folder), artifact_path=name)


def log_files(ctx: TrackingContext, files: Iterable[Path], folder: str) -> None:
    """Log files as artifacts of the parent run under ``folder`` (e.g. the analysis outputs)."""
    s = store(ctx.tracking_uri)
    for path in files:
        s.call("log_artifact", ctx.parent_run_id, str(path), folder)
