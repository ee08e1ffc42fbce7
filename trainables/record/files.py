"""The record's artifact files, written by a trial and read back by analysis, in one place:
``predictions/test.csv``, ``explain/test.csv`` and ``heatmaps/maps.npz`` (their columns and arrays
come from the schema). Readers validate what they read and name the run and file when something
is off. numpy and pandas only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.record.schema import (
    EXPLAIN,
    EXPLAIN_COLUMNS,
    MAP_ARRAYS,
    MAP_KINDS,
    MAPS,
    PREDICTIONS,
    READERS,
)
from trainables.task import Task

log = logging.getLogger(__name__)


def write_predictions(
    out_dir: Path, keys: Sequence[str], labels: np.ndarray, probs: np.ndarray, task: Task
) -> Path:
    """``predictions/test.csv`` under ``out_dir``: one row per test image, sorted by key; its
    columns are the task's (``Task.prediction_columns``)."""
    if task.exclusive:
        label_cols = {"label": labels, "label_name": [task.classes[i] for i in labels]}
    else:
        label_cols = {col: labels[:, c] for c, col in enumerate(task.label_columns)}
    frame = pd.DataFrame(
        {
            "key": list(keys),
            "split": "test",
            **label_cols,
            **{column: probs[:, c] for c, column in enumerate(task.prob_columns)},
        },
        columns=list(task.prediction_columns),
    )
    path = out_dir / PREDICTIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.sort_values("key").to_csv(path, index=False)
    return path


def write_explain(out_dir: Path, rows: Sequence[dict]) -> pd.DataFrame:
    """``explain/test.csv`` under ``out_dir`` (one row per image and map); returns the frame."""
    frame = pd.DataFrame(list(rows), columns=list(EXPLAIN_COLUMNS))
    path = out_dir / EXPLAIN
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def write_readers(out_dir: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """``explain/readers.csv`` under ``out_dir`` (a multi-reader dataset: per image and map, the
    agreement with the readers and the localization of the ellipses); returns the frame."""
    path = out_dir / READERS
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def write_maps(out_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``heatmaps/maps.npz`` under ``out_dir`` (keys as a str array: loadable without pickle)."""
    path = out_dir / MAPS
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def read_json_object(path: Path, name: str = "") -> dict[str, Any]:
    """Read a JSON file that must hold one object."""
    name = name or str(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{name}: not JSON ({err})") from err
    if not isinstance(value, dict):
        # ValueError like every malformed artifact: the analysis commands report those in one line.
        raise ValueError(f"{name}: expected a JSON object, got {type(value).__name__}")  # noqa: TRY004
    return value


def read_predictions(path: Path, task: Task, name: str = "") -> pd.DataFrame:
    """Read and check a ``predictions/test.csv`` of ``task``; only the ``split == "test"`` rows
    are kept.

    Raises:
        ValueError: naming ``name`` (or the path) when columns, labels, keys or probs are off.
    """
    name = name or str(path)
    frame = pd.read_csv(path, dtype={"key": str, "split": str, "label_name": str})
    if tuple(frame.columns) != task.prediction_columns:
        raise ValueError(
            f"{name}: columns {list(frame.columns)}, expected {list(task.prediction_columns)}"
        )
    others = int((frame["split"] != "test").sum())
    if others:
        log.warning("%s: left out %d rows whose split is not 'test'", name, others)
        frame = frame[frame["split"] == "test"]
    if frame.empty:
        raise ValueError(f"{name}: no test rows")
    if frame["key"].duplicated().any():
        raise ValueError(f"{name}: {int(frame['key'].duplicated().sum())} duplicated keys")
    if task.exclusive:
        if not frame["label"].isin(range(task.n)).all():
            raise ValueError(f"{name}: labels outside 0..{task.n - 1}")
        if (frame["label"].map(dict(enumerate(task.classes))) != frame["label_name"]).any():
            raise ValueError(f"{name}: label_name disagrees with label (class order {task.classes})")  # fmt: skip
    elif not frame[list(task.label_columns)].isin((0, 1)).all().all():
        raise ValueError(f"{name}: label columns must be 0 or 1")
    probs = frame[list(task.prob_columns)].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise ValueError(f"{name}: {int((~np.isfinite(probs)).sum())} non-finite probabilities")
    if task.exclusive and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{name}: probability rows do not sum to 1 (expected softmax outputs)")
    if ((probs < 0) | (probs > 1)).any():
        raise ValueError(f"{name}: probabilities outside [0, 1]")
    ints = {c: np.int64 for c in task.label_columns if c != "label_name"}
    return frame.astype(ints).sort_values("key").reset_index(drop=True)


def labels_and_probs(frame: pd.DataFrame, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """The task's labels ((N,) ids or (N, K) 0/1) and (N, K) probabilities of a predictions frame."""
    probs = frame[list(task.prob_columns)].to_numpy(dtype=np.float64)
    if task.exclusive:
        return frame["label"].to_numpy(dtype=np.int64), probs
    return frame[list(task.label_columns)].to_numpy(dtype=np.int64), probs


def read_table(path: Path, columns: Sequence[str], name: str = "") -> pd.DataFrame:
    """A per-image CSV of the record (``explain/readers.csv``, ``study/ceiling.csv``): its header
    must be ``columns``; keys are text, every other column a number (nan where undefined).

    Raises:
        ValueError: naming ``name`` (or the path) when the columns or a number are off.
    """
    name = name or str(path)
    frame = pd.read_csv(path, dtype={"key": str, "map": str, "generator": str})
    if tuple(frame.columns) != tuple(columns):
        raise ValueError(f"{name}: columns {list(frame.columns)}, expected {list(columns)}")
    numbers = [c for c in columns if c not in ("key", "map", "generator")]
    try:
        frame[numbers] = frame[numbers].astype(np.float64)
    except ValueError as err:
        raise ValueError(f"{name}: a non-numeric value ({err})") from err
    return frame


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
    for key, value in arrays.items():
        if key in ("keys", "labels", "probs"):
            continue
        if value.ndim != 3 or value.shape[0] != k:
            raise ValueError(f"{name}: {key} has shape {value.shape}, expected ({k}, S, S)")
    arrays["keys"] = arrays["keys"].astype(str)
    return arrays
