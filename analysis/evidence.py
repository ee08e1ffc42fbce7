"""The evidence experiment's analysis: does an arm resist a shortcut, and does its map follow gaze?

``python -m analysis.evidence --tracking-uri URI --experiment gaze-unet-evidence [--parent RUN]``

Reads the trials of one evidence run (``study.evidence``: every arm x seeds x {clean, shortcut}
twins, runs tagged ``stage=evidence`` and ``twin``) and writes ``evidence.md`` / ``.csv``, three
figures and a self-contained ``evidence.html``. Per arm:

- test mean AUC on the clean and on the shortcut twin (mean over seeds, 95% t-interval);
- the AUC the shortcut costs, clean - shortcut, paired by seed;
- the paired difference against ``unet`` on the shortcut twin, and the share of ``unet``'s loss
  it recovers, ``(AUC_arm - AUC_unet) / (AUC_unet,clean - AUC_unet,shortcut)`` (from the means);
- map-vs-gaze CC / NSS of the arm's own generator map and of its decoder map on the shortcut
  twin's test images, and the paired difference of the generator map's CC against the SAME
  generator's map on ``no-seg`` (the probe maps every trial logs), so maps are compared like for
  like.

Seeds pair the runs: seed s of every arm shares the data split and the batch order's seed. The CIs
are over seeds (``mean +- t_{0.975, n-1} * sd / sqrt(n)``), so they say how much the conclusion
depends on the training run, not on the test images.

The other evidence-kind plans (issue 19) share these pieces (``Interval``, ``by_seed``,
``paired``, ``recovered``) and have their own writers beside this module: ``analysis.scanning``,
``analysis.efficiency``, ``analysis.selection``, ``analysis.border``. ``write_evidence_from``
picks the study's (``WRITERS``, by the parent's ``plan`` param); figures, the HTML page and the
evidence plan's own writer are in ``analysis.evidence_page``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from trainables.record import (
    PARAM_PLAN,
    TAG_TWIN,
    Stage,
    Status,
    explain_metric,
    metric_key,
)
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial

log = logging.getLogger(__name__)

BASELINE, MAP_BASELINE, CONTROL = "unet", "no-seg", "cutout"
TWINS = ("clean", "shortcut")
AUC = metric_key("test", "auc_mean")


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a 95% t-interval (nan bounds for fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
        if v.size == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = float(v.mean())
        if v.size < 2:
            return cls(mean, math.nan, math.nan, 1)
        half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
        return cls(mean, mean - half, mean + half, int(v.size))

    def excludes_zero(self) -> bool:
        return math.isfinite(self.low) and (self.low > 0 or self.high < 0)

    def text(self, signed: bool = False) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        fmt = "{:+.3f}" if signed else "{:.3f}"
        if not math.isfinite(self.low):
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def own_generator(arm: str) -> str:
    """The generator an arm's "generator" map is made with (``Arm.display_generator``)."""
    from trainables.model_sets import get_arm

    return get_arm(arm).display_generator


def twin_key(t: Trial) -> tuple[str, str]:
    """``(arm, twin)``: how the evidence table groups trials."""
    return t.arm, t.tags.get(TAG_TWIN, "")


def measured(t: Trial) -> bool:
    """A finished evidence-stage trial with its test AUC: what the plans' tables read."""
    return t.status == Status.OK and t.stage == Stage.EVIDENCE and AUC in t.metrics


def by_seed(
    trials: Sequence[Trial], key: Callable[[Trial], Any] = twin_key
) -> dict[Any, dict[int, Trial]]:
    """``key(trial)`` -> seed -> the finished evidence-stage trial (one per seed: a repeat is
    logged and the later run kept)."""
    out: dict[Any, dict[int, Trial]] = {}
    for t in trials:
        if not measured(t):
            continue
        k = key(t)
        seed = int(float(t.params.get("seed", "0")))
        if seed in out.setdefault(k, {}):
            log.warning("%s seed %d ran twice: keeping run %s", k, seed, t.run_id)
        out[k][seed] = t
    return out


