"""The paper's Tables 1-4: which arms each compares and the numbers it published.

Watanabe et al., Front. Radiol. 2022 (doi 10.3389/fradi.2022.991683): cells are the median and the
2.5th / 97.5th percentiles of 30 bootstraps of 55-60 test images, and a p-value against the U-Net
baseline (none for the baseline row). Transcribed from /work/shared/paper.txt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainables.data.datasets import task_of
from trainables.task import Task

PAPER_DATASET = "egd-cxr"  # the paper's tables and numbers are of this dataset only


def metric_labels(task: Task) -> dict[str, str]:
    """AUC key -> column label, in table order (the mean first, then the classes in order)."""
    names = dict(zip(task.auc_keys, task.classes, strict=False))
    return {k: "Mean AUC" if k == "auc_mean" else f"{names[k][:1].upper()}{names[k][1:]} AUC" for k in task.auc_columns}  # fmt: skip


METRIC_LABELS: dict[str, str] = metric_labels(task_of(PAPER_DATASET))
METRICS: tuple[str, ...] = tuple(METRIC_LABELS)
"""The paper's column order: average, Normal, CHF, pneumonia."""

BASELINE = "unet"

ARM_LABELS: dict[str, str] = {
    "unet": "U-Net (baseline)",
    "no-seg": "Without segmentation component",
    "set1-gbp": "Set 1, guided backpropagation",
    "set1-deconv": "Set 1, deconvNet",
    "set2-gbp": "Set 2, guided backpropagation",
    "set2-deconv": "Set 2, deconvNet",
    "set3-gbp": "Set 3, guided backpropagation",
    "set3-deconv": "Set 3, deconvNet",
}


@dataclass(frozen=True)
class TableSpec:
    """A table of arms (its rows, the first being the baseline); ``paper``: one of the paper's
    Tables 1-4, whose published numbers are set beside ours."""

    number: int
    title: str
    arms: tuple[str, ...]
    paper: bool = True


TABLES: tuple[TableSpec, ...] = (
    TableSpec(1, "U-Net vs the model without the segmentation component", ("unet", "no-seg")),
    TableSpec(
        2, "Experiment set 1: loss(generator map, gaze)", ("unet", "set1-gbp", "set1-deconv")
    ),
    TableSpec(
        3, "Experiment set 2: loss(decoder, generator map)", ("unet", "set2-gbp", "set2-deconv")
    ),
    TableSpec(
        4,
        "Experiment set 3: r loss(decoder, gaze) + (1 - r) loss(generator map, gaze)",
        ("unet", "set3-gbp", "set3-deconv"),
    ),
)


PAPER_SETTING = (
    "EGD-CXR, 1,017 of its 1,083 radiographs split 80/10/10 by patient (about 100 test images); "
    "EfficientNet-b0 with ImageNet weights at 224 px (the published baseline code's resize; 35 "
    "epochs in this project's paper-scale preset: the paper does not state its epochs); medians "
    "of 30 bootstrap resamples of 55-60 test images"
)
"""What the paper's numbers come from, for any caption that sets ours beside them."""


@dataclass(frozen=True)
class PaperCell:
    """A published cell: median (low, high); p (None on the baseline row)."""

    median: float
    low: float
    high: float
    p: float | None = None


def _row(*cells: tuple[float, ...]) -> dict[str, PaperCell]:
    return {m: PaperCell(*c) for m, c in zip(METRICS, cells, strict=True)}


PUBLISHED: dict[str, dict[str, PaperCell]] = {
    "unet": _row((0.872, 0.840, 0.897), (0.923, 0.895, 0.945), (0.916, 0.871, 0.938),
                 (0.781, 0.713, 0.851)),
    "no-seg": _row((0.873, 0.838, 0.908, 0.128), (0.878, 0.836, 0.918, 7.068e-14),
                   (0.934, 0.898, 0.975, 4.774e-3), (0.805, 0.763, 0.886, 0.273)),
    "set1-gbp": _row((0.891, 0.847, 0.939, 3.210e-2), (0.896, 0.854, 0.945, 1.086e-3),
                     (0.946, 0.891, 0.979, 1.417e-4), (0.831, 0.763, 0.923, 4.471e-4)),
    "set1-deconv": _row((0.884, 0.843, 0.935, 0.874), (0.916, 0.884, 0.943, 8.061e-6),
                        (0.935, 0.905, 0.959, 8.855e-4), (0.806, 0.715, 0.918, 0.707)),
    "set2-gbp": _row((0.897, 0.848, 0.921, 1.410e-3), (0.907, 0.863, 0.946, 3.732e-2),
                     (0.922, 0.888, 0.956, 0.103), (0.850, 0.792, 0.900, 8.989e-9)),
    "set2-deconv": _row((0.881, 0.828, 0.907, 0.776), (0.885, 0.836, 0.928, 2.932e-11),
                        (0.922, 0.890, 0.952, 0.412), (0.827, 0.732, 0.901, 6.953e-3)),
    "set3-gbp": _row((0.913, 0.860, 0.966, 1.281e-6), (0.921, 0.866, 0.968, 1.981e-16),
                     (0.962, 0.933, 0.989, 0.684), (0.859, 0.732, 0.957, 5.144e-79)),
    "set3-deconv": _row((0.860, 0.806, 0.907, 0.213), (0.907, 0.856, 0.962, 3.928e-4),
                        (0.934, 0.891, 0.974, 5.039e-7), (0.741, 0.643, 0.840, 5.239e-2)),
}  # fmt: skip


def tables_for(dataset: str, arms: Sequence[str]) -> tuple[TableSpec, ...]:
    """The tables of a study: the paper's Tables 1-4 on EGD-CXR; on another dataset one table of
    every arm the study ran (the baseline first), in the paper's cell format, with no published
    numbers (the paper has none for it)."""
    if dataset == PAPER_DATASET:
        return TABLES
    rows = (BASELINE, *(a for a in arms if a != BASELINE))
    return (TableSpec(1, "Test AUC per finding, every arm against the U-Net", rows, paper=False),)


def table_arms(specs: Sequence[TableSpec] = TABLES) -> tuple[str, ...]:
    """Every arm that appears in a table, in first-appearance order."""
    return tuple(dict.fromkeys(arm for spec in specs for arm in spec.arms))


def report_arms(dataset: str, arms: Sequence[str]) -> tuple[str, ...]:
    """The arms a report shows: its tables' (in their order), then any other arm the study ran."""
    return tuple(dict.fromkeys([*table_arms(tables_for(dataset, arms)), *arms]))
