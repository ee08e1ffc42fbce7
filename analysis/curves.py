"""Learning curves per arm: training and validation loss, and validation mean AUC, per epoch of
every trial.

Read from the MLflow metric histories (``train/loss``, ``val/loss``, ``val/auc_mean``, step =
epoch). One pair of panels per arm, each quantity on one y-axis shared by every arm; every trial of
the arm is a thin grey line, its best trial (the one the tables use) a coloured one, so a reader
sees how far the chosen trial stands out and where ASHA stopped the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.paper import ARM_LABELS
from trainables.panels import DPI, FONT_PT, save
from trainables.record import SEARCH_METRIC, TRAIN_LOSS, VAL_LOSS
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

# Panels per arm: (title, [(metric, line style)]); the y range of a panel is shared by every arm.
PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("loss (train —, validation - -)", ((TRAIN_LOSS, "-"), (VAL_LOSS, "--"))),
    ("validation mean AUC", ((SEARCH_METRIC, "-"),)),
)
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    (TRAIN_LOSS, "training loss"),
    (VAL_LOSS, "validation loss"),
    (SEARCH_METRIC, "validation mean AUC"),
)
CURVES_NOTE = (
    "Per epoch, every trial of an arm (search and seeds stages): thin grey lines; the arm's best "
    "trial (highest validation mean AUC of its best epoch; the run the tables use) in colour. "
    "Left panel of each arm: training loss (solid) and validation loss (dashed, the mean "
    "cross-entropy on the validation images); right: validation mean AUC. Every arm's panels "
    "share one y-axis per quantity, so arms compare at a glance. Curves that end early are "
    "trials ASHA stopped, or that diverged or failed."
)
_ARMS_PER_ROW = 2
_W_IN, _H_IN, _GAP_IN = 2.05, 1.9, 0.85


def arm_trials(study: Study, arms: Sequence[str]) -> dict[str, list[Trial]]:
    """``arm -> its trials`` for the arms that have any, in ``arms`` order."""
    out = {arm: [t for t in study.trials if t.arm == arm] for arm in arms}
    return {arm: trials for arm, trials in out.items() if trials}


def shared_limits(
    record: Record, trials: Mapping[str, Sequence[Trial]], keys: Sequence[str]
) -> tuple[float, float] | None:
    """One y range for ``keys`` over every trial of every arm (5% margin); None without data."""
    values = [
        v
        for runs in trials.values()
        for t in runs
        for key in keys
        for v in record.metric_history(t.run_id, key)[1].tolist()
        if math.isfinite(v)
    ]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1e-3)
    return lo - pad, hi + pad


def _draw(ax, record: Record, arm_runs: Sequence[Trial], chosen: Trial | None, lines) -> None:
    for t in arm_runs:
        if chosen is not None and t.run_id == chosen.run_id:
            continue
        for key, ls in lines:
            steps, values = record.metric_history(t.run_id, key)
            ax.plot(
                steps, values, color="0.65", lw=0.9, ls=ls, marker="." if len(steps) < 2 else ""
            )
    if chosen is not None:
        for key, ls in lines:
            steps, values = record.metric_history(chosen.run_id, key)
            ax.plot(steps, values, color="C3", lw=1.8, ls=ls, marker="o", ms=3)


def curves_figure(
    record: Record,
    trials: Mapping[str, Sequence[Trial]],
    best: Mapping[str, Trial | None],
    out_dir: Path,
) -> Path | None:
    """``curves.png``; None when no arm has a trial."""
    if not trials:
        return None
    limits = [shared_limits(record, trials, [k for k, _ in lines]) for _, lines in PANELS]
    n_rows = -(-len(trials) // _ARMS_PER_ROW)
    cell_w = len(PANELS) * _W_IN + (len(PANELS) - 1) * _GAP_IN
    width = 0.25 + _ARMS_PER_ROW * (cell_w + 0.75) + 0.1
    row_h = _H_IN + 0.95
    height = 0.55 + n_rows * row_h
    fig = Figure(figsize=(width, height), dpi=DPI)
    for i, (arm, arm_runs) in enumerate(trials.items()):
        r, c = divmod(i, _ARMS_PER_ROW)
        bottom = height - 0.55 - (r + 1) * row_h + 0.55
        for j, (label, lines) in enumerate(PANELS):
            left = 0.25 + c * (cell_w + 0.75) + 0.55 + j * (_W_IN + _GAP_IN)
            ax = fig.add_axes((left / width, bottom / height, _W_IN / width, _H_IN / height))
            _draw(ax, record, arm_runs, best.get(arm), lines)
            if limits[j] is not None:
                ax.set_ylim(*limits[j])
            ax.set_xlabel("epoch", fontsize=FONT_PT)
            ax.set_ylabel(label.split(" (")[0], fontsize=FONT_PT)
            ax.tick_params(labelsize=FONT_PT)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if j == 0:
                ax.set_title(
                    f"{ARM_LABELS.get(arm, arm)} ({len(arm_runs)} trial{'s' * (len(arm_runs) != 1)})",
                    fontsize=FONT_PT + 1, loc="left",
                )  # fmt: skip
    fig.legend(
        [Line2D([], [], color="C3", lw=1.8, marker="o", ms=3), Line2D([], [], color="0.65"),
         Line2D([], [], color="k", lw=1.2), Line2D([], [], color="k", lw=1.2, ls="--")],
        ["best trial (by validation)", "other trials", "training loss", "validation loss"],
        loc="upper center", ncol=4, fontsize=FONT_PT, frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.05 / height),
    )  # fmt: skip
    return save(fig, out_dir / "curves.png")


def has_curves(record: Record, trials: Mapping[str, Sequence[Trial]]) -> bool:
    """Whether any trial logged a per-epoch metric (a record from before per-epoch logging, or of
    trials that all failed at once, has none)."""
    return any(
        len(record.metric_history(t.run_id, key)[0]) > 0
        for runs in trials.values()
        for t in runs
        for key, _ in CURVE_METRICS
    )