def values(runs: Mapping[Any, dict[int, Trial]], key: Any, metric: str = AUC) -> dict[int, float]:
    """seed -> ``metric`` of the trials ``runs[key]`` (nan where a trial lacks it)."""
    return {s: float(t.metrics.get(metric, math.nan)) for s, t in runs.get(key, {}).items()}


def paired(a: dict[int, float], b: dict[int, float]) -> Interval:
    """``a - b`` over the seeds both have, as an Interval."""
    seeds = sorted(set(a) & set(b))
    return Interval.of([a[s] - b[s] for s in seeds])


def recovered(diff: float, loss: float) -> float:
    """The share of a baseline's ``loss`` that a difference ``diff`` over it recovers (nan when
    the baseline lost nothing)."""
    return diff / loss if math.isfinite(loss) and loss > 0 and math.isfinite(diff) else math.nan


def percent(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.0%}"


@dataclass
class EvidenceTable:
    """The numbers of the evidence experiment."""

    frame: pd.DataFrame  # one row per arm, numeric columns (for the CSV and the verdict)
    display: pd.DataFrame  # the same, formatted
    intervals: dict[tuple[str, str], Interval] = field(default_factory=dict)  # (arm, column)


def evidence_table(trials: Sequence[Trial], arms: Sequence[str]) -> EvidenceTable:
    """Compute the per-arm table (see the module docstring) from an evidence run's trials."""
    runs = by_seed(trials)

    def metric(arm: str, twin: str, key: str) -> dict[int, float]:
        return values(runs, (arm, twin), key)

    base_clean, base_sc = metric(BASELINE, "clean", AUC), metric(BASELINE, "shortcut", AUC)
    base_loss = Interval.of(base_clean.values()).mean - Interval.of(base_sc.values()).mean
    rows, shown, intervals = [], [], {}
    for arm in arms:
        clean, sc = metric(arm, "clean", AUC), metric(arm, "shortcut", AUC)
        gen = own_generator(arm)
        cells = {
            "clean AUC": Interval.of(clean.values()),
            "shortcut AUC": Interval.of(sc.values()),
            "AUC lost": paired(clean, sc),
            "vs unet (shortcut)": paired(sc, base_sc),
            "gen CC": Interval.of(
                metric(arm, "shortcut", explain_metric("generator", "cc")).values()
            ),
            "gen NSS": Interval.of(
                metric(arm, "shortcut", explain_metric("generator", "nss")).values()
            ),
            "dec CC": Interval.of(
                metric(arm, "shortcut", explain_metric("decoder", "cc")).values()
            ),
            "gen CC vs no-seg": paired(
                metric(arm, "shortcut", explain_metric("generator", "cc")),
                metric(MAP_BASELINE, "shortcut", explain_metric("probe", "cc", gen)),
            ),
            "gen CC (clean)": Interval.of(
                metric(arm, "clean", explain_metric("generator", "cc")).values()
            ),
        }
        share = recovered(cells["vs unet (shortcut)"].mean, base_loss)
        for col, iv in cells.items():
            intervals[(arm, col)] = iv
        row = {"arm": arm, "generator": gen, "seeds": min(len(clean), len(sc))}
        for col, iv in cells.items():
            row[col], row[f"{col} low"], row[f"{col} high"] = iv.mean, iv.low, iv.high
        row["unet loss recovered"] = share
        rows.append(row)
        signed = {"AUC lost", "vs unet (shortcut)", "gen CC vs no-seg"}
        shown.append(
            {
                "arm": arm,
                "map": gen,
                "seeds": row["seeds"],
                **{col: iv.text(signed=col in signed) for col, iv in cells.items()},
                "unet loss recovered": percent(share),
            }
        )
    return EvidenceTable(pd.DataFrame(rows), pd.DataFrame(shown).set_index("arm"), intervals)


