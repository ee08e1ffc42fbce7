"""Tables 1-4 of the paper, rebuilt from the study's MLflow record (the numbers; the text they are
shown as is :mod:`analysis.table_render`).

``python -m analysis.tables --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Each arm is represented by its best trial (``trainables.record.selection.best_of_arm``, chosen
on validation); its logged test predictions are bootstrapped together with the baseline's over the
same resamples, the study's own (``Study.bootstrap``: the trials' resamples and seed), so each
cell's interval is the one the trial logged. Writes ``tables.md`` (also printed: Tables 1-4 with a
p column, ours vs the paper with a caption naming both settings, seeds), ``tables.csv`` (long form,
with the paper's numbers beside ours), ``tables.tex`` and ``seeds.csv`` to ``--out`` (and to the
parent run with ``--log``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cli import run_cli, write_and_log
from analysis.paper import (
    BASELINE,
    PUBLISHED,
    PaperCell,
    TableSpec,
    metric_labels,
    table_arms,
    tables_for,
)
from analysis.stats import (
    ArmBootstrap,
    Estimate,
    align_arms,
    arm_bootstrap,
    delong_per_class,
    paired_difference,
)
from trainables.metrics import bootstrap_indices, per_class_auc
from trainables.record.files import labels_and_probs
from trainables.record.reader import Record, Study
from trainables.record.selection import seed_group
from trainables.record.trial import Trial
from trainables.task import Task

log = logging.getLogger(__name__)

NO_TRIAL = "no finished trial"


@dataclass(frozen=True)
class Cell:
    """One table cell: our bootstrap summary, the p-value vs the baseline and the paper's cell."""

    point: float  # AUC on the whole test set
    estimate: Estimate  # bootstrap median (low, high)
    p_value: float | None  # None on the baseline row
    p_method: str | None  # "DeLong" (per class) or "bootstrap" (mean AUC)
    p_bootstrap: float | None  # the paired-bootstrap p-value, also for the per-class cells
    difference: Estimate | None  # arm - baseline over the paired resamples
    paper: PaperCell | None


@dataclass(frozen=True)
class Row:
    """One arm of a table."""

    arm: str
    trial: Trial | None  # None: the arm has no finished trial
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Table:
    """One table (the paper's Tables 1-4, or a dataset's per-finding table), with how its
    bootstrap was run; ``labels``: AUC key -> column label, in column order."""

    spec: TableSpec
    rows: tuple[Row, ...]
    n_test: int
    resamples: int
    skipped: int
    seed: int
    labels: dict[str, str]

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.labels)


@dataclass(frozen=True)
class SeedRow:
    """An arm's best configuration over seeds: per-run test AUCs summarised."""

    arm: str
    run_ids: tuple[str, ...]
    seeds: tuple[str, ...]
    aucs: dict[str, np.ndarray]  # metric -> (n_runs,) whole-test-set AUCs


def _cells(
    arm: str,
    boots: dict[str, ArmBootstrap],
    labels: np.ndarray,
    probs: dict[str, np.ndarray],
    task: Task,
    published: dict[str, PaperCell],
) -> dict[str, Cell]:
    """An arm's cells; p-values and differences only against a baseline that has a trial."""
    boot, metrics = boots[arm], task.auc_columns
    if arm == BASELINE or BASELINE not in boots:
        return {
            m: Cell(boot.point[m], boot.estimates[m], None, None, None, None, published.get(m))
            for m in metrics
        }
    diffs = paired_difference(boot, boots[BASELINE])
    delong = delong_per_class(labels, probs[arm], probs[BASELINE], task)
    cells = {}
    for m in metrics:
        test = delong.get(m)  # None for the mean (and a class DeLong cannot handle)
        cells[m] = Cell(
            point=boot.point[m],
            estimate=boot.estimates[m],
            p_value=diffs[m].p_value if test is None else test.p_value,
            p_method="bootstrap" if test is None else "DeLong",
            p_bootstrap=diffs[m].p_value,
            difference=diffs[m].estimate,
            paper=published.get(m),
        )
    return cells


def build_tables(record: Record, study: Study) -> tuple[list[Table], dict[str, Trial | None]]:
    """The study's tables (``paper.tables_for``: Tables 1-4 on EGD-CXR, one per-finding table on
    another dataset) from its best trials, bootstrapped over one shared set of resamples.

    Returns:
        ``(tables, arm -> best trial or None)``.

    Raises:
        ValueError: the arms' test keys differ (see :func:`analysis.stats.align_arms`).
    """
    resamples, seed, task = study.bootstrap.resamples, study.bootstrap.seed, study.task
    specs = tables_for(study.dataset, study.arms)
    labels_of = metric_labels(task)
    best = study.best_of(table_arms(specs))
    present = {arm: t for arm, t in best.items() if t is not None}
    if not present:
        tables = [
            Table(s, tuple(Row(a, None, {}) for a in s.arms), 0, resamples, 0, seed, labels_of)
            for s in specs
        ]
        return tables, best
    frames = {arm: record.predictions(t.run_id, task) for arm, t in present.items()}
    _, labels, probs = align_arms(frames, task)
    # One set of resamples for every arm: each comparison is paired, and the baseline row reads the
    # same in all four tables.
    indices = bootstrap_indices(len(labels), resamples=resamples, seed=seed)
    boots = {arm: arm_bootstrap(labels, p, indices, task) for arm, p in probs.items()}
    skipped = next(iter(boots.values())).skipped
    if skipped:
        log.warning(
            "bootstrap: %d of %d resamples lacked a class and were skipped", skipped, resamples
        )
    tables = []
    for spec in specs:
        rows = []
        for arm in spec.arms:
            published = PUBLISHED.get(arm, {}) if spec.paper else {}
            cells = _cells(arm, boots, labels, probs, task, published) if best[arm] else {}
            rows.append(Row(arm, best[arm], cells))
        tables.append(Table(spec, tuple(rows), len(labels), resamples, skipped, seed, labels_of))
    return tables, best


