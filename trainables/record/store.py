"""The one MLflow client of the project: tracking URIs, retries, quoted filters, paging, the
runs of a study as ``Trial``s, and artifact downloads. The writer (trials, driver) and the reader
(analysis) both go through it.

Everything uses an explicit ``MlflowClient`` with an explicit tracking URI (never the global
``mlflow.start_run`` state): trials run in Ray worker processes that chdir into their trial folder
and may restart on another node.
"""

from __future__ import annotations

import functools
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.record.schema import (
    PREDICTIONS,
    ROLE_TRIAL,
    TAG_ARM,
    TAG_ERROR,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STAGE,
    TAG_STATUS,
    TAG_TRIAL_ID,
    Status,
)
from trainables.record.trial import Trial

_T = TypeVar("_T")
TRACKING_ERRORS: tuple[type[Exception], ...] = (MlflowException, OSError)  # a store that fails
PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_EXPERIMENT = "gaze-unet"
REACH_TIMEOUT_S = 5.0


class StoreUnreachable(ConnectionError):
    """The tracking server does not answer (the message names the URI)."""


@dataclass(frozen=True)
class TrackingContext:
    """Where a study logs: small and picklable, so it travels to every trial through Ray."""

    tracking_uri: str  # absolute sqlite URI or an mlflow server URL
    experiment_id: str
    parent_run_id: str  # the study's parent run; child runs point at it


