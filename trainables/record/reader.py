"""Reading a study back from the record: what ``analysis/`` draws on.

A ``Study`` is a parent run and its trials (read through the one ``Store``, so each ok trial's
predictions are checked), with each arm's best trial chosen once by ``selection.best_of_arm``.
``Record`` caches artifact downloads per run and file; it writes to MLflow only when asked
(``log_outputs``, behind the analysis commands' ``--log``).
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.record.files import (
    read_explain,
    read_json_object,
    read_maps,
    read_predictions,
    read_table,
)
from trainables.record.schema import (
    ANALYSIS_DIR,
    CEILING,
    EXPLAIN,
    MAPS,
    PREDICTIONS,
    READERS,
    ROLE_STUDY,
    STUDY_CONFIG,
    STUDY_DATA,
    TAG_KIND,
    TAG_ROLE,
    TAG_STUDY_NAME,
    Kind,
)
from trainables.record.selection import best_of_arm
from trainables.record.store import Store, TrackingContext, eq, resolve_tracking_uri, store
from trainables.record.trial import Trial
from trainables.record.writer import log_files
from trainables.task import Task

log = logging.getLogger(__name__)
DEFAULT_DATASET = "egd-cxr"  # what a study without a ``dataset`` param trained on


@dataclass(frozen=True)
class Bootstrap:
    """How a study's test AUC intervals were resampled (every trial alike)."""

    resamples: int
    seed: int