def verdict(table: EvidenceTable) -> list[str]:
    """Plain sentences on what the numbers show (the goals of the experiment, checked)."""
    f = table.frame.set_index("arm")
    lines = []
    if BASELINE in f.index:
        b = f.loc[BASELINE]
        lines.append(
            f"unet: test mean AUC {b['clean AUC']:.3f} on the clean twin, {b['shortcut AUC']:.3f} "
            f"on the shortcut twin; the shortcut costs it {b['AUC lost']:+.3f} "
            f"(95% CI {b['AUC lost low']:+.3f} to {b['AUC lost high']:+.3f})."
        )
    resist = [
        a
        for a in f.index
        if a != BASELINE
        and table.intervals[(a, "vs unet (shortcut)")].excludes_zero()
        and f.loc[a, "vs unet (shortcut)"] > 0
    ]
    half = [a for a in resist if f.loc[a, "unet loss recovered"] >= 0.5]
    lines.append(
        "Arms better than unet on the shortcut twin (paired 95% CI over seeds above 0): "
        + (", ".join(f"{a} ({f.loc[a, 'unet loss recovered']:.0%} of unet's loss)" for a in resist)
           or "none")
        + "."
    )  # fmt: skip
    lines.append(
        "Of those, recovering at least half of what unet loses: "
        + (", ".join(half) or "none")
        + "."
    )
    worse = [
        a
        for a in f.index
        if a != BASELINE
        and table.intervals[(a, "vs unet (shortcut)")].excludes_zero()
        and f.loc[a, "vs unet (shortcut)"] < 0
    ]
    if worse:
        lines.append("Arms worse than unet on the shortcut twin: " + ", ".join(worse) + ".")
    maps = [
        a
        for a in f.index
        if a != MAP_BASELINE
        and table.intervals[(a, "gen CC vs no-seg")].excludes_zero()
        and f.loc[a, "gen CC vs no-seg"] > 0
    ]
    lines.append(
        "Arms whose own map agrees with gaze better than the same map of no-seg (paired CI > 0): "
        + (", ".join(maps) or "none")
        + "."
    )
    return lines


NOTE = (
    "Cells: mean over seeds [95% t-interval over seeds]. AUC lost = clean - shortcut, paired by "
    "seed. vs unet = arm - unet on the shortcut twin, paired by seed. unet loss recovered = (arm - "
    "unet) / (unet clean - unet shortcut), from the means. gen CC / NSS = the arm's own generator "
    "map (GBP for arms that train with none) against the gaze map on the shortcut twin's test "
    "images; dec CC = the decoder map (n/a for arms without a trained decoder). gen CC vs no-seg = "
    "the arm's map minus the same generator's map of no-seg, paired by seed. Hyperparameters are "
    "fixed (no search): validation carries the shortcut too."
)


def goal_lines(trials: Sequence[Trial], table: EvidenceTable) -> list[str]:
    """Issue 19's goals for the best guided arm (the highest recovered share; unet, no-seg and
    cutout aside): its difference against cutout on the shortcut twin and its clean cost against
    unet, both paired by seed."""
    f = table.frame.set_index("arm")
    guided = [a for a in f.index if a not in (BASELINE, MAP_BASELINE, CONTROL)]
    guided = [a for a in guided if math.isfinite(f.loc[a, "unet loss recovered"])]
    if not guided or CONTROL not in f.index or BASELINE not in f.index:
        return []
    best = max(guided, key=lambda a: f.loc[a, "unet loss recovered"])
    runs = by_seed(trials)
    vs = paired(values(runs, (best, "shortcut")), values(runs, (CONTROL, "shortcut")))
    cost = paired(values(runs, (best, "clean")), values(runs, (BASELINE, "clean")))
    share = percent(f.loc[best, "unet loss recovered"])
    met = "met" if vs.excludes_zero() and vs.mean > 0 else "not met"
    line = (
        f"Goals: the best guided arm, {best}, recovers {share} (goal >= 50%); against cutout on "
        f"the shortcut twin {vs.text(signed=True)} (goal: CI above 0: {met}); clean AUC against "
        f"unet {cost.text(signed=True)} (goal: no more than 0.01 lower)."
    )
    return [line]


