"""The verdict in words and tables: the selection sentence, the sentence generated from the
differences, the difference table (CSV and display) and ``verdict.md`` (``analysis.verdict``
computes the numbers)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.formats import format_p, markdown_table
from analysis.paper import ARM_LABELS
from trainables.record.selection import TIE_RULE

if TYPE_CHECKING:
    from analysis.verdict import ArmDifference, Verdict
    from trainables.record.trial import Trial

ALPHA = 0.05  # family-wise error rate of the Holm-adjusted comparisons
PRIMARY = "auc_mean"  # the verdict's endpoint: the mean AUC
LONG_AFTER = 4  # more AUC columns than this (REFLACX's findings): one row per arm and finding


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.3f}"


def format_difference(d: ArmDifference, key: str) -> str:
    """``+0.041 [+0.012, +0.070]``: the difference and its 95% interval."""
    e = d.interval[key]
    return f"{_fmt(d.point[key])} [{_fmt(e.low)}, {_fmt(e.high)}]"


def difference_header(v: Verdict) -> str:
    return f"test mean AUC − {v.baseline} [95% CI]"


def selection_text(v: Verdict) -> str:
    """Which arm the selection rule picks, with any tie and how it was broken."""
    t = v.selected
    if t is None:
        return "No arm has a finished trial: nothing is selected."
    text = (
        f"Selected by validation: {t.arm} (validation mean AUC {t.val_auc:.3f}, run "
        f"{t.run_id[:8]}; test mean AUC {_test_auc(t)})."
    )
    if v.tied:
        names = ", ".join(f"{o.arm} (run {o.run_id[:8]})" for o in v.tied)
        text += f" Tied on validation with {names}: {TIE_RULE}."
    if v.arm_ties:
        n = len(v.arm_ties)
        text += (
            f" {n} other trial{'s' * (n != 1)} of {t.arm} scored the same on validation; "
            f"{TIE_RULE}."
        )
    return text


def _test_auc(t: Trial) -> str:
    m = t.metrics
    value = m.get("test/auc_mean", math.nan)
    low, high = m.get("test/auc_mean_ci_low", math.nan), m.get("test/auc_mean_ci_high", math.nan)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" + (f" ({low:.3f}, {high:.3f})" if math.isfinite(low + high) else "")


def verdict_sentence(v: Verdict) -> str:
    """One plain sentence from the verdict's numbers and nothing else."""
    base = v.baseline
    if not v.differences:
        return f"No arm can be compared with {base}: {v.missing or 'nothing to compare'}."
    diffs = v.differences
    significant = [d for d in diffs if d.p_adjusted[PRIMARY] < ALPHA]
    if significant:
        parts = []
        for d in sorted(significant, key=lambda d: -d.point[PRIMARY]):
            e, p = d.interval[PRIMARY], format_p(d.p_adjusted[PRIMARY])
            if d.point[PRIMARY] > 0:
                parts.append(
                    f"{d.arm} beats {base} by {d.point[PRIMARY]:.3f} [{e.low:.3f}, {e.high:.3f}], "
                    f"adjusted p = {p}"
                )
            else:
                parts.append(
                    f"{d.arm} trails {base} by {-d.point[PRIMARY]:.3f} [{-e.high:.3f}, "
                    f"{-e.low:.3f}], adjusted p = {p}"
                )
        rest = len(diffs) - len(significant)
        tail = f"; no other arm differs from {base}" if rest else ""
        return "; ".join(parts) + tail + f" (Holm over {len(diffs)} arms, mean AUC)."
    widths = [
        (d.interval[PRIMARY].high - d.interval[PRIMARY].low) / 2
        for d in diffs
        if math.isfinite(d.interval[PRIMARY].high - d.interval[PRIMARY].low)
    ]
    closest = min(diffs, key=lambda d: (_nan_last(d.p_adjusted[PRIMARY]), _nan_last(d.p[PRIMARY])))
    size = f"{v.n_test} test images" + (f", {v.seeds_note}" if v.seeds_note else "")
    resolve = (
        f"the 95% intervals of the differences reach about ±{float(np.median(widths)):.2f}, so "
        "smaller differences cannot be resolved"
        if widths
        else "the differences have no interval"
    )
    return (
        f"No arm differs from {base} at this test size ({size}: {resolve}; smallest adjusted "
        f"p = {format_p(closest.p_adjusted[PRIMARY])}, {closest.arm})."
    )


