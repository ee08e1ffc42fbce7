"""Reading the study's MLflow record: the one place analysis/ talks to MLflow.

The record's layout is the contract in the study brief (parent run ``role=study``, one child run
``role=trial`` per Tune trial, artifacts ``predictions/test.csv``, ``explain/test.csv``,
``heatmaps/maps.npz``). Everything here validates what it reads and names the run and file when
something is off. Choosing an arm's best trial is here too, because it is a question about the
record (which run), asked the same way by tables, figures and the report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from trainables.config import CLASSES
from trainables.record import (
    ANALYSIS_DIR,
    EXPLAIN,
    EXPLAIN_COLUMNS,
    MAP_ARRAYS,
    MAP_KINDS,
    MAPS,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    PROB_COLUMNS,
    ROLE_STUDY,
    ROLE_TRIAL,
    SELECTION_METRIC,
    STATUS_OK,
    STUDY_CONFIG,
    STUDY_DATA,
    TAG_ARM,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STAGE,
    TAG_STATUS,
    TAG_STUDY_NAME,
    select_best,
    selection_score,
)

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_EXPERIMENT = "gaze-unet"

SEED_INDEPENDENT_PARAMS = frozenset({"seed", "device", "num_threads"})  # may differ between seeds


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the study's ``sqlite:///<project>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_DIR / 'mlflow.db'}"


@dataclass(frozen=True)
class Trial:
    """One child run, as analysis needs it (tags, params and final metric values)."""

    run_id: str
    arm: str
    stage: str
    status: str
    start_time: int
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    end_time: int | None = None  # ms; None while the run is open

    @property
    def seconds(self) -> float | None:
        """Wall time of the run, None while it is open."""
        if not self.end_time or self.end_time < self.start_time:
            return None
        return (self.end_time - self.start_time) / 1000.0

    @property
    def val_auc(self) -> float:
        """The selection metric, ``nan`` when the run never logged it."""
        return selection_score(self.metrics)

    def hyperparams(self) -> dict[str, str]:
        """Params that define the configuration, i.e. all but the seed-like ones."""
        return {k: v for k, v in self.params.items() if k not in SEED_INDEPENDENT_PARAMS}


@dataclass(frozen=True)
class Study:
    """A parent run and its trials."""

    experiment_id: str
    parent_run_id: str
    name: str
    params: dict[str, str]
    trials: tuple[Trial, ...]


def _trial(run: Run) -> Trial:
    tags = run.data.tags
    return Trial(
        run_id=run.info.run_id,
        arm=tags.get(TAG_ARM, ""),
        stage=tags.get(TAG_STAGE, "search"),
        status=tags.get(TAG_STATUS, ""),
        start_time=int(run.info.start_time or 0),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(tags),
        end_time=int(run.info.end_time) if run.info.end_time else None,
    )


class Record:
    """Read access to one MLflow tracking store, with downloads cached per run and file."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        # MLflow draws a tqdm bar per downloaded file: dozens of them drown the tables on stdout.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._tmp = tempfile.TemporaryDirectory(prefix="analysis-")
        self._cache: dict[tuple[str, str], Any] = {}
        self._listing: dict[tuple[str, str], set[str]] = {}
        self._history: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def _search(self, experiment_id: str, filter_string: str) -> list[Run]:
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def experiment_id(self, name: str) -> str:
        """Id of the experiment called ``name``; KeyError listing the existing names if none."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            names = sorted(e.name for e in self.client.search_experiments())
            raise KeyError(f"no MLflow experiment {name!r} at {self.tracking_uri}; found {names}")
        return experiment.experiment_id

    def study(self, experiment: str, parent: str | None = None) -> Study:
        """The study (parent run ``role=study``) and its trials; by default the latest parent.

        Raises:
            KeyError: unknown experiment, no study run, or ``parent`` not a study of it.
        """
        exp_id = self.experiment_id(experiment)
        if parent is None:
            parents = self._search(exp_id, f"tags.{TAG_ROLE} = '{ROLE_STUDY}'")
            if not parents:
                raise KeyError(f"experiment {experiment!r} has no study run (tag role=study)")
            run = max(parents, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        else:
            run = self.client.get_run(parent)
            if run.info.experiment_id != exp_id or run.data.tags.get(TAG_ROLE) != ROLE_STUDY:
                raise KeyError(f"run {parent} is not a study run of experiment {experiment!r}")
        children = self._search(
            exp_id,
            f"tags.`{TAG_PARENT}` = '{run.info.run_id}' and tags.{TAG_ROLE} = '{ROLE_TRIAL}'",
        )
        trials = tuple(
            sorted((_trial(r) for r in children), key=lambda t: (t.start_time, t.run_id))
        )
        log.info("study %s: %d trial runs", run.info.run_id, len(trials))
        return Study(
            experiment_id=exp_id,
            parent_run_id=run.info.run_id,
            name=run.data.tags.get(TAG_STUDY_NAME, run.info.run_name or ""),
            params=dict(run.data.params),
            trials=trials,
        )

    def has_artifact(self, run_id: str, path: str) -> bool:
        """Whether the run logged the artifact file ``path`` (e.g. ``predictions/test.csv``)."""
        folder = str(Path(path).parent)
        if (run_id, folder) not in self._listing:
            listed = self.client.list_artifacts(run_id, folder)
            self._listing[(run_id, folder)] = {f.path for f in listed if not f.is_dir}
        return path in self._listing[(run_id, folder)]

    def _download(self, run_id: str, path: str) -> Path:
        if not self.has_artifact(run_id, path):
            raise FileNotFoundError(f"run {run_id} has no artifact {path}")
        dst = Path(self._tmp.name) / run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def _cached(self, run_id: str, path: str, read) -> Any:
        if (run_id, path) not in self._cache:
            self._cache[(run_id, path)] = read(self._download(run_id, path), f"{run_id}/{path}")
        return self._cache[(run_id, path)]

    def predictions(self, run_id: str) -> pd.DataFrame:
        """The run's test predictions, checked and sorted by key (see :func:`read_predictions`)."""
        return self._cached(run_id, PREDICTIONS, read_predictions)

    def explain(self, run_id: str) -> pd.DataFrame:
        """The run's per-image map-vs-gaze metrics (see :func:`read_explain`)."""
        return self._cached(run_id, EXPLAIN, read_explain)

    def maps(self, run_id: str) -> dict[str, np.ndarray]:
        """The run's heatmap-panel arrays (see :func:`read_maps`)."""
        return self._cached(run_id, MAPS, read_maps)

    def study_config(self, parent_run_id: str) -> dict[str, Any] | None:
        """The parent run's ``study/config.json``, or None when it was not logged."""
        if not self.has_artifact(parent_run_id, STUDY_CONFIG):
            return None
        return self._cached(parent_run_id, STUDY_CONFIG, lambda p, _: json.loads(p.read_text()))

    def study_data(self, parent_run_id: str) -> dict[str, Any] | None:
        """The parent run's ``study/data.json`` (split sizes, class balance, exclusions), or None.

        Raises:
            ValueError: the file is not a JSON object (naming the run and file).
        """
        if not self.has_artifact(parent_run_id, STUDY_DATA):
            return None
        return self._cached(parent_run_id, STUDY_DATA, read_json_object)

    def metric_history(self, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a per-epoch metric, sorted by step; a step logged twice (a
        restarted trial) keeps its latest value. Empty arrays when the run never logged it."""
        if (run_id, key) not in self._history:
            latest: dict[int, tuple[int, float]] = {}
            for m in self.client.get_metric_history(run_id, key):
                if m.step not in latest or m.timestamp >= latest[m.step][0]:
                    latest[m.step] = (m.timestamp, m.value)
            steps = np.array(sorted(latest), dtype=np.int64)
            values = np.array([latest[s][1] for s in steps.tolist()], dtype=np.float64)
            self._history[(run_id, key)] = (steps, values)
        return self._history[(run_id, key)]

    def log_outputs(self, parent_run_id: str, files: Iterable[Path]) -> None:
        """Log analysis outputs as artifacts of the parent run under ``analysis/``."""
        for path in files:
            self.client.log_artifact(parent_run_id, str(path), ANALYSIS_DIR)


def read_json_object(path: Path, name: str = "") -> dict[str, Any]:
    """Read a JSON file that must hold one object."""
    name = name or str(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{name}: not JSON ({err})") from err
    if not isinstance(value, dict):
        # ValueError like every malformed artifact: the analysis CLIs report those in one line.
        raise ValueError(f"{name}: expected a JSON object, got {type(value).__name__}")  # noqa: TRY004
    return value


def read_predictions(path: Path, name: str = "") -> pd.DataFrame:
    """Read and check a ``predictions/test.csv``; only the ``split == "test"`` rows are kept.

    Raises:
        ValueError: naming ``name`` (or the path) when columns, labels, keys or probs are off.
    """
    name = name or str(path)
    frame = pd.read_csv(path, dtype={"key": str, "split": str, "label_name": str})
    if tuple(frame.columns) != PREDICTION_COLUMNS:
        raise ValueError(
            f"{name}: columns {list(frame.columns)}, expected {list(PREDICTION_COLUMNS)}"
        )
    others = int((frame["split"] != "test").sum())
    if others:
        log.warning("%s: left out %d rows whose split is not 'test'", name, others)
        frame = frame[frame["split"] == "test"]
    if frame.empty:
        raise ValueError(f"{name}: no test rows")
    if frame["key"].duplicated().any():
        raise ValueError(f"{name}: {int(frame['key'].duplicated().sum())} duplicated keys")
    if not frame["label"].isin(range(len(CLASSES))).all():
        raise ValueError(f"{name}: labels outside 0..{len(CLASSES) - 1}")
    expected_names = frame["label"].map(dict(enumerate(CLASSES)))
    if (expected_names != frame["label_name"]).any():
        raise ValueError(f"{name}: label_name disagrees with label (class order {CLASSES})")
    probs = frame[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise ValueError(f"{name}: {int((~np.isfinite(probs)).sum())} non-finite probabilities")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{name}: probability rows do not sum to 1 (expected softmax outputs)")
    return frame.astype({"label": np.int64}).sort_values("key").reset_index(drop=True)


def read_explain(path: Path, name: str = "") -> pd.DataFrame:
    """Read and check an ``explain/test.csv`` (one row per image and map)."""
    name = name or str(path)
    frame = pd.read_csv(path, dtype={"key": str, "map": str, "generator": str})
    if tuple(frame.columns) != EXPLAIN_COLUMNS:
        raise ValueError(f"{name}: columns {list(frame.columns)}, expected {list(EXPLAIN_COLUMNS)}")
    unknown = sorted(set(frame["map"]) - set(MAP_KINDS))
    if unknown:
        raise ValueError(f"{name}: unknown map values {unknown} (expected {', '.join(MAP_KINDS)})")
    return frame


def read_maps(path: Path, name: str = "") -> dict[str, np.ndarray]:
    """Read and check a ``heatmaps/maps.npz`` (keys as a unicode array; no pickles are loaded)."""
    name = name or str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:  # object arrays need pickle, which we refuse for logged files
        raise ValueError(f"{name}: {err} (store keys as a str array, not object)") from err
    missing = [k for k in MAP_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{name}: missing arrays {missing}")
    k = len(arrays["keys"])
    for key in MAP_ARRAYS[3:]:
        if arrays[key].ndim != 3 or arrays[key].shape[0] != k:
            raise ValueError(f"{name}: {key} has shape {arrays[key].shape}, expected ({k}, S, S)")
    arrays["keys"] = arrays["keys"].astype(str)
    return arrays


def finished(record: Record, trials: Sequence[Trial]) -> list[Trial]:
    """Trials with status ``ok``, a finite selection metric and a predictions artifact."""
    out = []
    for t in trials:
        if t.status != STATUS_OK:
            continue
        if not math.isfinite(t.val_auc):
            log.warning(
                "run %s (%s) is ok but has no %s: left out", t.run_id, t.arm, SELECTION_METRIC
            )
        elif not record.has_artifact(t.run_id, PREDICTIONS):
            log.warning("run %s (%s) is ok but has no %s: left out", t.run_id, t.arm, PREDICTIONS)
        else:
            out.append(t)
    return out


def best_trial(candidates: Sequence[Trial], arm: str) -> Trial | None:
    """The arm's best finished trial by validation mean AUC (ties: the earliest run).

    Search-stage runs are preferred: re-runs with other seeds (``stage=seeds``) only describe the
    spread of the chosen configuration and are picked only when an arm has nothing else.
    """
    runs = [t for t in candidates if t.arm == arm]
    search = [t for t in runs if t.stage != "seeds"]
    pool = search or runs
    return select_best(pool, lambda t: t.metrics, tiebreak=lambda t: (t.start_time, t.run_id))


def seed_group(candidates: Sequence[Trial], best: Trial) -> list[Trial]:
    """The best trial and every finished run of its arm with the same hyperparameters (any seed)."""
    return [t for t in candidates if t.arm == best.arm and t.hyperparams() == best.hyperparams()]


def best_trials(record: Record, study: Study, arms: Sequence[str]) -> dict[str, Trial | None]:
    """``arm -> best finished trial`` (None when the arm has none) for each of ``arms``."""
    candidates = finished(record, study.trials)
    return {arm: best_trial(candidates, arm) for arm in arms}


def write_and_log(
    write_from,
    tracking_uri: str | None,
    experiment: str,
    out_dir,
    *,
    parent: str | None,
    resamples: int,
    seed: int,
    log_to_mlflow: bool,
):
    """Run ``write_from(record, study, out_dir, ...)`` on a study (latest, or ``parent``) and log the
    files it wrote to the study's parent run (the shared body of the analysis entry points)."""
    record = Record(tracking_uri)
    study = record.study(experiment, parent)
    out = write_from(record, study, Path(out_dir), resamples=resamples, seed=seed)
    if log_to_mlflow:
        record.log_outputs(study.parent_run_id, out.files)
    return out
