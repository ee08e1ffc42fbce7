"""What the study prints: the per-arm results table (and the single trial's AUC table)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainables.config import CLASSES
from trainables.record import (
    AUC_COLUMNS,
    SELECTION_METRIC,
    STATUS_OK,
    metric_key,
    select_best,
)

if TYPE_CHECKING:
    from trainables import tracking


def format_ci(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(metric_key("test", key))
    if value is None or not math.isfinite(value):
        return "-"
    low = metrics.get(metric_key("test", key, "low"), math.nan)
    high = metrics.get(metric_key("test", key, "high"), math.nan)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def per_arm_table(records: Sequence[tracking.TrialRecord], arms: Sequence[str]) -> str:
    """Best search trial per arm (by best validation mean AUC): test per-class AUC with 95% CI."""
    header = [
        "arm",
        "trials ok/all",
        "best val AUC",
        "test mean AUC [95% CI]",
        *[f"{c} AUC" for c in CLASSES],
        "lr",
        "gamma",
        "seg_ratio",
    ]
    rows = [header]
    for arm in arms:
        mine = [r for r in records if r.arm == arm and r.stage == "search"]
        ok = [r for r in mine if r.status == STATUS_OK]
        best = select_best(ok, lambda r: r.metrics)
        if best is None:
            rows.append([arm, f"0/{len(mine)}"] + ["-"] * (len(header) - 2))
            continue
        rows.append(
            [
                arm,
                f"{len(ok)}/{len(mine)}",
                f"{best.metrics[SELECTION_METRIC]:.3f}",
                *[format_ci(best.metrics, k) for k in AUC_COLUMNS],
                *[f"{float(best.params.get(k, 'nan')):.3g}" for k in ("lr", "gamma", "seg_ratio")],
            ]
        )
    seeds = [r for r in records if r.stage == "seeds" and r.status == STATUS_OK]
    lines = format_rows(rows)
    if seeds:
        lines.append("")
        srows = [["arm", "seeds", "test mean AUC (mean +- sd over seeds)"]]
        for arm in arms:
            vals = [
                r.metrics[metric_key("test", "auc_mean")]
                for r in seeds
                if r.arm == arm and metric_key("test", "auc_mean") in r.metrics
            ]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                srows.append([arm, str(len(vals)), f"{statistics.mean(vals):.3f} +- {sd:.3f}"])
        lines += format_rows(srows)
    return "\n".join(lines)


def format_rows(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def auc_table(test: dict[str, float]) -> str:
    """Mean and per-class test AUC with 95% CI, one row each (the single trial's summary)."""
    rows = [["class", "test AUC [95% CI]"]]
    for key, name in zip(AUC_COLUMNS, ("mean", *CLASSES), strict=True):
        rows.append([name, format_ci(test, key)])
    return "\n".join(format_rows(rows))
