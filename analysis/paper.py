"""The paper's Tables 1-4: which arms each compares and the numbers it published.

Watanabe et al., Front. Radiol. 2022 (doi 10.3389/fradi.2022.991683): cells are the median and the
2.5th / 97.5th percentiles of 30 bootstraps of 55-60 test images, and a p-value against the U-Net
baseline (none for the baseline row). Transcribed from /work/shared/paper.txt.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.record import AUC_COLUMNS

METRICS: tuple[str, ...] = AUC_COLUMNS
"""Table column order (the paper's: average, Normal, CHF, pneumonia)."""

METRIC_LABELS: dict[str, str] = {
    "auc_mean": "Mean AUC",
    "auc_normal": "Normal AUC",
    "auc_chf": "CHF AUC",
    "auc_pneumonia": "Pneumonia AUC",
}

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
    """One of the paper's tables: its rows are ``arms``, the first being the baseline."""

    number: int
    title: str
    arms: tuple[str, ...]


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


def table_arms() -> tuple[str, ...]:
    """Every arm that appears in a table, in first-appearance order."""
    return tuple(dict.fromkeys(arm for spec in TABLES for arm in spec.arms))