def seed_rows(record: Record, study: Study, best: dict[str, Trial | None]) -> list[SeedRow]:
    """Per arm, the whole-test-set AUCs of every finished run of its best configuration."""
    task, rows = study.task, []
    for arm, trial in best.items():
        if trial is None:
            continue
        group = seed_group(study.trials, trial)
        aucs = [
            per_class_auc(*labels_and_probs(record.predictions(t.run_id, task), task), task)
            for t in group
        ]
        rows.append(
            SeedRow(
                arm=arm,
                run_ids=tuple(t.run_id for t in group),
                seeds=tuple(t.params.get("seed", "?") for t in group),
                aucs={m: np.array([a[m] for a in aucs]) for m in task.auc_columns},
            )
        )
    return rows


def long_frame(tables: Sequence[Table]) -> pd.DataFrame:
    """All cells in long form (one row per table, arm and metric), with the paper's numbers."""
    records = []
    for t in tables:
        for row in t.rows:
            for m in t.metrics:
                c = row.cells.get(m)
                paper = PUBLISHED.get(row.arm, {}).get(m) if t.spec.paper else None
                base = {"table": t.spec.number, "arm": row.arm, "metric": m, "n_test": t.n_test}
                base["run_id"] = row.trial.run_id if row.trial else None
                base["status"] = "ok" if c else NO_TRIAL
                if c:
                    d = c.difference
                    base |= {
                        "auc": c.point, "median": c.estimate.median, "low": c.estimate.low,
                        "high": c.estimate.high, "p_value": c.p_value, "p_method": c.p_method,
                        "p_bootstrap": c.p_bootstrap, "diff_median": d.median if d else None,
                        "diff_low": d.low if d else None, "diff_high": d.high if d else None,
                    }  # fmt: skip
                if paper:
                    base |= {
                        "paper_median": paper.median, "paper_low": paper.low,
                        "paper_high": paper.high, "paper_p": paper.p,
                        "vs_paper": c.estimate.median - paper.median if c else None,
                    }  # fmt: skip
                records.append(base)
    return pd.DataFrame.from_records(records)


def seeds_frame(rows: Sequence[SeedRow], metrics: Sequence[str]) -> pd.DataFrame:
    records = [
        {"arm": r.arm, "run_id": run, "seed": s} | {m: float(r.aucs[m][i]) for m in metrics}
        for r in rows
        for i, (run, s) in enumerate(zip(r.run_ids, r.seeds))
    ]
    return pd.DataFrame.from_records(records, columns=["arm", "run_id", "seed", *metrics])


@dataclass(frozen=True)
class TablesOutput:
    """What write_tables built and wrote."""

    tables: list[Table]
    best: dict[str, Trial | None]
    seeds: list[SeedRow]
    markdown: str
    files: list[Path]


def write_tables_from(record: Record, study: Study, out_dir: Path) -> TablesOutput:
    """Build the tables and write ``tables.md``, ``tables.csv``, ``tables.tex``, ``seeds.csv``."""
    if study.bootstrap.resamples < 1000:
        log.warning("%d bootstrap resamples: use >= 1000 for reported numbers", study.bootstrap.resamples)  # fmt: skip
    tables, best = build_tables(record, study)
    seeds = seed_rows(record, study, best)
    from analysis.table_render import render_latex, render_markdown, study_setting  # formats

    setting = study_setting(study.params, tables[0].n_test, study.bootstrap.resamples)
    markdown = render_markdown(tables, seeds, setting, study.task.exclusive)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / n for n in ("tables.md", "tables.csv", "tables.tex", "seeds.csv")]
    files[0].write_text(markdown)
    long_frame(tables).to_csv(files[1], index=False)
    files[2].write_text(render_latex(tables))
    seeds_frame(seeds, tables[0].metrics).to_csv(files[3], index=False)
    return TablesOutput(tables, best, seeds, markdown, files)


def write_tables(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> TablesOutput:
    """Tables of the study (latest, or ``parent``) written to ``out_dir`` (and the parent run)."""
    return write_and_log(write_tables_from, tracking_uri, experiment, out_dir, parent=parent, log_to_mlflow=log_to_mlflow)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the Markdown tables and the written files."""
    return run_cli(
        "gaze-study tables",
        "Rebuild the paper's Tables 1-4 (a per-finding table on another dataset) from the MLflow record.",
        write_tables,
        lambda out: out.markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
