"""Tables 1-4 as text: display frames, the method notes, Markdown and LaTeX.

The numbers come from :mod:`analysis.tables` (computing); this module only formats them, so the
report, the Markdown file and the LaTeX file show the same strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.formats import format_auc, format_p, markdown_table
from analysis.paper import ARM_LABELS, PAPER_SETTING, PUBLISHED
from analysis.tables import NO_TRIAL, Cell, SeedRow, Table


def format_cell(cell: Cell) -> str:
    """``AUC (2.5th, 97.5th)``: the whole-test-set AUC, as the ROC figure and results.csv give
    it, with the bootstrap percentile interval (the p-value has its own column)."""
    e = cell.estimate
    return f"{format_auc(cell.point)} ({format_auc(e.low)}, {format_auc(e.high)})"


def auc_column(label: str) -> str:
    return f"{label} (95% CI)"


def p_column(label: str) -> str:
    return f"{label}: p"


BASELINE_P = "reference"  # the p cell of the baseline row


LONG_AFTER = 4  # more AUC columns than this (REFLACX's findings): one row per arm and finding


def without_auc(table: Table) -> list[str]:
    """The metrics no arm has an AUC for (a finding with no positive, or no negative, test image:
    left out of a long table, named in its note)."""
    cells = [row.cells[m] for row in table.rows if row.cells for m in table.metrics]
    if not cells:
        return []
    return [
        m for m in table.metrics
        if all(not np.isfinite(row.cells[m].point) for row in table.rows if row.cells)
    ]  # fmt: skip


def _long_frame(table: Table, latex: bool) -> pd.DataFrame:
    """One row per arm and metric: the cell format of :func:`display_frame`, never wider than
    the page however many findings the task has."""
    rows = []
    shown = {m: name for m, name in table.labels.items() if m not in without_auc(table)}
    for row in table.rows:
        label = ARM_LABELS.get(row.arm, row.arm)
        for m, name in shown.items():
            c = row.cells.get(m)
            if c is None:
                rows.append([label, name, NO_TRIAL, "—"])
                continue
            p = BASELINE_P if c.p_value is None else format_p(c.p_value, latex)
            rows.append([label, name, format_cell(c), p])
    return pd.DataFrame(rows, columns=["Arm", "AUC", "AUC (95% CI)", "p"]).set_index("Arm")


def display_frame(table: Table, *, latex: bool = False) -> pd.DataFrame:
    """The table as display strings, in the paper's format: one row per arm; per metric the AUC
    with its interval, then its p-value against the baseline in a column of its own (of many
    classes, one row per arm and class: ``LONG_AFTER``)."""
    if len(table.metrics) > LONG_AFTER:
        return _long_frame(table, latex)
    columns = [c for m in table.metrics for c in (auc_column(table.labels[m]), p_column(table.labels[m]))]  # fmt: skip
    data = {}
    for row in table.rows:
        label = ARM_LABELS.get(row.arm, row.arm)
        if not row.cells:
            data[label] = [NO_TRIAL] + ["—"] * (len(columns) - 1)
            continue
        cells = []
        for m in table.metrics:
            c = row.cells[m]
            cells += [
                format_cell(c),
                BASELINE_P if c.p_value is None else format_p(c.p_value, latex),
            ]
        data[label] = cells
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm"
    return frame


def paper_frame(tables: Sequence[Table]) -> pd.DataFrame:
    """Ours beside the paper's published numbers, one row per arm (the baseline once): per metric
    our bootstrap median (the statistic the paper published), the paper's, and the paper's p.
    Only the paper's own tables (``spec.paper``) take part."""
    tables = [t for t in tables if t.spec.paper]
    labels = tables[0].labels if tables else {}
    columns = [f"{labels[m]}: {w}" for m in labels for w in ("ours", "paper", "paper p")]
    data = {}
    for t in tables:
        for row in t.rows:
            label = ARM_LABELS.get(row.arm, row.arm)
            if label in data:
                continue
            cells = []
            for m in labels:
                c, paper = row.cells.get(m), PUBLISHED.get(row.arm, {}).get(m)
                ours = format_auc(c.estimate.median) if c else NO_TRIAL
                cells += [ours, f"{paper.median:.3f}" if paper else "not in paper"]
                cells += [
                    BASELINE_P if paper and paper.p is None else format_p(paper.p) if paper else "—"
                ]
            data[label] = cells
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm"
    return frame


def study_setting(params: Mapping[str, str], n_test: int, resamples: int) -> str:
    """What our numbers come from, in the words of the paper comparison's caption."""
    dataset = {"egd-cxr": "EGD-CXR", "reflacx": "REFLACX"}.get(params.get("dataset", "egd-cxr"), params.get("dataset", ""))  # fmt: skip
    data = {"egd-cxr": "EGD-CXR"}.get(params.get("data", ""), params.get("data") or "unknown data")
    if data in ("synthetic", "egd-cxr", "reflacx"):
        data = f"the synthetic twin of {dataset}" if data == "synthetic" else dataset
    images = params.get("data/images")
    weights = params.get("encoder_weights")
    weights = "random initialisation" if weights in (None, "None", "none") else f"{weights} weights"
    return (
        f"{data}, {images + ' images' if images else 'image count not recorded'}, "
        f"{n_test} test images; {params.get('image_size', '?')} px, "
        f"{params.get('epochs', '?')} epochs, {params.get('encoder', '?')} with {weights}; "
        f"medians of {resamples} paired bootstrap resamples of the whole test set"
    )


