"""The border plan's analysis: which setting, if any, recovers more of the border shortcut without
costing clean AUC, on calibration seeds (``study.border``).

Per variant (``variant`` tag): test mean AUC on the clean and the border twin; the paired
difference against ``unet`` on the border twin and the share of ``unet``'s loss it recovers (its
interval: the difference's, divided by ``unet``'s mean loss); the clean-twin cost against
``unet``; and both twins against the default ``rrr-share`` (is the variant better than the
setting the evidence experiment used?). With the plan's datasets at hand (its ``conclude``), the
gaze's coverage of the border line's pixels on its train and validation images
(``analysis.shortcut_coverage.gaze_coverage``): is the line under the gaze at the thresholds tried?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.evidence import (
    AUC,
    EvidenceOutput,
    Interval,
    by_seed,
    paired,
    percent,
    recovered,
    values,
)
from analysis.evidence_page import PlanFiles, errorbars, save, write_plan_files
from trainables.record import TAG_TWIN, TAG_VARIANT, Stage
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

BASELINE, DEFAULT = "unet", "rrr-share"  # variant labels (study.border.VARIANTS)
CLEAN_COST = 0.01  # issue 19: the best method costs no more than this clean AUC
THRESHOLDS = (0.001, 0.01, 0.05, 0.1)
NOTE = (
    "Calibration seeds (not the evidence seeds). Cells: mean over seeds [95% t-interval]; "
    "differences paired by seed. recovered = (variant - unet) / (unet clean - unet border), from "
    "the means; its interval is the paired difference's divided by the same loss. A candidate "
    f"beats the default rrr-share on the border twin (interval above 0) and costs at most "
    f"{CLEAN_COST:g} clean AUC against unet; it is then to be tested on the evidence seeds, not "
    "chosen on them."
)


def variant_key(t: Trial) -> tuple[str, str]:
    return t.tags.get(TAG_VARIANT, t.arm), t.tags.get(TAG_TWIN, "")


@dataclass
class BorderTable:
    frame: pd.DataFrame
    display: pd.DataFrame
    intervals: dict[tuple[str, str], Interval]


def border_table(trials: Sequence[Trial], variants: Sequence[str]) -> BorderTable:
    """The per-variant numbers of the module docstring."""
    runs = by_seed(trials, variant_key)

    def auc(v: str, twin: str) -> dict[int, float]:
        return values(runs, (v, twin))

    base_loss = Interval.of(auc(BASELINE, "clean").values()).mean - Interval.of(auc(BASELINE, "shortcut").values()).mean  # fmt: skip
    rows, shown, intervals = [], [], {}
    for v in variants:
        cells = {
            "clean AUC": Interval.of(auc(v, "clean").values()),
            "border AUC": Interval.of(auc(v, "shortcut").values()),
            "vs unet (border)": paired(auc(v, "shortcut"), auc(BASELINE, "shortcut")),
            "clean vs unet": paired(auc(v, "clean"), auc(BASELINE, "clean")),
            "vs rrr-share (border)": paired(auc(v, "shortcut"), auc(DEFAULT, "shortcut")),
            "clean vs rrr-share": paired(auc(v, "clean"), auc(DEFAULT, "clean")),
        }
        diff = cells["vs unet (border)"]
        share = [recovered(x, base_loss) for x in (diff.mean, diff.low, diff.high)]
        row = {"arm": v, "seeds": cells["border AUC"].n, "recovered": share[0],
               "recovered low": share[1], "recovered high": share[2]}  # fmt: skip
        for col, iv in cells.items():
            row[col], row[f"{col} low"], row[f"{col} high"] = iv.mean, iv.low, iv.high
            intervals[(v, col)] = iv
        rows.append(row)
        signed = {"vs unet (border)", "clean vs unet", "vs rrr-share (border)", "clean vs rrr-share"}  # fmt: skip
        shown.append({"variant": v, "seeds": row["seeds"],
                      **{c: iv.text(signed=c in signed) for c, iv in cells.items()},
                      "recovered": percent(share[0])})  # fmt: skip
    frame = pd.DataFrame(rows)
    return BorderTable(frame, pd.DataFrame(shown).set_index("variant"), intervals)


def verdict(table: BorderTable) -> list[str]:
    """Plain sentences: unet's loss, each variant's recovered share, and the candidates."""
    f = table.frame.set_index("arm")
    lines = []
    if BASELINE in f.index:
        b = f.loc[BASELINE]
        lines.append(f"unet: clean {b['clean AUC']:.3f}, border {b['border AUC']:.3f}; the border costs it {b['clean AUC'] - b['border AUC']:+.3f}.")  # fmt: skip
    lines.append("Recovered share of unet's loss: " + ", ".join(f"{v} {percent(f.loc[v, 'recovered'])}" for v in f.index if v != BASELINE) + ".")  # fmt: skip
    half = [v for v in f.index if v != BASELINE and f.loc[v, "recovered"] >= 0.5]
    lines.append(f"At least half recovered: {', '.join(half) or 'none'}.")
    candidates = [
        v for v in f.index if v not in (BASELINE, DEFAULT)
        and table.intervals[(v, "vs rrr-share (border)")].excludes_zero()
        and f.loc[v, "vs rrr-share (border)"] > 0 and f.loc[v, "clean vs unet"] >= -CLEAN_COST
    ]  # fmt: skip
    named = [
        f"{v} ({f.loc[v, 'vs rrr-share (border)']:+.3f} on the border, "
        f"{f.loc[v, 'clean vs unet']:+.3f} clean)"
        for v in candidates
    ]
    lines.append(
        "Candidates (better than the default rrr-share on the border twin, interval above 0, and "
        f"at most {CLEAN_COST:g} clean AUC below unet): {', '.join(named) or 'none'}. Confirm one "
        "on the evidence seeds before adopting it."
    )
    return lines


def coverage_table(data: Mapping | None) -> pd.DataFrame | None:
    """Coverage of the border line by the gaze on the plan's own twins (None without them)."""
    if not data:
        return None
    from analysis.shortcut_coverage import gaze_coverage, shortcut_pixels
    from trainables.config import SPLITS

    clean = next((d for k, d in data.items() if str(k).startswith("clean")), None)
    twin = next((d for k, d in data.items() if str(k).startswith("shortcut")), None)
    if clean is None or twin is None:
        return None
    seen = np.isin(twin.split, (SPLITS.index("train"), SPLITS.index("val")))
    pixels = shortcut_pixels(clean, twin) & seen[:, None, None]
    cov = gaze_coverage(twin.gaze, pixels, THRESHOLDS)
    return pd.DataFrame([{k: round(v, 3) if isinstance(v, float) else v for k, v in cov.items()}])


