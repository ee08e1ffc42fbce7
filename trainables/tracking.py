"""The one MLflow integration path of the study (the only trainables module importing mlflow).

What gets written is the record laid out in ``trainables/record.py`` and the README ("Reading the
results"; ``analysis/`` reads it back): one experiment per study, one parent run per study (tags ``role=study``, ``study_name``, ``preset``),
one child run per Tune trial (tags ``role=trial``, ``arm``, ``model_set``, ``generator``, ``stage``,
``trial_id``, ``status``, ``error``), per-epoch ``train/*`` and ``val/*`` metrics with step = epoch,
final ``best/*`` and ``test/*`` metrics and the artifact folders written by ``trainables.fit``.

Exactly once, whatever kills the driver: an epoch's metrics are not logged again by a restarted
trial (``logged_epochs``), final values not twice (``log_final``), a finished trial is not run again
(``finished_trial``), and runs of trials Tune lost are closed as ``orphaned`` (``mark_orphaned``).
Filter values are quoted so that no name widens a search (``_eq``); a new sqlite store's schema is
created by one process at a time (``_create_schema_once``).

Everything goes through an explicit ``MlflowClient`` with an explicit tracking URI (never the global
``mlflow.start_run`` state), because trials run in Ray worker processes that chdir into their trial
folder and may restart on another node.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.record import (
    ARTIFACT_DIRS,
    EPOCH_PREFIXES,
    FINAL_PREFIXES,
    ROLE_STUDY,
    ROLE_TRIAL,
    STATUS_OK,
    STATUS_ORPHANED,
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
    TRIAL_STATUSES,
)

# MLflow's own run lifecycle for each of our statuses; "running" keeps the run open.
_RUN_STATUS = {
    "running": "RUNNING",
    "ok": "FINISHED",
    "stopped": "FINISHED",  # ASHA's early stop is a normal end; the UI draws KILLED as a failure
    "diverged": "FAILED",
    "failed": "FAILED",
    "orphaned": "KILLED",
}
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
# Trial params that say where a trial ran, not what it computes (a restored trial may move).
_PLACEMENT_PARAMS = ("device", "num_threads")
_READY_STORES: set[str] = set()  # sqlite stores whose schema this process has seen created
_T = TypeVar("_T")
TRACKING_ERRORS: tuple[type[Exception], ...] = (MlflowException, OSError)  # a store that fails


@dataclass(frozen=True)
class TrackingContext:
    """Where a study logs: small and picklable, so it travels to every trial through Ray."""

    tracking_uri: str  # absolute sqlite URI or an mlflow server URL
    experiment_id: str
    parent_run_id: str  # the study's parent run; child runs point at it


@dataclass(frozen=True)
class TrialRecord:
    """One child run as the driver sees it (latest metric values, params and our tags)."""

    run_id: str
    trial_id: str
    arm: str
    stage: str
    status: str
    error: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def resolve_tracking_uri(uri: str | None, project_dir: str | Path) -> str:
    """The tracking URI trials can use from any working directory.

    Args:
        uri: None for ``$MLFLOW_TRACKING_URI`` or else the project default, an ``http(s)://``
            server, a database URI, or a ``sqlite:///`` URI (a relative sqlite path is made absolute against the current
            directory, because trials chdir into their own folders).
        project_dir: project root; the default store is ``<project_dir>/mlflow.db``.

    Returns:
        The URI to hand to every ``MlflowClient``.

    Raises:
        ValueError: for a file store (plain path or ``file:`` URI), which MLflow >= 3.13 refuses.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None  # as MLflow and analysis/ do
    if uri is None:
        return f"sqlite:///{(Path(project_dir) / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if path in ("", ":memory:"):
            raise ValueError(f"tracking URI {uri!r}: an in-memory store is lost when trials end")
        return f"sqlite:///{Path(path).resolve()}" if not path.startswith("/") else uri
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is a file store, which MLflow >= 3.13 refuses; use "
            f"sqlite:////abs/path/mlflow.db locally or http://<head>:5000 on a cluster"
        )
    return uri


