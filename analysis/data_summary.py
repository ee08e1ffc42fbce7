"""What the study trained and tested on: split sizes, class balance, exclusion counts.

The study logs them on its parent run as ``study/data.json`` (layout:
``trainables.record.data_summary``). A record without that file (an older study) still has the
test split in every trial's ``predictions/test.csv``: its size and class balance are shown from
there, and the rest says "not recorded".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from trainables.config import SPLITS
from trainables.record import (
    DATA_CLASSES,
    DATA_EXCLUSIONS,
    DATA_IMAGES,
    DATA_SPLITS,
    IMAGES,
    STUDY_DATA,
    exclusion_unit,
)
from trainables.record.files import labels_and_probs
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial
from trainables.task import Task

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class DataSummary:
    """The data section's content, whatever the record held."""

    source: str  # where the numbers come from, said under the tables
    splits: pd.DataFrame  # one row per split: images and per-class counts (strings)
    exclusions: pd.DataFrame | None  # reason -> count; None when not recorded
    other: dict[str, str] = field(default_factory=dict)  # any other recorded field


def _count(value: Any) -> str:
    return str(int(value)) if isinstance(value, int | float) else NOT_RECORDED


WIDE_CLASSES = 4  # more classes than this (REFLACX's findings): one row per class instead


def _split_row(entry: Any, classes: Sequence[str]) -> list[str]:
    if isinstance(entry, int | float):  # a bare split size
        return [_count(entry)] + [NOT_RECORDED] * len(classes)
    if not isinstance(entry, Mapping):
        return [NOT_RECORDED] * (1 + len(classes))
    counts = entry.get(DATA_CLASSES)
    counts = counts if isinstance(counts, Mapping) else {}
    return [_count(entry.get(DATA_IMAGES))] + [_count(counts.get(c)) for c in classes]


def _splits_frame(rows: Mapping[str, list[str]], classes: Sequence[str]) -> pd.DataFrame:
    """One row per split (images, then images per class); of many classes the transpose, so
    the table grows down, not across."""
    frame = pd.DataFrame.from_dict(dict(rows), orient="index", columns=["Images", *classes])
    frame.index.name = "Split"
    if len(classes) > WIDE_CLASSES:
        frame = frame.T
        frame.index.name = "Images (of which with the finding)"
        frame.columns.name = None
    return frame


def _exclusions_frame(exclusions: Mapping[str, Any]) -> pd.DataFrame:
    """One row per reason with its count and unit, then a total per unit (counts of different
    units, e.g. images and gaze-file rows, are never added together)."""
    rows = {str(k): [_count(v), exclusion_unit(str(k))] for k, v in sorted(exclusions.items())}
    totals: dict[str, int] = {}
    for reason, v in exclusions.items():
        if isinstance(v, int | float):
            unit = exclusion_unit(str(reason))
            totals[unit] = totals.get(unit, 0) + int(v)
    for unit in sorted(totals, key=lambda u: (u != IMAGES, u)):
        rows[f"total ({unit})"] = [str(totals[unit]), unit]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["Left out", "Unit"])
    frame.index.name = "Reason"
    return frame


def from_recorded(data: Mapping[str, Any], classes: Sequence[str]) -> DataSummary:
    """The summary of a ``study/data.json``; splits or exclusions it lacks say "not recorded"."""
    splits = data.get(DATA_SPLITS)
    splits = splits if isinstance(splits, Mapping) else {}
    names = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    rows = {s: _split_row(splits[s], classes) for s in names} or {
        s: [NOT_RECORDED] * (1 + len(classes)) for s in SPLITS
    }
    exclusions = data.get(DATA_EXCLUSIONS)
    other = {
        str(k): v if isinstance(v, str) else json.dumps(v)
        for k, v in data.items()
        if k not in (DATA_SPLITS, DATA_EXCLUSIONS)
    }
    return DataSummary(
        source=f"From the study run's {STUDY_DATA}.",
        splits=_splits_frame(rows, classes),
        exclusions=_exclusions_frame(exclusions) if isinstance(exclusions, Mapping) else None,
        other=other,
    )


def from_predictions(record: Record, best: Mapping[str, Trial | None], task: Task) -> DataSummary:  # fmt: skip
    """The fallback: the test split as the trials' predictions hold it (arms share it)."""
    rows = {s: [NOT_RECORDED] * (1 + task.n) for s in SPLITS}
    trial = next((t for t in best.values() if t is not None), None)
    if trial is not None:
        labels, _ = labels_and_probs(record.predictions(trial.run_id, task), task)
        counts = task.multi_hot(labels).sum(0)
        rows["test"] = [str(len(labels))] + [str(int(c)) for c in counts]
    return DataSummary(
        source=(
            f"The study run has no {STUDY_DATA}: the test split is read from the trials' "
            "predictions/test.csv; training and validation sizes and exclusions were not recorded."
        ),
        splits=_splits_frame(rows, task.classes),
        exclusions=None,
    )


def data_summary(record: Record, study: Study, best: Mapping[str, Trial | None]) -> DataSummary:
    """The recorded data summary of the study, else what the trials' records give."""
    data = record.study_data(study.parent_run_id)
    task = study.task
    return from_recorded(data, task.classes) if data is not None else from_predictions(record, best, task)  # fmt: skip
