"""ROC curves as small multiples: each arm's best run against the baseline's, one panel per class.

A column per arm and a row per class, so no curve hides another (eight arms' step curves on one
axis hid the U-Net under set 2); the AUCs in each panel are the whole-test-set AUCs of the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import roc_curve

from analysis.formats import format_auc
from analysis.paper import ARM_LABELS, BASELINE
from trainables.metrics import per_class_auc
from trainables.panels import DPI, FONT_PT, save
from trainables.record.files import labels_and_probs
from trainables.record.reader import Record
from trainables.record.trial import Trial
from trainables.task import Task

ROC_ROWS = 6  # classes drawn at most (of many findings: the most frequent in the test set)
ROC_NOTE = (
    "Small multiples: one column per arm, one row per class (one-vs-rest; of many findings the "
    f"{ROC_ROWS} most frequent in the test set, the others' AUCs are in the tables). In each panel the "
    "arm's best run (coloured) against the U-Net baseline's (grey, dashed), on the whole test "
    "set; the numbers are the two AUCs, the same whole-test-set AUCs as the tables and "
    "results.csv (scikit-learn's roc_auc_score, ties counted one half)."
)
_ROC_SIDE_IN, _ROC_GAP_IN, _ROC_LEFT_IN = 1.38, 0.15, 0.85
_ROC_COLUMNS = 7  # arms per row of panels (at most MAX_WIDTH_PX wide)
_ROC_MIN_WIDTH_IN = 3.6  # the x-axis label's width


def roc_classes(labels: np.ndarray, task: Task) -> list[int]:
    """The classes a ROC row is drawn for: those with positives and negatives in the test set; of
    more than ``ROC_ROWS``, the most frequent (the others' AUCs are in the tables)."""
    hot = task.multi_hot(labels)
    pos = hot.sum(0)
    able = [c for c in range(task.n) if 0 < pos[c] < len(hot)]
    if len(able) <= ROC_ROWS:
        return able
    return sorted(sorted(able, key=lambda c: -pos[c])[:ROC_ROWS])


def roc_figure(
    record: Record, best: Mapping[str, Trial | None], out_dir: Path, task: Task
) -> tuple[Path | None, dict[str, dict[str, float]]]:
    """``roc.png`` of each arm's best run (see :func:`draw_roc`).

    Returns:
        The path (None without any finished arm) and ``arm -> AUC key -> AUC`` as shown.
    """
    present = {arm: record.predictions(t.run_id, task) for arm, t in best.items() if t is not None}
    if not present:
        return None, {}
    fig, shown = draw_roc(present, task)
    return save(fig, out_dir / "roc.png"), shown


def _roc(frame: pd.DataFrame, c: int, task: Task) -> tuple[np.ndarray, np.ndarray] | None:
    labels, probs = labels_and_probs(frame, task)
    positive = task.multi_hot(labels)[:, c].astype(bool)
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, probs[:, c])
    return fpr, tpr


def draw_roc(
    predictions: Mapping[str, pd.DataFrame], task: Task, baseline: str = BASELINE
) -> tuple[Figure, dict[str, dict[str, float]]]:
    """Small multiples: a column per arm (the baseline's curve in each, for comparison; the
    baseline alone when it is the only arm), a row per class, one legend above.

    Args:
        predictions: arm -> its ``predictions/test.csv`` frame.
        task: the study's classes (a row per class of :func:`roc_classes`).
        baseline: the arm drawn in grey in every panel.

    Returns:
        The figure and ``arm -> AUC key -> AUC`` (``per_class_auc``, as the tables) it shows.
    """
    shown = {arm: per_class_auc(*labels_and_probs(f, task), task) for arm, f in predictions.items()}  # fmt: skip
    arms = [a for a in predictions if a != baseline] or list(predictions)
    base = predictions.get(baseline) if arms != [baseline] else None
    rows = roc_classes(labels_and_probs(next(iter(predictions.values())), task)[0], task) or [0]
    n_cls, n_cols = len(rows), min(len(arms), _ROC_COLUMNS)
    blocks = -(-len(arms) // _ROC_COLUMNS)
    block_h = n_cls * (_ROC_SIDE_IN + _ROC_GAP_IN) + 0.35  # + the arm names over the block
    # at least wide enough for the axis label; a narrow figure stacks the legend's two entries
    width = max(_ROC_LEFT_IN + n_cols * (_ROC_SIDE_IN + _ROC_GAP_IN) + 0.15, _ROC_MIN_WIDTH_IN)
    legend_h = 0.45 if n_cols >= 3 else 0.65
    height = legend_h + blocks * block_h + 0.45  # legend, panels, x label
    fig = Figure(figsize=(width, height), dpi=DPI)
    for i, arm in enumerate(arms):
        b, col = divmod(i, _ROC_COLUMNS)
        for r, c in enumerate(rows):
            left = _ROC_LEFT_IN + col * (_ROC_SIDE_IN + _ROC_GAP_IN)
            top = height - legend_h - b * block_h - 0.35 - r * (_ROC_SIDE_IN + _ROC_GAP_IN)
            ax = fig.add_axes(
                (left / width, (top - _ROC_SIDE_IN) / height, _ROC_SIDE_IN / width,
                 _ROC_SIDE_IN / height)
            )  # fmt: skip
            _roc_panel(ax, predictions[arm], base, c, f"C{i % 10}", task)
            key = task.auc_keys[c]
            text = format_auc(shown[arm][key])
            if base is not None:
                text += f"\n{format_auc(shown[baseline][key])}"
            ax.text(0.97, 0.04, text, transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=FONT_PT, linespacing=1.1)  # fmt: skip
            ax.tick_params(labelsize=FONT_PT, length=2)
            ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
            ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
            if col:
                ax.set_yticklabels([])
            else:
                ax.set_ylabel(f"{_short(task.classes[c])}\nTPR", fontsize=FONT_PT)
            if r < n_cls - 1:
                ax.set_xticklabels([])
            if r == 0:
                ax.set_title(arm, fontsize=FONT_PT, parse_math=False)
    fig.text(0.5, 0.12 / height, "false positive rate (one class vs the rest)", ha="center",
             fontsize=FONT_PT)  # fmt: skip
    handles = [Line2D([], [], color="C0", lw=1.6)]
    labels = ["the arm's best run (upper number: its AUC)"]
    if base is not None:
        handles.append(Line2D([], [], color="0.45", lw=1.2, ls="--"))
        labels.append(f"{ARM_LABELS.get(baseline, baseline)} (lower number)")
    fig.legend(handles, labels, loc="upper center", ncol=2 if n_cols >= 3 else 1, fontsize=FONT_PT, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.08 / height))  # fmt: skip
    return fig, shown


def _short(name: str, chars: int = 16) -> str:
    return name if len(name) <= chars else name[: chars - 1] + "…"


def _roc_panel(ax, arm: pd.DataFrame, base: pd.DataFrame | None, c: int, colour: str, task: Task) -> None:  # fmt: skip
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
    if base is not None and (curve := _roc(base, c, task)) is not None:
        ax.plot(*curve, color="0.45", lw=1.2, ls="--")
    if (curve := _roc(arm, c, task)) is not None:
        ax.plot(*curve, color=colour, lw=1.6)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