def _figure(frame: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(frame) + 1.8))
    errorbars(axes[0], frame, ["recovered"], ["recovered share of unet's loss"], "share (95% CI)")
    axes[0].axvline(0.5, color="grey", ls="--", lw=0.8)
    errorbars(axes[1], frame, ["clean vs unet"], ["clean twin, vs unet"], "AUC difference (95% CI)")
    axes[1].axvline(-CLEAN_COST, color="grey", ls="--", lw=0.8)
    return save(fig, out)


def write_border(
    record: Record, study: Study, out_dir: Path, data: Mapping | None = None
) -> EvidenceOutput:
    """The border plan's ``border.md`` / ``.csv``, figure and page (coverage when ``data``)."""
    trials = [t for t in study.trials if t.stage == Stage.EVIDENCE and AUC in t.metrics]
    variants = [v for v in study.params.get("variants", "").split("; ") if v]
    variants = list(dict.fromkeys([*variants, *(variant_key(t)[0] for t in trials)]))
    table = border_table(trials, variants)
    lines = verdict(table)
    coverage = coverage_table(data)
    tables = [("Per variant", table.display)]
    tail = "\n\n(Gaze coverage: measured when the plan concludes; not from the record alone.)"
    if coverage is not None:
        tables.append(("Gaze coverage of the line (train and validation images of this plan's twins)", coverage.set_index("images")))  # fmt: skip
        tail = ""
    return write_plan_files(study, out_dir, "border", PlanFiles(
        heading="The border shortcut on calibration seeds",
        title="The border shortcut: what recovers more of it, at what clean cost?",
        tables=tables, frame=table.frame.rename(columns={"arm": "variant"}),
        figures=[_figure(table.frame, out_dir / "border.png")], lines=lines, note=NOTE,
        table=table, md_tail=tail,
    ))  # fmt: skip