def paper_caption(setting: str) -> str:
    """The caption that puts the two sets of numbers in context."""
    return (
        f"Ours and the paper's numbers come from different settings: ours: {setting}. The "
        f"paper's: {PAPER_SETTING}. Only large differences can say anything about the method; "
        "the paper's p-values test its arms against its own U-Net, ours are in Tables 1-4."
    )


def method_note(table: Table, exclusive: bool = True) -> str:
    """How the cells were computed, printed under each table."""
    runs = "; ".join(
        f"{r.arm}: run {r.trial.run_id} (val mean AUC {r.trial.val_auc:.3f})"
        for r in table.rows
        if r.trial is not None
    )
    note = (
        f"AUC (95% CI): {'one-vs-rest AUC' if exclusive else 'AUC per finding (present vs absent)'} on the whole test set ({table.n_test} images; the AUC of "
        f"the ROC figure and results.csv) with the 2.5th-97.5th percentile of the AUC over "
        f"{table.resamples} bootstrap resamples of the test images, the same resamples for every "
        f"arm (paired; seed {table.seed}; {table.skipped} resamples lacking a class skipped). "
        f"p: two-sided, against the U-Net baseline, unadjusted (the difference table above "
        f"adjusts for the arms compared): per-class AUCs by DeLong's test for paired AUCs (fast "
        f"DeLong, Sun & Xu 2014); mean AUC by the paired bootstrap of the difference. Each arm is "
        f"its best finished trial by validation mean AUC (test never used for selection). "
        f"Runs: {runs or 'none'}."
    )
    if table.rows[0].trial is None:
        note += " The baseline has no finished trial: no p-values."
    missing = without_auc(table) if len(table.metrics) > LONG_AFTER else []
    if missing:
        names = ", ".join(table.labels[m].removesuffix(" AUC") for m in missing)
        note += f" Left out, no AUC (no positive or no negative test image): {names}."
    return note


def seeds_display(rows: Sequence[SeedRow], labels: Mapping[str, str]) -> pd.DataFrame:
    """Mean ± sd [min, max] over seeds of each arm's best configuration, as display strings;
    ``labels``: AUC key -> column label, in column order."""

    def spread(a: np.ndarray) -> str:
        sd = f"{np.std(a, ddof=1):.3f}" if len(a) > 1 else "—"
        return f"{np.mean(a):.3f} ± {sd} [{np.min(a):.3f}, {np.max(a):.3f}]"

    if len(labels) > LONG_AFTER:
        long = [
            [ARM_LABELS.get(r.arm, r.arm), str(len(r.run_ids)), name, spread(r.aucs[m])]
            for r in rows for m, name in labels.items()
        ]  # fmt: skip
        return pd.DataFrame(long, columns=["Arm", "Seeds", "AUC", "over seeds"]).set_index("Arm")
    data = {
        ARM_LABELS.get(r.arm, r.arm): [str(len(r.run_ids)), *(spread(r.aucs[m]) for m in labels)]
        for r in rows
    }
    columns = ["Seeds", *labels.values()]
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm"
    return frame


def one_seed(rows: Sequence[SeedRow]) -> bool:
    """Every arm's best configuration ran with one seed: no spread to show."""
    return all(len(r.run_ids) == 1 for r in rows)


def seeds_note(rows: Sequence[SeedRow]) -> str:
    if not rows:
        return "No arm has a finished trial: no seeds to summarise."
    if one_seed(rows):
        seeds = sorted({s for r in rows for s in r.seeds})
        return (
            f"One seed per arm (seed {', '.join(seeds)}): no spread over seeds to show; each "
            "arm's numbers are those of its best trial above. Run the study with --seeds N to "
            "re-train each arm's best configuration with N more seeds."
        )
    return (
        "Whole-test-set AUC per run: mean ± sd [min, max] over the seeds of the arm's best config."
    )


def render_markdown(
    tables: Sequence[Table], seeds: Sequence[SeedRow], setting: str, exclusive: bool = True
) -> str:
    parts = []
    for t in tables:
        parts += [f"## Table {t.spec.number}. {t.spec.title}", markdown_table(display_frame(t))]
        parts += [method_note(t, exclusive)]
    if any(t.spec.paper for t in tables):
        parts += ["## Ours vs the paper", markdown_table(paper_frame(tables)), paper_caption(setting)]  # fmt: skip
    parts += ["## Seeds"]
    parts += (
        [seeds_note(seeds)]
        if one_seed(seeds)
        else [markdown_table(seeds_display(seeds, tables[0].labels)), seeds_note(seeds)]
    )
    return "\n\n".join(parts) + "\n"


def render_latex(tables: Sequence[Table]) -> str:
    parts = []
    for t in tables:
        frame = display_frame(t, latex=True)
        frame.index = [i.replace("&", r"\&") for i in frame.index]
        caption = f"Table {t.spec.number}: {t.spec.title}"
        parts.append(f"% {caption}\n" + frame.to_latex(escape=False, index=True))
    return "\n".join(parts)
