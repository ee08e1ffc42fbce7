"""Tables 1-4 as text: display frames, the method notes, Markdown and LaTeX.

The numbers come from :mod:`analysis.tables` (computing); this module only formats them, so the
report, the Markdown file and the LaTeX file show the same strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.formats import format_auc, format_p, markdown_table
from analysis.paper import ARM_LABELS, METRIC_LABELS, METRICS
from analysis.tables import NO_TRIAL, Cell, SeedRow, Table


def format_cell(cell: Cell, latex: bool = False) -> str:
    """``AUC (2.5th, 97.5th); p`` (no p on the baseline row): the whole-test-set AUC, as the ROC
    figure and results.csv give it, with the bootstrap percentile interval."""
    e = cell.estimate
    text = f"{format_auc(cell.point)} ({format_auc(e.low)}, {format_auc(e.high)})"
    return text if cell.p_value is None else f"{text}; {format_p(cell.p_value, latex)}"


def format_vs_paper(cell: Cell) -> str:
    """Our bootstrap median against the paper's (the statistic it published), with the
    difference."""
    if cell.paper is None:
        return "not in paper"
    diff = cell.estimate.median - cell.paper.median
    return f"{format_auc(cell.estimate.median)} vs {cell.paper.median:.3f} ({diff:+.3f})"


def display_frame(table: Table, *, latex: bool = False, vs_paper: bool = False) -> pd.DataFrame:
    """The table as display strings: one row per arm, one column per metric."""
    data = {}
    for row in table.rows:
        label = ARM_LABELS.get(row.arm, row.arm)
        if not row.cells:
            data[label] = [NO_TRIAL] + ["—"] * (len(METRICS) - 1)
        else:
            fmt = format_vs_paper if vs_paper else (lambda c: format_cell(c, latex))
            data[label] = [fmt(row.cells[m]) for m in METRICS]
    frame = pd.DataFrame.from_dict(
        data, orient="index", columns=[METRIC_LABELS[m] for m in METRICS]
    )
    frame.index.name = "Arm"
    return frame


def method_note(table: Table) -> str:
    """How the cells were computed, printed under each table."""
    runs = "; ".join(
        f"{r.arm}: run {r.trial.run_id} (val mean AUC {r.trial.val_auc:.3f})"
        for r in table.rows
        if r.trial is not None
    )
    note = (
        f"Cells: one-vs-rest AUC on the whole test set ({table.n_test} images; the AUC of the ROC "
        f"figure and results.csv) with the 2.5th-97.5th percentile of the AUC over "
        f"{table.resamples} bootstrap resamples of the test images, the same resamples for every "
        f"arm (paired; seed {table.seed}; {table.skipped} resamples lacking a class skipped). The "
        f"comparison with the paper uses the bootstrap median, the statistic the paper published "
        f"(tables.csv has both). p (two-sided, vs "
        f"the U-Net baseline): per-class AUCs by DeLong's test for paired AUCs (fast DeLong, Sun & "
        f"Xu 2014); mean AUC by the paired bootstrap of the difference. Each arm is its best "
        f"finished trial by validation mean AUC (test never used for selection). "
        f"Runs: {runs or 'none'}."
    )
    if table.rows[0].trial is None:
        note += " The baseline has no finished trial: no p-values."
    return note


def seeds_display(rows: Sequence[SeedRow]) -> pd.DataFrame:
    """Mean ± sd [min, max] over seeds of each arm's best configuration, as display strings."""
    data = {}
    for r in rows:
        cells = [str(len(r.run_ids))]
        for m in METRICS:
            a = r.aucs[m]
            sd = f"{np.std(a, ddof=1):.3f}" if len(a) > 1 else "—"
            cells.append(f"{np.mean(a):.3f} ± {sd} [{np.min(a):.3f}, {np.max(a):.3f}]")
        data[ARM_LABELS.get(r.arm, r.arm)] = cells
    columns = ["Seeds"] + [METRIC_LABELS[m] for m in METRICS]
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm"
    return frame


def seeds_note(rows: Sequence[SeedRow]) -> str:
    note = (
        "Whole-test-set AUC per run: mean ± sd [min, max] over the seeds of the arm's best config."
    )
    if rows and all(len(r.run_ids) == 1 for r in rows):
        note += " Every arm has one seed: run the study's seeds stage for a spread."
    return note


def render_markdown(tables: Sequence[Table], seeds: Sequence[SeedRow]) -> str:
    parts = []
    for t in tables:
        parts += [f"## Table {t.spec.number}. {t.spec.title}", markdown_table(display_frame(t))]
        parts += [method_note(t), f"### Table {t.spec.number}, our median vs the paper's"]
        parts += [markdown_table(display_frame(t, vs_paper=True))]
    parts += ["## Seeds", markdown_table(seeds_display(seeds)), seeds_note(seeds)]
    return "\n\n".join(parts) + "\n"


def render_latex(tables: Sequence[Table]) -> str:
    parts = []
    for t in tables:
        frame = display_frame(t, latex=True)
        frame.index = [i.replace("&", r"\&") for i in frame.index]
        caption = f"Table {t.spec.number}: {t.spec.title}"
        parts.append(f"% {caption}\n" + frame.to_latex(escape=False, index=True))
    return "\n".join(parts)