@dataclass(frozen=True)
class Study:
    """A parent run and its trials (oldest first)."""

    ctx: TrackingContext
    name: str
    kind: str
    params: dict[str, str]
    trials: tuple[Trial, ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def experiment_id(self) -> str:
        return self.ctx.experiment_id

    @property
    def parent_run_id(self) -> str:
        return self.ctx.parent_run_id

    @functools.cached_property
    def dataset(self) -> str:
        """The registry name of the dataset the study trained on (older records: EGD-CXR)."""
        return self.params.get("dataset") or DEFAULT_DATASET

    @functools.cached_property
    def task(self) -> Task:
        """The study's classes (from its dataset's registry entry)."""
        from trainables.data.datasets import task_of

        return task_of(self.dataset)

    @functools.cached_property
    def arms(self) -> tuple[str, ...]:
        """The arms the study ran: its ``arms`` param in order, then any other arm of a trial."""
        listed = [a for a in self.params.get("arms", "").split(",") if a]
        return tuple(dict.fromkeys([*listed, *(t.arm for t in self.trials)]))

    @functools.cached_property
    def _best(self) -> dict[str, Trial | None]:
        return {arm: best_of_arm(self.trials, arm) for arm in self.arms}

    def best(self, arm: str) -> Trial | None:
        """The arm's best trial (``selection.best_of_arm``), chosen once per study."""
        if arm not in self._best:
            return best_of_arm(self.trials, arm)
        return self._best[arm]

    def best_of(self, arms: Iterable[str]) -> dict[str, Trial | None]:
        """``arm -> best trial or None`` for each of ``arms``."""
        return {arm: self.best(arm) for arm in arms}

    @functools.cached_property
    def bootstrap(self) -> Bootstrap:
        """The test-set bootstrap the trials used (their ``bootstrap_resamples`` and
        ``bootstrap_seed`` params), so analysis reproduces every logged interval exactly: one
        number, one interval. A record without them (older studies) reads 1,000 and seed 0."""
        seen = Counter(
            (int(t.params["bootstrap_resamples"]), int(t.params.get("bootstrap_seed", 0)))
            for t in self.trials
            if t.params.get("bootstrap_resamples", "").isdigit()
        )
        if not seen:
            return Bootstrap(1000, 0)
        if len(seen) > 1:
            log.warning("trials of study %s used different bootstraps %s: using the most common", self.name, dict(seen))  # fmt: skip
        return Bootstrap(*seen.most_common(1)[0][0])


class Record:
    """Read access to one tracking store, with downloads cached per run and file."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.store: Store = store(self.tracking_uri)
        self._tmp = tempfile.TemporaryDirectory(prefix="analysis-")
        self._cache: dict[tuple[str, str], Any] = {}
        self._history: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def experiment_id(self, name: str) -> str:
        return self.store.experiment_id(name)

    def study(self, experiment: str, parent: str | None = None) -> Study:
        """The study (parent run ``role=study``) and its trials; by default the latest parent.

        Raises:
            KeyError: unknown experiment, no study run, or ``parent`` not a study of it.
        """
        exp_id = self.experiment_id(experiment)
        if parent is None:
            parents = self.store.search(
                exp_id, eq(f"tags.{TAG_ROLE}", ROLE_STUDY, "role"), oldest_first=False
            )
            if not parents:
                raise KeyError(f"experiment {experiment!r} has no study run (tag role=study)")
            run = max(parents, key=lambda r: (r.info.start_time or 0, r.info.run_id))
        else:
            try:
                run = self.store.run(parent)
            except Exception as err:
                raise KeyError(f"no MLflow run {parent} at {self.tracking_uri}") from err
            if run.info.experiment_id != exp_id or run.data.tags.get(TAG_ROLE) != ROLE_STUDY:
                raise KeyError(f"run {parent} is not a study run of experiment {experiment!r}")
        ctx = TrackingContext(self.tracking_uri, exp_id, run.info.run_id)
        trials = tuple(sorted(self.store.trials(ctx), key=lambda t: (t.start_time, t.run_id)))
        log.info("study %s: %d trial runs", run.info.run_id, len(trials))
        tags = dict(run.data.tags)
        params = dict(run.data.params)
        return Study(
            ctx=ctx,
            name=tags.get(TAG_STUDY_NAME, run.info.run_name or ""),
            kind=tags.get(TAG_KIND) or params.get(TAG_KIND) or Kind.STUDY,  # older: a param
            params=params,
            trials=trials,
            tags=tags,
        )

    def has_artifact(self, run_id: str, path: str) -> bool:
        return self.store.has_artifact(run_id, path)

    def _cached(self, run_id: str, path: str, read) -> Any:
        if (run_id, path) not in self._cache:
            dst = Path(self._tmp.name) / run_id
            dst.mkdir(parents=True, exist_ok=True)
            local = self.store.download(run_id, path, dst)
            self._cache[(run_id, path)] = read(local, f"{run_id}/{path}")
        return self._cache[(run_id, path)]

    def predictions(self, run_id: str, task: Task) -> pd.DataFrame:
        """The run's test predictions (columns of ``task``), checked and sorted by key."""
        return self._cached(run_id, PREDICTIONS, lambda p, name: read_predictions(p, task, name))

    def explain(self, run_id: str) -> pd.DataFrame:
        """The run's per-image map-vs-gaze metrics."""
        return self._cached(run_id, EXPLAIN, read_explain)

    def readers(self, run_id: str) -> pd.DataFrame | None:
        """The run's maps judged by the readers and the ellipses (``explain/readers.csv``, a
        multi-reader dataset's trials only), or None when it has none."""
        from trainables.reader_eval import READERS_COLUMNS

        if not self.has_artifact(run_id, READERS):
            return None
        return self._cached(run_id, READERS, lambda p, name: read_table(p, READERS_COLUMNS, name))

    def ceiling(self, parent_run_id: str) -> pd.DataFrame | None:
        """The study's human ceiling per test image (``study/ceiling.csv``), or None."""
        from trainables.reader_eval import CEILING_COLUMNS

        if not self.has_artifact(parent_run_id, CEILING):
            return None
        return self._cached(parent_run_id, CEILING, lambda p, name: read_table(p, CEILING_COLUMNS, name))  # fmt: skip

    def maps(self, run_id: str) -> dict[str, np.ndarray]:
        """The run's heatmap-panel arrays."""
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
            for m in self.store.call("get_metric_history", run_id, key):
                if m.step not in latest or m.timestamp >= latest[m.step][0]:
                    latest[m.step] = (m.timestamp, m.value)
            steps = np.array(sorted(latest), dtype=np.int64)
            values = np.array([latest[s][1] for s in steps.tolist()], dtype=np.float64)
            self._history[(run_id, key)] = (steps, values)
        return self._history[(run_id, key)]

    def log_outputs(self, study: Study, files: Iterable[Path]) -> None:
        """Log analysis outputs as artifacts of the parent run under ``analysis/``."""
        log_files(study.ctx, files, ANALYSIS_DIR)
