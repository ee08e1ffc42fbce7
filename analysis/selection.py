"""The selection plan's analysis: which configuration each rule picks without the test set, and
what that pick scores on it (``study.selection_plan``).

Every trial of the grid logged, each epoch, the validation mean AUC and the blind signals
(``trainables.blind_selection``). A trial's reading of a signal is its value at the epoch whose
weights were tested (``best/epoch``); a configuration's is the mean over its seeds. A RULE picks
the configuration with the highest reading (``blind_selection.choose_configuration``, ties by
name) among a POOL of configurations: each arm's grid, and every configuration together. Per
rule and pool:

- the pick, and its test mean AUC (mean over seeds, 95% t-interval);
- the oracle pick (the highest mean test AUC: what a study that peeked would choose) and the
  regret, oracle - pick, paired by seed;
- per seed: the rule applied to that seed's runs alone, and its regret against that seed's best.

``selection_rows`` reads the test AUC into its own column; ``rule_picks`` reads only the
validation columns, so the picks cannot depend on a test label (tests permute them to check).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.evidence import AUC, EvidenceOutput, Interval
from analysis.evidence_page import PlanFiles, save, write_plan_files
from trainables.record import (
    BEST_EPOCH,
    BLIND_SIGNALS,
    SEARCH_METRIC,
    SELECTION_METRIC,
    TAG_VARIANT,
    Stage,
    Status,
)
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

RULES: dict[str, str] = dict(
    zip(
        ("validation AUC", "masked validation AUC", "gaze agreement", "combination"),
        (SEARCH_METRIC, *BLIND_SIGNALS),
        strict=True,
    )
)
SIGNAL_COLUMNS: tuple[str, ...] = tuple(RULES.values())  # what a rule may read
TEST = "test AUC"  # the column no rule reads
ALL = "every configuration"
GOAL = 0.02  # issue 19: a rule's pick within this of the oracle's test AUC
NOTE = (
    "Shortcut twin (validation carries the shortcut; test breaks it). A configuration's reading "
    "of a signal: its mean over seeds at each trial's tested epoch (best validation AUC). Rule "
    "pick: the highest reading in the pool, from validation only. Oracle: the highest mean test "
    "AUC. Regret: oracle - pick test AUC, paired by seed [95% t-interval]. Per-seed regret: the "
    "rule applied to each seed's runs alone, against that seed's best test AUC."
)
SignalAt = Callable[[Trial, str], float]


def history_reader(record: Record) -> SignalAt:
    """``(trial, key) -> value`` of a per-epoch metric at the trial's tested epoch (nan if the
    trial did not log it then)."""

    def at_best(t: Trial, key: str) -> float:
        epoch = t.metrics.get(BEST_EPOCH, math.nan)
        if key == SEARCH_METRIC and SELECTION_METRIC in t.metrics:  # the tested epoch's, logged
            return float(t.metrics[SELECTION_METRIC])
        if not math.isfinite(epoch):
            return math.nan
        steps, vals = record.metric_history(t.run_id, key)
        hit = vals[steps == int(epoch)]
        return float(hit[-1]) if len(hit) else math.nan

    return at_best


def selection_rows(trials: Sequence[Trial], signal_at: SignalAt) -> pd.DataFrame:
    """One row per finished grid trial: variant, arm, seed, every rule's signal, and the test AUC."""
    rows = []
    for t in trials:
        if t.status != Status.OK or t.stage != Stage.EVIDENCE or AUC not in t.metrics:
            continue
        row = {"variant": t.tags.get(TAG_VARIANT, t.arm), "arm": t.arm}
        row["seed"] = int(float(t.params.get("seed", "0")))
        row.update({key: signal_at(t, key) for key in SIGNAL_COLUMNS})
        row[TEST] = float(t.metrics[AUC])
        rows.append(row)
    return pd.DataFrame(rows, columns=["variant", "arm", "seed", *SIGNAL_COLUMNS, TEST])