def resolve_tracking_uri(uri: str | None, project_dir: str | Path = PROJECT_DIR) -> str:
    """The tracking URI trials can use from any working directory.

    Args:
        uri: None for ``$MLFLOW_TRACKING_URI`` or else the project default, an ``http(s)://``
            server, a database URI, or a ``sqlite:///`` URI (a relative sqlite path is made
            absolute against the current directory, because trials chdir into their own folders).
        project_dir: project root; the default store is ``<project_dir>/mlflow.db``.

    Raises:
        ValueError: for a file store (plain path or ``file:`` URI), which MLflow >= 3.13 refuses.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
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


def sqlite_path(tracking_uri: str) -> Path:
    return Path(tracking_uri[len("sqlite:///") :])


def local_artifact_root(tracking_uri: str) -> Path:
    """``mlartifacts`` beside a sqlite store: ``<project>/mlartifacts`` for the default store."""
    return sqlite_path(tracking_uri).parent / "mlartifacts"


def check_reachable(tracking_uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail fast, naming the URI, when an HTTP tracking server does not answer its ``/health``
    endpoint within ``timeout`` seconds (MLflow's own client retries for minutes first).

    Raises:
        StoreUnreachable: no answer, or not an MLflow server.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            raise StoreUnreachable(
                f"MLflow server {tracking_uri}: /health answered {response.status}"
            )
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise StoreUnreachable(
            f"MLflow tracking server {tracking_uri} is not reachable ({reason}; waited "
            f"{timeout:g} s): start it (mlflow server ...) or pass another --tracking-uri"
        ) from None


def eq(key: str, value: str, what: str) -> str:
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


def parent_clause(parent_run_id: str) -> str:
    return eq(f"tags.`{TAG_PARENT}`", parent_run_id, "parent run id")


def retry(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call ``fn``; retried with backoff while a sqlite store is locked by another writer
    (several trial processes write to one file)."""
    for attempt in range(6):
        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if "locked" not in str(exc).lower() or attempt == 5:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _create_schema_once(tracking_uri: str) -> None:
    """Open a sqlite store under a file lock beside it, so that its schema is created once.

    MLflow creates (and migrates) the tables of a new sqlite file when a process first opens it,
    without a lock: two studies starting on a new store at once collide (``table ... already
    exists``, ``duplicate column``) and one of them dies.
    """
    db = sqlite_path(tracking_uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


@functools.cache
def store(tracking_uri: str) -> Store:
    """The process's Store of ``tracking_uri`` (the schema of a new sqlite store created once)."""
    if is_local_store(tracking_uri):
        _create_schema_once(tracking_uri)
    # MLflow draws a tqdm bar per downloaded file: dozens of them drown the console.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return Store(tracking_uri, MlflowClient(tracking_uri=tracking_uri))


@dataclass(frozen=True)
class Store:
    """Typed access to one tracking store; every call retried while a sqlite file is locked."""

    uri: str
    client: MlflowClient

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)``, retried (``retry``)."""
        return retry(getattr(self.client, method), *args, **kwargs)

    def search(
        self, experiment_id: str, filter_string: str, oldest_first: bool = True
    ) -> list[Run]:
        """Every active run matching the filter, all pages, by start time."""
        order = ["attributes.start_time " + ("ASC" if oldest_first else "DESC")]
        runs: list[Run] = []
        token = None
        while True:
            page = self.call(
                "search_runs",
                [experiment_id],
                filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=order,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def run(self, run_id: str) -> Run:
        return self.call("get_run", run_id)

    def run_exists(self, run_id: str) -> bool:
        try:
            self.run(run_id)
        except MlflowException:
            return False
        return True

    def experiment_id(self, name: str) -> str:
        """Id of the experiment called ``name``; KeyError listing the existing names if none."""
        experiment = self.call("get_experiment_by_name", name)
        if experiment is None:
            names = sorted(e.name for e in self.call("search_experiments"))
            raise KeyError(f"no MLflow experiment {name!r} at {self.uri}; found {names}")
        return experiment.experiment_id

    def has_artifact(self, run_id: str, path: str) -> bool:
        """Whether the run logged the artifact file ``path`` (e.g. ``predictions/test.csv``)."""
        listed = self.call("list_artifacts", run_id, str(Path(path).parent))
        return any(f.path == path and not f.is_dir for f in listed)

    def download(self, run_id: str, path: str, dst: str | Path) -> Path:
        """Download one artifact file of a run into the folder ``dst``.

        Raises:
            FileNotFoundError: no such run in the store, or the run has no such artifact.
        """
        if not self.run_exists(run_id):
            raise FileNotFoundError(f"no MLflow run {run_id} at {self.uri}")
        if not self.has_artifact(run_id, path):
            raise FileNotFoundError(f"MLflow run {run_id} has no artifact {path}")
        return Path(self.call("download_artifacts", run_id, path, str(dst)))

    def trials(
        self,
        ctx: TrackingContext,
        *,
        stage: str | None = None,
        include_orphaned: bool = False,
        artifacts: bool = True,
    ) -> list[Trial]:
        """The child runs of a study (optionally of one stage), oldest first.

        Orphaned runs (no Tune trial) only with ``include_orphaned``. With ``artifacts``, each
        ok run is checked for its predictions (``Trial.has_predictions``), which decides whether
        it can be an arm's best trial: every consumer of the selection rule reads trials here.
        """
        filt = (
            parent_clause(ctx.parent_run_id) + " and " + eq(f"tags.{TAG_ROLE}", ROLE_TRIAL, "role")
        )
        if stage:
            filt += " and " + eq(f"tags.{TAG_STAGE}", stage, TAG_STAGE)
        out = []
        for r in self.search(ctx.experiment_id, filt):
            status = r.data.tags.get(TAG_STATUS, "")
            if status == Status.ORPHANED and not include_orphaned:
                continue
            checked = artifacts and status == Status.OK
            out.append(
                to_trial(r, self.has_artifact(r.info.run_id, PREDICTIONS) if checked else None)
            )
        return out


def to_trial(run: Run, has_predictions: bool | None = None) -> Trial:
    """The ``Trial`` of an MLflow run."""
    tags = run.data.tags
    return Trial(
        run_id=run.info.run_id,
        trial_id=tags.get(TAG_TRIAL_ID, ""),
        arm=tags.get(TAG_ARM, ""),
        stage=tags.get(TAG_STAGE, ""),
        status=tags.get(TAG_STATUS, ""),
        error=tags.get(TAG_ERROR, ""),
        start_time=int(run.info.start_time or 0),
        end_time=int(run.info.end_time) if run.info.end_time else None,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(tags),
        has_predictions=has_predictions,
    )