@dataclass
class EvidenceOutput:
    """What a plan's report writer wrote: its markdown, its HTML page, every file, its table."""

    markdown: str
    report: Path
    files: list[Path]
    table: Any


REPORT_NAME = "report.html"  # the page a plan's conclusion logs, as a study's report is named
# plan registry name -> "module:function" writing its report from (record, study, out_dir, data)
WRITERS = {
    "evidence": "analysis.evidence_page:write_evidence",
    "scanning": "analysis.scanning:write_scanning",
    "data-efficiency": "analysis.efficiency:write_efficiency",
    "selection": "analysis.selection:write_selection",
    "border": "analysis.border:write_border",
}


def plan_of(study: Study) -> str:
    """The plan an evidence-kind study ran (its ``plan`` param; studies from before it: evidence,
    or the scanning sweep when they ran several scanning shares)."""
    plan = study.params.get(PARAM_PLAN, "evidence")
    if plan == "evidence" and "," in study.params.get("scanning", ""):
        return "scanning"
    return plan


def write_evidence_from(
    record: Record, study: Study, out_dir: Path, data: Mapping | None = None
) -> EvidenceOutput:
    """Write the report of an evidence-kind ``study`` into ``out_dir``: the writer of its plan
    (``WRITERS``). ``data`` (the plan's datasets by key) lets a writer measure the data too; a
    reader of the record alone passes none.

    Raises:
        KeyError: the study has no evidence-stage trial, or ran a plan without a writer.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if not any(t.stage == Stage.EVIDENCE for t in study.trials):
        raise KeyError(f"study run {study.parent_run_id} has no evidence trials (stage=evidence)")
    plan = plan_of(study)
    if plan not in WRITERS:
        raise KeyError(f"study run {study.parent_run_id} ran plan {plan!r}; valid: {', '.join(WRITERS)}")  # fmt: skip
    if not any(measured(t) for t in study.trials):
        from analysis.evidence_page import write_unmeasured  # (that module imports this one)

        return write_unmeasured(study, out_dir, plan.replace("-", "_"))
    module, _, function = WRITERS[plan].partition(":")
    return getattr(importlib.import_module(module), function)(record, study, out_dir, data)


def write_plan_report(
    tracking_uri: str, experiment: str, out_dir: Path, parent: str, data: Mapping | None = None
) -> EvidenceOutput:
    """What an evidence-kind plan's ``conclude`` does: write its report (``write_evidence_from``),
    copy the page to ``report.html`` and log every file to the parent run under ``analysis/``."""
    record = Record(tracking_uri)
    study = record.study(experiment, parent)
    out = write_evidence_from(record, study, out_dir, data)
    path = out_dir / REPORT_NAME
    path.write_text(out.report.read_text(encoding="utf-8"), encoding="utf-8")
    record.log_outputs(study, [*out.files, path])
    return dataclasses.replace(out, report=path.resolve())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.evidence``: the evidence report of a study (``gaze-study report`` on an
    evidence study writes the same page)."""
    from analysis.cli import run_cli, write_and_log

    def write(tracking_uri, experiment, out_dir, *, parent=None, log_to_mlflow=False):
        return write_and_log(write_evidence_from, tracking_uri, experiment, out_dir, parent=parent, log_to_mlflow=log_to_mlflow)  # fmt: skip

    return run_cli(
        "python -m analysis.evidence",
        "Tables and figures of the evidence plan.",
        write,
        lambda out: out.markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