def pools(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each arm's configurations, and all of them (when there is more than one arm)."""
    out = {arm: part for arm, part in rows.groupby("arm", sort=False)}
    return {**out, ALL: rows} if len(out) > 1 else out


def _pick(rows: pd.DataFrame, key: str) -> str:
    from trainables.blind_selection import choose_configuration

    means = rows.groupby("variant")[key].mean()
    return choose_configuration({v: {key: float(m)} for v, m in means.items()}, key).chosen


def rule_picks(rows: pd.DataFrame) -> dict[tuple[str, str], str]:
    """``(pool, rule) -> picked variant``, from the validation columns only (never ``TEST``)."""
    blind = rows.drop(columns=[TEST])
    out = {}
    for pool, part in pools(blind).items():
        for rule, key in RULES.items():
            if part[key].notna().any():
                out[(pool, rule)] = _pick(part, key)
    return out


def _seed_regret(part: pd.DataFrame, key: str) -> Interval:
    regrets = []
    for _, one in part.groupby("seed"):
        one = one.sort_values("variant")  # ties: the first name, as choose_configuration
        if one[key].notna().any():
            chosen = one.loc[one[key].idxmax(), TEST]
            regrets.append(float(one[TEST].max() - chosen))
    return Interval.of(regrets)


@dataclass
class SelectionTable:
    frame: pd.DataFrame  # one row per (pool, rule)
    display: pd.DataFrame
    grid: pd.DataFrame  # one row per variant: mean of every signal and of the test AUC


def selection_table(rows: pd.DataFrame) -> SelectionTable:
    """Picks, their test AUC, the oracle's and the regret (module docstring)."""
    picks = rule_picks(rows)
    out, shown = [], []
    for pool, part in pools(rows).items():
        by_variant = {v: p.set_index("seed")[TEST] for v, p in part.groupby("variant")}
        oracle = max(sorted(by_variant), key=lambda v: by_variant[v].mean())
        for rule, key in RULES.items():
            chosen = picks.get((pool, rule))
            if chosen is None:
                continue
            test = Interval.of(by_variant[chosen].tolist())
            best = Interval.of(by_variant[oracle].tolist())
            gap = by_variant[oracle] - by_variant[chosen]  # paired by seed (index)
            regret = Interval.of(gap.dropna().tolist())
            per_seed = _seed_regret(part, key)
            out.append({
                "pool": pool, "rule": rule, "signal": key, "pick": chosen, "pick test AUC": test.mean,
                "oracle": oracle, "oracle test AUC": best.mean, "regret": regret.mean,
                "regret low": regret.low, "regret high": regret.high,
                "per-seed regret": per_seed.mean, "within goal": regret.mean <= GOAL,
            })  # fmt: skip
            shown.append({
                "pool": pool, "rule": rule, "pick": chosen, "pick test AUC": test.text(),
                "oracle": oracle, "oracle test AUC": best.text(),
                "regret (oracle - pick)": regret.text(signed=True),
                "per-seed regret": per_seed.text(signed=True),
                f"within {GOAL:g}": "yes" if regret.mean <= GOAL else "no",
            })  # fmt: skip
    grid = rows.groupby("variant")[[*SIGNAL_COLUMNS, TEST]].mean().round(3)
    return SelectionTable(pd.DataFrame(out), pd.DataFrame(shown).set_index("pool"), grid)


def verdict(table: SelectionTable) -> list[str]:
    """Plain sentences: which rules met the goal in which pool, the plain rule first."""
    f = table.frame
    lines = []
    for pool, part in f.groupby("pool", sort=False):
        parts = [f"{r['rule']} picks {r['pick']} (regret {r['regret']:+.3f})" for _, r in part.iterrows()]  # fmt: skip
        met = [r["rule"] for _, r in part.iterrows() if r["within goal"] and r["signal"] != SEARCH_METRIC]  # fmt: skip
        lines.append(
            f"{pool}: oracle {part['oracle'].iloc[0]} ({part['oracle test AUC'].iloc[0]:.3f}); "
            + "; ".join(parts) + ". Blind rules within "
            + f"{GOAL:g} of the oracle: {', '.join(met) or 'none'}."
        )  # fmt: skip
    return lines


def _figure(rows: pd.DataFrame, table: SelectionTable, out: Path) -> Path:
    means = rows.groupby("variant")[[*SIGNAL_COLUMNS, TEST]].mean()
    fig, axes = plt.subplots(1, len(RULES), figsize=(4.2 * len(RULES), 3.8), sharey=True)
    whole = table.frame[table.frame["pool"] == (ALL if ALL in set(table.frame["pool"]) else table.frame["pool"].iloc[0])]  # fmt: skip
    for ax, (rule, key) in zip(axes, RULES.items(), strict=True):
        ax.scatter(means[key], means[TEST], s=18, color="tab:blue")
        pick = whole.loc[whole["rule"] == rule, "pick"]
        if len(pick):
            v = pick.iloc[0]
            ax.scatter(means.loc[v, key], means.loc[v, TEST], s=90, facecolor="none",
                       edgecolor="tab:red", label=f"pick: {v}")  # fmt: skip
        oracle = means[TEST].idxmax()
        ax.axhline(means.loc[oracle, TEST], color="grey", ls="--", lw=0.8, label="oracle")
        ax.set_xlabel(f"{rule} ({key})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test mean AUC (mean over seeds)")
    return save(fig, out)


def write_selection(
    record: Record, study: Study, out_dir: Path, data: Mapping | None = None
) -> EvidenceOutput:
    """The selection plan's ``selection.md`` / ``.csv``, the grid, figure and page."""
    rows = selection_rows(study.trials, history_reader(record))
    if rows.empty:
        raise KeyError(f"study run {study.parent_run_id} has no finished selection trials")
    table = selection_table(rows)
    lines = verdict(table)
    rows.to_csv(out_dir / "selection_trials.csv", index=False)
    return write_plan_files(study, out_dir, "selection", PlanFiles(
        heading="Selection without the test set: each rule's pick against the oracle",
        title="Selection that does not peek: which rule picks a configuration that works?",
        tables=[("Each rule's pick", table.display), ("The grid (means over seeds)", table.grid)],
        frame=table.frame, figures=[_figure(rows, table, out_dir / "selection.png")],
        lines=lines, note=NOTE, table=table, extra=[out_dir / "selection_trials.csv"],
    ))  # fmt: skip
