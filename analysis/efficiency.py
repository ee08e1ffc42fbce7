"""The data-efficiency plan's analysis: test mean AUC against training-set size, per arm
(``study.efficiency``).

Per arm and size (``train_images`` tag): the test mean AUC (mean over seeds, 95% t-interval) and
the paired difference against ``unet`` at the same size and seed (seed s of every arm trained on
the same subset), with its interval. Every size is tested on the same test images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.evidence import AUC, BASELINE, EvidenceOutput, Interval, by_seed, paired, values
from analysis.evidence_page import PlanFiles, save, write_plan_files
from trainables.record import TAG_TRAIN_IMAGES, Stage
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

NOTE = (
    "Clean twin; every size is tested on the same test images and validated on the same "
    "validation images. Seed s draws the training subsets with seed s (whole patients, classes in "
    "turn, the smaller subsets inside the larger) and trains with seed s; arms are paired by seed. "
    "Smaller sets train more epochs (same number of steps, up to the plan's cap). Cells: mean over "
    "seeds [95% t-interval]."
)


def size_key(t: Trial) -> tuple[str, int]:
    return t.arm, int(t.tags.get(TAG_TRAIN_IMAGES, "0"))


@dataclass
class EfficiencyTable:
    frame: pd.DataFrame  # one row per (arm, size)
    auc_display: pd.DataFrame  # arms x sizes: AUC [CI]
    diff_display: pd.DataFrame  # arms x sizes: vs unet [CI]
    intervals: dict[tuple[str, int], Interval]  # (arm, size) -> vs unet


def efficiency_table(trials: Sequence[Trial], arms: Sequence[str]) -> EfficiencyTable:
    """The numbers of the module docstring, from the study's evidence-stage trials."""
    runs = by_seed(trials, size_key)
    sizes = sorted({n for _, n in runs})
    rows, auc_cells, diff_cells, intervals = [], {}, {}, {}
    for arm in arms:
        for n in sizes:
            auc = Interval.of(values(runs, (arm, n)).values())
            diff = paired(values(runs, (arm, n)), values(runs, (BASELINE, n)))
            intervals[(arm, n)] = diff
            rows.append({
                "arm": arm, "train_images": n, "seeds": auc.n, "AUC": auc.mean,
                "AUC low": auc.low, "AUC high": auc.high, "vs unet": diff.mean,
                "vs unet low": diff.low, "vs unet high": diff.high,
            })  # fmt: skip
            auc_cells[(arm, f"{n} images")] = auc.text()
            diff_cells[(arm, f"{n} images")] = diff.text(signed=True)
    return EfficiencyTable(pd.DataFrame(rows), _grid(auc_cells), _grid(diff_cells), intervals)


def _grid(cells: dict[tuple[str, str], str]) -> pd.DataFrame:
    frame = pd.Series(cells).unstack()
    arms = list(dict.fromkeys(a for a, _ in cells))
    columns = list(dict.fromkeys(c for _, c in cells))
    out = frame.reindex(index=arms, columns=columns)
    out.index.name = "arm"
    return out


def verdict(table: EfficiencyTable) -> list[str]:
    """Plain sentences: unet's curve, and at each size the arms whose paired interval against unet
    lies above (helps) or below (hurts) zero; then whether guidance helps with few labels."""
    f = table.frame
    sizes = sorted(f["train_images"].unique())
    lines = []
    base = f[f["arm"] == BASELINE].set_index("train_images")["AUC"]
    if len(base):
        lines.append("unet's test mean AUC by training images: " + ", ".join(f"{n}: {base.get(n, float('nan')):.3f}" for n in sizes) + ".")  # fmt: skip
    for n in sizes:
        better, worse = [], []
        for arm in dict.fromkeys(f["arm"]):
            iv = table.intervals[(arm, n)]
            if arm != BASELINE and iv.excludes_zero():
                (better if iv.mean > 0 else worse).append(f"{arm} {iv.text(signed=True)}")
        lines.append(
            f"{n} images: better than unet (paired 95% CI above 0): {', '.join(better) or 'none'}"
            + (f"; worse: {', '.join(worse)}" if worse else "") + "."
        )  # fmt: skip
    if sizes:
        few = sizes[0]
        helped = [a for a in dict.fromkeys(f["arm"]) if a != BASELINE and table.intervals[(a, few)].excludes_zero() and table.intervals[(a, few)].mean > 0]  # fmt: skip
        if helped:
            lines.append(f"With the fewest labels ({few} images) guidance helps on the twin: {', '.join(helped)} beat unet.")  # fmt: skip
        else:
            lines.append(f"With the fewest labels ({few} images) guidance does not help on the twin: no arm beats unet with an interval above 0.")  # fmt: skip
    return lines


def _figure(frame: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    arms = list(dict.fromkeys(frame["arm"]))
    offsets = np.linspace(-0.06, 0.06, max(1, len(arms)))
    for arm, dx in zip(arms, offsets, strict=True):
        rows = frame[frame["arm"] == arm]
        x = np.log2(rows["train_images"].to_numpy(float)) + dx
        for ax, col in zip(axes, ("AUC", "vs unet"), strict=True):
            y = rows[col].to_numpy(float)
            err = np.vstack([y - rows[f"{col} low"], rows[f"{col} high"] - y])
            ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o-", capsize=3, label=arm)
    sizes = sorted(frame["train_images"].unique())
    for ax in axes:
        ax.set_xticks(np.log2(sizes), [str(n) for n in sizes])
        ax.set_xlabel("training images (log scale)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mean AUC, clean twin (95% CI)")
    axes[1].set_ylabel("arm - unet, paired by seed (95% CI)")
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[0].legend(fontsize=8)
    return save(fig, out)


def write_efficiency(
    record: Record, study: Study, out_dir: Path, data: Mapping | None = None
) -> EvidenceOutput:
    """The data-efficiency plan's ``data_efficiency.md`` / ``.csv``, figure and page."""
    trials = [t for t in study.trials if t.stage == Stage.EVIDENCE and AUC in t.metrics]
    table = efficiency_table(trials, list(study.arms))
    lines = verdict(table)
    return write_plan_files(study, out_dir, "data_efficiency", PlanFiles(
        heading="Data efficiency: test mean AUC against training images (clean twin)",
        title="Data efficiency: does gaze guidance help with few labels?",
        tables=[("Test mean AUC", table.auc_display), ("Paired difference against unet", table.diff_display)],
        frame=table.frame, figures=[_figure(table.frame, out_dir / "data_efficiency.png")],
        lines=lines, note=NOTE, table=table,
    ))  # fmt: skip
