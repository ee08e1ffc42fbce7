"""The scanning sweep's analysis: how each arm's resistance to a shortcut changes as the reader's
gaze covers more of the film (``study.evidence.ScanningPlan``).

Per scanning share (``scanning`` tag), the evidence table of that pair of twins
(``analysis.evidence.evidence_table``); then, per arm and share: the shortcut twin's test AUC,
the paired difference against ``unet`` and the share of ``unet``'s loss recovered (its interval:
the paired difference's, divided by ``unet``'s mean loss at that share). Whether the
density-weighted share degrades more gracefully than the thresholded one is read from two things:
how much of its recovered share it loses from the lowest to the highest scanning share, and the
paired difference density-share - rrr-share on the shortcut twin at each share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.evidence import (
    AUC,
    BASELINE,
    EvidenceOutput,
    Interval,
    by_seed,
    evidence_table,
    paired,
    percent,
    values,
)
from analysis.evidence_page import PlanFiles, save, write_plan_files
from trainables.record import TAG_SCANNING, TAG_TWIN, Stage
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

THRESHOLD_ARM, DENSITY_ARM = "rrr-share", "density-share"
NOTE = (
    "Each scanning share is its own pair of twins (the reader's share of fixations spread over the "
    "whole film, corners included: DataConfig.synthetic_scanning_share). Cells: mean over seeds "
    "[95% t-interval]. vs unet = arm - unet on that share's shortcut twin, paired by seed; "
    "recovered = that difference / unet's mean loss (clean - shortcut) at the same share, its "
    "interval the paired difference's interval divided by the same loss."
)


def share_of(t: Trial) -> float:
    return float(t.tags.get(TAG_SCANNING, "0"))


@dataclass
class ScanningTable:
    frame: pd.DataFrame  # one row per (share, arm): numbers
    display: pd.DataFrame  # arms x shares: "recovered (vs unet [CI])"
    auc_display: pd.DataFrame  # arms x shares: shortcut AUC [CI]
    density_vs_threshold: dict[float, Interval]  # share -> density - rrr on the shortcut twin


def scanning_table(trials: Sequence[Trial], arms: Sequence[str]) -> ScanningTable:
    """The sweep's numbers (module docstring) from the study's evidence-stage trials."""
    shares = sorted({share_of(t) for t in trials})
    rows = []
    density: dict[float, Interval] = {}
    for share in shares:
        mine = [t for t in trials if share_of(t) == share]
        table = evidence_table(mine, arms).frame.set_index("arm")
        base = table.loc[BASELINE] if BASELINE in table.index else None
        loss = base["clean AUC"] - base["shortcut AUC"] if base is not None else math.nan
        for arm in arms:
            r = table.loc[arm]
            diff = (r["vs unet (shortcut)"], r["vs unet (shortcut) low"], r["vs unet (shortcut) high"])  # fmt: skip
            ok = math.isfinite(loss) and loss > 0
            rec = [d / loss if ok else math.nan for d in diff]
            rows.append({
                "scanning": share, "arm": arm, "seeds": int(r["seeds"]),
                "clean AUC": r["clean AUC"], "shortcut AUC": r["shortcut AUC"],
                "shortcut AUC low": r["shortcut AUC low"], "shortcut AUC high": r["shortcut AUC high"],
                "unet loss": loss, "vs unet": diff[0], "vs unet low": diff[1], "vs unet high": diff[2],
                "recovered": rec[0], "recovered low": rec[1], "recovered high": rec[2],
            })  # fmt: skip
        runs = by_seed(mine)
        density[share] = paired(
            values(runs, (DENSITY_ARM, "shortcut")), values(runs, (THRESHOLD_ARM, "shortcut"))
        )
    frame = pd.DataFrame(rows)
    return ScanningTable(frame, _pivot(frame, _recovered_cell), _pivot(frame, _auc_cell), density)


def _recovered_cell(r: pd.Series) -> str:
    diff = Interval(r["vs unet"], r["vs unet low"], r["vs unet high"], int(r["seeds"]))
    return f"{percent(r['recovered'])} ({diff.text(signed=True)})"


def _auc_cell(r: pd.Series) -> str:
    return Interval(r["shortcut AUC"], r["shortcut AUC low"], r["shortcut AUC high"], 2).text()


def _pivot(frame: pd.DataFrame, cell) -> pd.DataFrame:
    out = frame.assign(cell=frame.apply(cell, axis=1), share=frame["scanning"].map("scanning {:g}".format))  # fmt: skip
    table = out.pivot(index="arm", columns="share", values="cell")
    return table.reindex(list(dict.fromkeys(frame["arm"])))


def verdict(table: ScanningTable) -> list[str]:
    """Plain sentences: unet's loss per share, where each arm falls below half, and whether the
    density weight degrades more gracefully than the threshold."""
    f = table.frame
    shares = sorted(f["scanning"].unique())
    lines = []
    base = f[f["arm"] == BASELINE]
    if len(base):
        lines.append("unet's loss to the shortcut per scanning share: " + ", ".join(
            f"{r['scanning']:g}: {r['unet loss']:+.3f}" for _, r in base.iterrows()) + ".")  # fmt: skip
    for arm in dict.fromkeys(f["arm"]):
        if arm == BASELINE:
            continue
        mine = f[f["arm"] == arm].set_index("scanning")["recovered"]
        below = [s for s in shares if not mine.get(s, math.nan) >= 0.5]
        trail = ", ".join(f"{s:g}: {percent(mine.get(s, math.nan))}" for s in shares)
        where = (
            f"below half from scanning {below[0]:g}" if below else "at least half at every share"
        )
        lines.append(f"{arm} recovers {trail} ({where}).")
    if {THRESHOLD_ARM, DENSITY_ARM} <= set(f["arm"]) and len(shares) > 1:
        lines.append(_graceful(f, shares, table.density_vs_threshold))
    return lines


def _graceful(f: pd.DataFrame, shares: list[float], diffs: Mapping[float, Interval]) -> str:
    rec = f.set_index(["arm", "scanning"])["recovered"]
    lo, hi = shares[0], shares[-1]
    drop = {a: rec.get((a, lo), math.nan) - rec.get((a, hi), math.nan) for a in (THRESHOLD_ARM, DENSITY_ARM)}  # fmt: skip
    last = diffs[hi]
    if drop[DENSITY_ARM] < drop[THRESHOLD_ARM] and last.excludes_zero() and last.mean > 0:
        call = "density-share degrades more gracefully"
    elif last.excludes_zero() and last.mean < 0:
        call = "density-share does worse than rrr-share at the highest share"
    else:
        call = "no difference between them that the seeds resolve at the highest share"
    return (
        f"From scanning {lo:g} to {hi:g}, rrr-share loses {percent(drop[THRESHOLD_ARM])} of "
        f"recovered share, density-share {percent(drop[DENSITY_ARM])}; density-share - rrr-share "
        f"on the shortcut twin at {hi:g}: {last.text(signed=True)}. Verdict: {call}."
    )


def _figure(frame: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, rows in frame.groupby("arm", sort=False):
        x = rows["scanning"].to_numpy(float)
        for ax, col in zip(axes, ("recovered", "shortcut AUC"), strict=True):
            y = rows[col].to_numpy(float)
            err = np.vstack([y - rows[f"{col} low"], rows[f"{col} high"] - y])
            ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o-", capsize=3, label=arm)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("share of unet's shortcut loss recovered")
    axes[1].set_ylabel("test mean AUC, shortcut twin (95% CI)")
    for ax in axes:
        ax.set_xlabel("scanning share of the reader's fixations")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return save(fig, out)


def write_scanning(
    record: Record, study: Study, out_dir: Path, data: Mapping | None = None
) -> EvidenceOutput:
    """The scanning sweep's ``scanning.md`` / ``.csv``, figure and ``scanning.html``."""
    trials = [t for t in study.trials if t.stage == Stage.EVIDENCE and AUC in t.metrics]
    trials = [t for t in trials if t.tags.get(TAG_TWIN)]
    table = scanning_table(trials, list(study.arms))
    lines = verdict(table)
    return write_plan_files(study, out_dir, "scanning", PlanFiles(
        heading="Scanning sweep: recovered share of unet's shortcut loss (vs unet [95% CI])",
        title="Scanning sweep: does guidance survive a reader who scans the film?",
        tables=[("Recovered share (vs unet)", table.display), ("Shortcut twin test AUC", table.auc_display)],
        frame=table.frame, figures=[_figure(table.frame, out_dir / "scanning_recovered.png")],
        lines=lines, note=NOTE, table=table,
    ))  # fmt: skip