def _nan_last(p: float) -> float:
    return p if math.isfinite(p) else math.inf


def differences_frame(v: Verdict) -> pd.DataFrame:
    """``differences.csv``: one row per arm compared, per AUC key the whole-test-set difference,
    its interval and its unadjusted and Holm-adjusted p."""
    rows = []
    for d in v.differences:
        row: dict[str, object] = {"arm": d.arm, "baseline": v.baseline, "seeds": d.seeds}
        for k in v.labels:
            e = d.interval[k]
            row |= {f"{k}_diff": d.point[k], f"{k}_low": e.low, f"{k}_high": e.high}
            row |= {f"{k}_p": d.p[k], f"{k}_p_holm": d.p_adjusted[k]}
        rows.append(row)
    columns = ["arm", "baseline", "seeds"]
    columns += [f"{k}_{c}" for k in v.labels for c in ("diff", "low", "high", "p", "p_holm")]
    return pd.DataFrame.from_records(rows, columns=columns)


def differences_display(v: Verdict) -> pd.DataFrame:
    """The difference table as display strings: per metric the difference [95% CI], then its
    Holm-adjusted p in a column of its own; of many classes (``LONG_AFTER``), one row per arm
    and class instead, so the table never widens past the page."""
    with_seeds = any(d.seeds > 1 for d in v.differences)
    if len(v.labels) > LONG_AFTER:
        rows = [
            [ARM_LABELS.get(d.arm, d.arm), *([str(d.seeds)] if with_seeds else []), label,
             format_difference(d, k), format_p(d.p_adjusted[k])]
            for d in v.differences for k, label in v.labels.items()
            if any(math.isfinite(e.point[k]) for e in v.differences)  # a finding with an AUC
        ]  # fmt: skip
        head = ["Arm", *(["Seeds"] if with_seeds else []), "AUC", f"− {v.baseline} [95% CI]", "p (Holm)"]  # fmt: skip
        return pd.DataFrame(rows, columns=head).set_index("Arm")
    columns = [c for label in v.labels.values() for c in (f"{label} − {v.baseline} [95% CI]",
                                                           f"{label}: p (Holm)")]  # fmt: skip
    data = {}
    for d in v.differences:
        cells = [str(d.seeds)] if with_seeds else []
        for k in v.labels:
            cells += [format_difference(d, k), format_p(d.p_adjusted[k])]
        data[ARM_LABELS.get(d.arm, d.arm)] = cells
    frame = pd.DataFrame.from_dict(
        data, orient="index", columns=(["Seeds"] if with_seeds else []) + columns
    )
    frame.index.name = "Arm"
    return frame


def differences_note(v: Verdict) -> str:
    """How the difference table was computed."""
    seeds = (
        f" {v.seeds_note[0].upper() + v.seeds_note[1:]}: runs are paired by seed, the difference "
        "is the mean over the paired seeds, and each resample also draws the seeds with "
        "replacement."
        if v.seeds_note
        else ""
    )
    return (
        f"Each arm's best trial (by validation) against {v.baseline}'s: the difference of the "
        f"{'one-vs-rest AUCs' if v.exclusive else 'AUCs per finding'} on the whole test set ({v.n_test} images), with the 2.5th-97.5th "
        f"percentile of the difference over the same {v.resamples} paired bootstrap resamples "
        f"of the test images as the AUC tables (seed {v.seed}).{seeds} p: two-sided paired-bootstrap "
        f"p of no difference, Holm-adjusted over the {len(v.differences)} arms compared, for "
        f"each column on its own (the verdict's endpoint is the mean AUC); unadjusted p-values "
        f"are in the AUC tables and differences.csv. {TIE_RULE.capitalize()}."
    )


def markdown_report(v: Verdict) -> str:
    """``verdict.md``: the verdict, the difference table and how it was computed."""
    parts = ["# Verdict", f"{v.selection} {v.sentence}"]
    if v.differences:
        parts += [markdown_table(differences_display(v)), differences_note(v)]
    return "\n\n".join(parts) + "\n"
