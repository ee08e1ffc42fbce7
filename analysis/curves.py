"""Learning curves per arm: training loss and validation mean AUC per epoch of every trial.

Read from the MLflow metric histories (``train/loss``, ``val/auc_mean``, step = epoch). One pair
of panels per arm; every trial of the arm is a thin grey line, its best trial (the one the tables
use) a coloured one, so a reader sees how far the chosen trial stands out and where ASHA stopped
the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.paper import ARM_LABELS
from trainables.panels import DPI, FONT_PT, save
from trainables.record import SEARCH_METRIC, TRAIN_LOSS
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

CURVE_METRICS: tuple[tuple[str, str], ...] = (
    (TRAIN_LOSS, "training loss"),
    (SEARCH_METRIC, "validation mean AUC"),
)
CURVES_NOTE = (
    "Per epoch, every trial of an arm (search and seeds stages): thin grey lines; the arm's best "
    "trial (highest validation mean AUC of its best epoch; the run the tables use) in colour. "
    "Curves that end early are trials ASHA stopped, or that diverged or failed."
)
_ARMS_PER_ROW = 2
_W_IN, _H_IN, _GAP_IN = 2.05, 1.9, 0.85


def arm_trials(study: Study, arms: Sequence[str]) -> dict[str, list[Trial]]:
    """``arm -> its trials`` for the arms that have any, in ``arms`` order."""
    out = {arm: [t for t in study.trials if t.arm == arm] for arm in arms}
    return {arm: trials for arm, trials in out.items() if trials}


def curves_figure(
    record: Record,
    trials: Mapping[str, Sequence[Trial]],
    best: Mapping[str, Trial | None],
    out_dir: Path,
) -> Path | None:
    """``curves.png``; None when no arm has a trial."""
    if not trials:
        return None
    n_rows = -(-len(trials) // _ARMS_PER_ROW)
    cell_w = len(CURVE_METRICS) * _W_IN + (len(CURVE_METRICS) - 1) * _GAP_IN
    width = 0.25 + _ARMS_PER_ROW * (cell_w + 0.75) + 0.1
    row_h = _H_IN + 0.95
    height = 0.55 + n_rows * row_h
    fig = Figure(figsize=(width, height), dpi=DPI)
    for i, (arm, arm_runs) in enumerate(trials.items()):
        r, c = divmod(i, _ARMS_PER_ROW)
        bottom = height - 0.55 - (r + 1) * row_h + 0.55
        chosen = best.get(arm)
        for j, (key, label) in enumerate(CURVE_METRICS):
            left = 0.25 + c * (cell_w + 0.75) + 0.55 + j * (_W_IN + _GAP_IN)
            ax = fig.add_axes((left / width, bottom / height, _W_IN / width, _H_IN / height))
            for t in arm_runs:
                if chosen is not None and t.run_id == chosen.run_id:
                    continue
                steps, values = record.metric_history(t.run_id, key)
                ax.plot(steps, values, color="0.65", lw=0.9, marker="." if len(steps) < 2 else "")
            if chosen is not None:
                steps, values = record.metric_history(chosen.run_id, key)
                ax.plot(steps, values, color="C3", lw=1.8, marker="o", ms=3)
            ax.set_xlabel("epoch", fontsize=FONT_PT)
            ax.set_ylabel(label, fontsize=FONT_PT)
            ax.tick_params(labelsize=FONT_PT)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if j == 0:
                ax.set_title(
                    f"{ARM_LABELS.get(arm, arm)} ({len(arm_runs)} trial{'s' * (len(arm_runs) != 1)})",
                    fontsize=FONT_PT + 1, loc="left",
                )  # fmt: skip
    fig.legend(
        [Line2D([], [], color="C3", lw=1.8, marker="o", ms=3), Line2D([], [], color="0.65")],
        ["best trial (by validation)", "other trials"],
        loc="upper center", ncol=2, fontsize=FONT_PT, frameon=False,
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