def is_local_store(tracking_uri: str) -> bool:
    """True for a sqlite store (artifacts then go to a local folder we choose)."""
    return tracking_uri.startswith("sqlite:")


def _retry(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    # Several trial processes write to one sqlite file; a writer can briefly hold the lock.
    for attempt in range(6):
        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if "locked" not in str(exc).lower() or attempt == 5:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _client(tracking_uri: str) -> MlflowClient:
    if is_local_store(tracking_uri) and tracking_uri not in _READY_STORES:
        _create_schema_once(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _create_schema_once(tracking_uri: str) -> None:
    """Open a sqlite store under a file lock beside it, so that its schema is created once.

    MLflow creates (and migrates) the tables of a new sqlite file when a process first opens it,
    without a lock: two studies starting on a new store at once collide (``table ... already
    exists``, ``duplicate column``, ``CircularDependencyError``) and one of them dies. The store
    object is cached per process, so later clients skip this.
    """
    db = Path(tracking_uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    _READY_STORES.add(tracking_uri)


def local_artifact_root(tracking_uri: str) -> Path:
    """``mlartifacts`` beside a sqlite store: ``<project>/mlartifacts`` for the default store."""
    return Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """Experiment id for ``name``, created if needed.

    A new experiment in a sqlite store keeps its artifacts in ``mlartifacts/<name>`` beside the
    database (for the default store: ``<project>/mlartifacts``), so a store is self-contained;
    with an mlflow server the server decides.
    """
    if is_local_store(tracking_uri):
        local_artifact_root(tracking_uri).parent.mkdir(parents=True, exist_ok=True)
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if is_local_store(tracking_uri):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        location = (local_artifact_root(tracking_uri) / safe).resolve().as_uri()
    try:
        return _retry(client.create_experiment, name, artifact_location=location)
    except MlflowException:
        # Another process created it between our lookup and our create.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _params(values: Mapping[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in values.items()]


def _tags(values: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)) for k, v in values.items()]


def _eq(key: str, value: str, what: str) -> str:
    """The filter clause ``<key> = <value>``, ``value`` quoted so that it stays one literal.

    MLflow's filter grammar has no escape character: a value is a literal between single or
    between double quotes. Values holding one kind are quoted with the other.

    Raises:
        ValueError: ``value`` holds both quote kinds (the message names ``what``).
    """
    value = str(value)
    if "'" not in value:
        return f"{key} = '{value}'"
    if '"' not in value:
        return f'{key} = "{value}"'
    raise ValueError(
        f"{what} {value!r} holds both ' and \": MLflow filters cannot quote it; "
        f"use a name without one of the quote kinds"
    )


def _search(
    client: MlflowClient, experiment_id: str, filter_string: str, order_by: list[str] | None = None
) -> list:
    runs, token = [], None
    while True:
        page = _retry(
            client.search_runs,
            [experiment_id],
            filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=order_by,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_study_run(
    tracking_uri: str,
    experiment_id: str,
    *,
    study_name: str | None = None,
    preset: str | None = None,
) -> tuple[str, str] | None:
    """(run id, study_name) of the newest study parent run matching the filters, or None."""
    parts = [_eq(f"tags.{TAG_ROLE}", ROLE_STUDY, TAG_ROLE)]
    if study_name:
        parts.append(_eq(f"tags.{TAG_STUDY_NAME}", study_name, TAG_STUDY_NAME))
    if preset:
        parts.append(_eq(f"tags.{TAG_PRESET}", preset, TAG_PRESET))
    runs = _search(
        _client(tracking_uri),
        experiment_id,
        " and ".join(parts),
        order_by=["attributes.start_time DESC"],
    )
    return (runs[0].info.run_id, runs[0].data.tags[TAG_STUDY_NAME]) if runs else None


def start_study_run(
    tracking_uri: str,
    experiment_id: str,
    *,
    study_name: str,
    preset: str,
    params: Mapping[str, Any],
    config: Mapping[str, Any],
    resume: bool = False,
) -> TrackingContext:
    """Create the study's parent run (or reopen it when resuming the same study).

    Args:
        tracking_uri: from ``resolve_tracking_uri``.
        experiment_id: from ``get_or_create_experiment``.
        study_name: the study's name (also its Tune folder).
        preset: preset the study settings started from.
        params: flat study settings logged as params (values are stringified).
        config: the fully resolved configs, logged as ``study/config.json``.
        resume: reopen the newest parent run with this study_name instead of creating one,
            so a resumed study keeps one parent and its trials find their runs again.

    Returns:
        The context every trial logs through.
    """
    client = _client(tracking_uri)
    if resume:
        found = find_study_run(tracking_uri, experiment_id, study_name=study_name)
        if found is not None:
            _retry(client.update_run, found[0], status="RUNNING")
            if not _retry(client.get_run, found[0]).data.params:
                # The first invocation died between creating the run and logging its settings.
                _log_study_settings(client, found[0], params, config)
            return TrackingContext(tracking_uri, experiment_id, found[0])
    run = _retry(
        client.create_run,
        experiment_id,
        run_name=study_name,
        tags={TAG_ROLE: ROLE_STUDY, TAG_STUDY_NAME: study_name, TAG_PRESET: preset},
    )
    _log_study_settings(client, run.info.run_id, params, config)
    return TrackingContext(tracking_uri, experiment_id, run.info.run_id)


def set_run_tags(ctx: TrackingContext, tags: Mapping[str, Any], run_id: str | None = None) -> None:
    """Set tags on a run (default: the study's parent run)."""
    _retry(_client(ctx.tracking_uri).log_batch, run_id or ctx.parent_run_id, tags=_tags(tags))


def _log_study_settings(
    client: MlflowClient, run_id: str, params: Mapping[str, Any], config: Mapping[str, Any]
) -> None:
    _retry(client.log_batch, run_id, params=_params(params))
    _retry(client.log_dict, run_id, json.loads(json.dumps(config, default=str)), STUDY_CONFIG)


def end_study_run(ctx: TrackingContext, status: str = "FINISHED", error: str | None = None) -> None:
    """Close the parent run ("FINISHED", "FAILED" or "KILLED" for an interrupted study); ``error``
    (why it failed) goes to its ``error`` tag."""
    client = _client(ctx.tracking_uri)
    if error is not None:
        _retry(client.set_tag, ctx.parent_run_id, TAG_ERROR, error[:5000])
    _retry(client.set_terminated, ctx.parent_run_id, status)


def find_trial_run(ctx: TrackingContext, trial_id: str) -> str | None:
    """Run id of the child run of this study tagged with ``trial_id``, or None."""
    runs = _search(
        _client(ctx.tracking_uri),
        ctx.experiment_id,
        _eq(f"tags.{TAG_TRIAL_ID}", trial_id, TAG_TRIAL_ID) + " and " + _parent_clause(ctx),
    )
    return runs[0].info.run_id if runs else None


def _parent_clause(ctx: TrackingContext) -> str:
    return _eq(f"tags.`{TAG_PARENT}`", ctx.parent_run_id, "parent run id")


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        _retry(client.get_run, run_id)
    except MlflowException:
        return False
    return True


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
    client = _client(ctx.tracking_uri)
    if run_id is not None and not _run_exists(client, run_id):
        run_id = None  # a checkpoint from a study logged elsewhere (another tracking URI)
    existing = run_id or find_trial_run(ctx, trial_id)
    if existing is not None:
        if _retry(client.get_run, existing).data.tags.get(TAG_ORPHANED_FROM):
            _retry(client.set_tag, existing, TAG_ORPHANED_FROM, "")  # its trial is back
        set_status(ctx, existing, "running")
        return existing
    run = _retry(
        client.create_run,
        ctx.experiment_id,
        run_name=f"{tags.get('arm', 'trial')}-{trial_id}",
        tags={
            TAG_PARENT: ctx.parent_run_id,
            TAG_ROLE: ROLE_TRIAL,
            TAG_TRIAL_ID: trial_id,
            TAG_STATUS: "running",
            **tags,
        },
    )
    _retry(client.log_batch, run.info.run_id, params=_params(params))
    return run.info.run_id


def _param_values(values: Mapping[str, Any]) -> dict[str, str]:
    return {p.key: p.value for p in _params(values) if p.key not in _PLACEMENT_PARAMS}


_FINISHED_TAGS = {TAG_STATUS: STATUS_OK, TAG_ERROR: "", TAG_ORPHANED_FROM: ""}


def _finished(run: Any) -> bool:
    """The run holds a whole record: status ok, or orphaned when it was ok."""
    tags = run.data.tags
    return tags.get(TAG_STATUS) == STATUS_OK or (
        tags.get(TAG_STATUS) == STATUS_ORPHANED and tags.get(TAG_ORPHANED_FROM) == STATUS_OK
    )


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
    trial logged ``status=ok`` but before Tune saved that, so Tune restores the trial from an
    older checkpoint (or from scratch). Such a trial must not be trained, evaluated or logged
    again. A trial without a run of its own adopts an orphaned run (``mark_orphaned``) of the
    same stage, arm and configuration that had finished: the configuration Tune lost and its
    searcher suggested again, which is thereby not run twice. (A grid trial that Tune lost comes
    back with its old trial id and so finds its own orphaned run: it is reclaimed the same way.)

    Args:
        ctx: the study's tracking context.
        trial_id: Tune's trial id.
        run_id: the run id from the trial's checkpoint, if any.
        stage, arm: the trial's stage and arm (an orphan must match both).
        params: the trial's resolved TrialConfig (an orphan must match it, placement aside).
    """
    client = _client(ctx.tracking_uri)
    if run_id is not None and not _run_exists(client, run_id):
        run_id = None
    own = run_id or find_trial_run(ctx, trial_id)
    if own is not None:
        run = _retry(client.get_run, own)
        if _finished(run):
            if run.data.tags.get(TAG_STATUS) != STATUS_OK:  # orphaned, and its trial came back
                _retry(client.log_batch, own, tags=_tags(_FINISHED_TAGS))
                _retry(client.set_terminated, own, _RUN_STATUS[STATUS_OK])
            return own, dict(run.data.metrics)
        return None
    filt = " and ".join(
        [
            _parent_clause(ctx),
            _eq(f"tags.{TAG_STATUS}", STATUS_ORPHANED, TAG_STATUS),
            _eq(f"tags.{TAG_ORPHANED_FROM}", STATUS_OK, TAG_ORPHANED_FROM),
            _eq(f"tags.{TAG_STAGE}", stage, TAG_STAGE),
            _eq(f"tags.{TAG_ARM}", arm, TAG_ARM),
        ]
    )
    wanted = _param_values(params)
    for run in _search(client, ctx.experiment_id, filt, order_by=["attributes.start_time ASC"]):
        if _param_values(run.data.params) != wanted:
            continue
        tags = {
            **_FINISHED_TAGS,
            TAG_TRIAL_ID: trial_id,
            TAG_ADOPTED_FROM: run.data.tags.get(TAG_TRIAL_ID, ""),
        }
        _retry(client.log_batch, run.info.run_id, tags=_tags(tags))
        _retry(client.set_terminated, run.info.run_id, _RUN_STATUS[STATUS_OK])
        return run.info.run_id, dict(run.data.metrics)
    return None


def mark_orphaned(ctx: TrackingContext, record: TrialRecord, reason: str) -> None:
    """Close a run whose Tune trial the study lost: status ``orphaned`` (MLflow KILLED), the
    status it had in ``orphaned_from``, ``reason`` in ``error``. Its metrics and artifacts stay."""
    tags = {TAG_STATUS: STATUS_ORPHANED, TAG_ORPHANED_FROM: record.status, TAG_ERROR: reason}
    client = _client(ctx.tracking_uri)
    _retry(client.log_batch, record.run_id, tags=_tags(tags))
    _retry(client.set_terminated, record.run_id, _RUN_STATUS[STATUS_ORPHANED])


def _finite_metrics(
    metrics: Mapping[str, Any], prefixes: Iterable[str], step: int, now_ms: int
) -> list[Metric]:
    out = []
    for key, value in metrics.items():
        if not key.startswith(tuple(prefixes)) or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            out.append(Metric(key, float(value), now_ms, step))
    return out


def log_epoch(ctx: TrackingContext, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    """Log the finite ``train/*`` and ``val/*`` values of one epoch report (step = epoch)."""
    batch = _finite_metrics(metrics, EPOCH_PREFIXES, step, int(time.time() * 1000))
    if batch:
        _retry(_client(ctx.tracking_uri).log_batch, run_id, metrics=batch)


def logged_epochs(ctx: TrackingContext, run_id: str, key: str = TRAIN_LOSS) -> set[int]:
    """Epochs (steps) of ``key`` the run already holds: what a restarted trial must not log again.

    ``train/loss`` is in every logged epoch (``val/auc_mean`` is missing where it is undefined),
    and an epoch's metrics go in one batch, so its steps are the logged epochs.
    """
    history = _retry(_client(ctx.tracking_uri).get_metric_history, run_id, key)
    return {m.step for m in history}


def log_final(
    ctx: TrackingContext, run_id: str, metrics: Mapping[str, Any], out_dir: str | Path | None
) -> None:
    """Log the finite ``best/*`` and ``test/*`` values and the artifact folders of fit's out_dir.

    Exactly once: a value the run already holds is not logged again (a trial restarted after a
    partial final record); artifacts are files at fixed paths, so uploading again replaces them.
    """
    client = _client(ctx.tracking_uri)
    held = set(_retry(client.get_run, run_id).data.metrics)
    batch = [
        m
        for m in _finite_metrics(metrics, FINAL_PREFIXES, 0, int(time.time() * 1000))
        if m.key not in held
    ]
    if batch:
        _retry(client.log_batch, run_id, metrics=batch)
    if out_dir is None:
        return
    for name in ARTIFACT_DIRS:
        folder = Path(out_dir) / name
        if folder.is_dir():
            _retry(client.log_artifacts, run_id, str(folder), artifact_path=name)


def set_status(ctx: TrackingContext, run_id: str, status: str, error: str | None = None) -> None:
    """Set the ``status`` tag (one of TRIAL_STATUSES) and the run's lifecycle to match.

    A run that is set running again (restarted trial) gets its ``error`` tag cleared.
    """
    if status not in TRIAL_STATUSES:
        raise ValueError(f"unknown trial status {status!r}; valid: {', '.join(TRIAL_STATUSES)}")
    client = _client(ctx.tracking_uri)
    tags = {TAG_STATUS: status, TAG_ERROR: (error or "")[:5000]}
    _retry(client.log_batch, run_id, tags=_tags(tags))
    if status == "running":
        _retry(client.update_run, run_id, status="RUNNING")
    else:
        _retry(client.set_terminated, run_id, _RUN_STATUS[status])


def trial_records(
    ctx: TrackingContext, *, stage: str | None = None, include_orphaned: bool = False
) -> list[TrialRecord]:
    """The child runs of the study (optionally of one stage), oldest first; orphaned runs (no
    Tune trial, see ``mark_orphaned``) only with ``include_orphaned``."""
    filt = _parent_clause(ctx) + " and " + _eq(f"tags.{TAG_ROLE}", ROLE_TRIAL, TAG_ROLE)
    if stage:
        filt += " and " + _eq(f"tags.{TAG_STAGE}", stage, TAG_STAGE)
    runs = _search(
        _client(ctx.tracking_uri), ctx.experiment_id, filt, order_by=["attributes.start_time ASC"]
    )
    return [
        TrialRecord(
            run_id=r.info.run_id,
            trial_id=r.data.tags.get(TAG_TRIAL_ID, ""),
            arm=r.data.tags.get(TAG_ARM, ""),
            stage=r.data.tags.get(TAG_STAGE, ""),
            status=r.data.tags.get(TAG_STATUS, ""),
            error=r.data.tags.get(TAG_ERROR, ""),
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
        )
        for r in runs
        if include_orphaned or r.data.tags.get(TAG_STATUS) != STATUS_ORPHANED
    ]


def download_artifact(tracking_uri: str, run_id: str, path: str, dst: str | Path) -> Path:
    """Download one artifact file of a run (e.g. ``model/model.pt``) into the folder ``dst``.

    Raises:
        FileNotFoundError: no such run in the store, or the run has no such artifact.
    """
    client = _client(tracking_uri)
    try:
        _retry(client.get_run, run_id)
    except MlflowException as exc:
        raise FileNotFoundError(f"no MLflow run {run_id} at {tracking_uri}") from exc
    folder = str(Path(path).parent)
    listed = {f.path for f in _retry(client.list_artifacts, run_id, folder)}
    if path not in listed:
        raise FileNotFoundError(f"MLflow run {run_id} has no artifact {path}")
    return Path(_retry(client.download_artifacts, run_id, path, str(dst)))


# -- what the UI shows: descriptions, provenance, the comparison of arms -----------------------
def set_experiment_tags(tracking_uri: str, experiment_id: str, tags: Mapping[str, str]) -> None:
    """Set experiment tags (the UI's experiment kind, saved runs-table views)."""
    client = _client(tracking_uri)
    for key, value in tags.items():
        _retry(client.set_experiment_tag, experiment_id, key, str(value))


def log_study_data(
    ctx: TrackingContext,
    summary: Mapping[str, Any],
    params: Mapping[str, Any],
    tags: Mapping[str, str],
) -> dict[str, tuple[str, str]]:
    """Log the data summary (``study/data.json``), data params and provenance tags on the parent.

    MLflow params cannot change: a resumed study logs only the params its parent lacks.

    Returns:
        param -> (logged before, now) for params that differ from the parent's (data changed
        since the study started); empty when all agree.
    """
    client = _client(ctx.tracking_uri)
    before = _retry(client.get_run, ctx.parent_run_id).data.params
    new = {k: str(v) for k, v in params.items() if k not in before}
    changed = {
        k: (before[k], str(v)) for k, v in params.items() if k in before and before[k] != str(v)
    }
    _retry(client.log_batch, ctx.parent_run_id, params=_params(new), tags=_tags(tags))
    _retry(client.log_dict, ctx.parent_run_id, json.loads(json.dumps(summary)), STUDY_DATA)
    return changed


def log_study_results(
    ctx: TrackingContext,
    metrics: Mapping[str, float],
    step: int,
    run_tags: Mapping[str, Mapping[str, str]],
) -> None:
    """Log the parent's comparison metrics and set tags (descriptions, best_of_arm) on runs.

    A metric whose latest value on the parent is already ``metrics[key]`` is not logged again,
    so re-running the end of a study (``--resume``) adds nothing; a changed one is logged at
    ``step`` (the caller passes a count that grows with the study, e.g. its ended trials).

    Args:
        ctx: the study's tracking context.
        metrics: parent-run metric -> value (non-finite values are left out).
        step: the step of the newly logged values.
        run_tags: run id -> tags to set on it (the parent's own id included).
    """
    client = _client(ctx.tracking_uri)
    current = _retry(client.get_run, ctx.parent_run_id).data.metrics
    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, int | float) and math.isfinite(v) and current.get(k) != float(v)
    ]
    if batch:
        _retry(client.log_batch, ctx.parent_run_id, metrics=batch)
    for run_id, tags in run_tags.items():
        if tags:
            _retry(client.log_batch, run_id, tags=_tags(tags))
