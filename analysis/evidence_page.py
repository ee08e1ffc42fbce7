"""Figures and the self-contained HTML page of the evidence plans (``analysis.evidence`` and the
plan reports beside it: ``scanning``, ``efficiency``, ``selection``, ``border``), and the
evidence plan's own writer (``write_evidence``).

``page`` is the one page layout: what the numbers show, the tables, a note, the figures inlined
as base64 PNGs, so a report is one file that opens anywhere (and in the MLflow UI).
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.evidence import (
    NOTE,
    EvidenceOutput,
    by_seed,
    evidence_table,
    goal_lines,
    verdict,
)
from analysis.formats import markdown_table
from trainables.record import Stage
from trainables.record.reader import Record, Study
from trainables.record.selection import failed_arms_note
from trainables.record.trial import Trial

log = logging.getLogger(__name__)

# The study params a page's header shows (those the plan logged).
SHOWN_PARAMS = ("plan", "shortcut", "shortcut_fraction", "shortcut_test", "seeds", "scanning",
                "train_sizes", "epochs", "image_size", "images", "encoder", "lr")  # fmt: skip


def save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def errorbars(ax, frame: pd.DataFrame, cols: Sequence[str], labels: Sequence[str], xlabel: str):
    """One row per ``frame["arm"]``: each column's mean with its ``<col> low``/``high`` bounds."""
    arms = list(frame["arm"])
    y = np.arange(len(arms))
    offsets = np.linspace(-0.18, 0.18, len(cols))
    for col, label, dy in zip(cols, labels, offsets, strict=True):
        mean = frame[col].to_numpy(float)
        err = np.vstack([mean - frame[f"{col} low"], frame[f"{col} high"] - mean])
        ax.errorbar(mean, y + dy, xerr=np.nan_to_num(err), fmt="o", capsize=3, label=label)
    ax.set_yticks(y, arms, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(cols))


def evidence_figures(
    record: Record, runs: dict, frame: pd.DataFrame, out: Path, prefix: str = "evidence"
) -> list[Path]:
    """The evidence table's AUC and map charts, and the shortcut twin's panels.

    Args:
        record: to read the panels' maps.
        runs: ``(arm, twin) -> seed -> Trial`` (``analysis.evidence.by_seed``).
        frame: ``EvidenceTable.frame``.
        out: folder of the PNGs (``<prefix>_auc.png``, ``_maps.png``, ``_panels.png``).
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    charts = {  # file: (columns, legend labels, x label)
        f"{prefix}_auc.png": (["clean AUC", "shortcut AUC"], ["clean twin", "shortcut twin"],
                              "test mean AUC (mean over seeds, 95% CI)"),
        f"{prefix}_maps.png": (["gen CC", "dec CC"], ["own generator map", "decoder map"],
                               "map-vs-gaze CC on the shortcut twin's test images (95% CI)"),
    }  # fmt: skip
    for name, (columns, labels, xlabel) in charts.items():
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(frame) + 1.6))
        errorbars(ax, frame, columns, labels, xlabel)
        paths.append(save(fig, out / name))
    chosen = {}
    for arm in frame["arm"]:
        per_seed = runs.get((arm, "shortcut"), {})
        if per_seed:
            chosen[arm] = per_seed[min(per_seed)]
    panel = _panels(record, chosen, out / f"{prefix}_panels.png")
    return [*paths, *([panel] if panel else [])]


def _panels(record: Record, chosen: dict[str, Trial], path: Path) -> Path | None:
    """Shortcut-twin test images (rows: image + gaze, then each arm's own map), lowest seed."""
    maps = {}
    for arm, trial in chosen.items():
        try:
            maps[arm] = record.maps(trial.run_id)
        except (KeyError, ValueError, FileNotFoundError) as err:
            log.warning("no panels for %s (run %s): %s", arm, trial.run_id, err)
    if not maps:
        return None
    first = next(iter(maps.values()))
    k = min(3, len(first["keys"]))
    if k == 0:
        return None
    fig, axes = plt.subplots(k, len(maps) + 1, figsize=(1.9 * (len(maps) + 1), 2.0 * k + 0.4),
                             squeeze=False)  # fmt: skip
    for i in range(k):
        ax = axes[i, 0]
        ax.imshow(first["image"][i], cmap="gray", vmin=0, vmax=1)
        ax.imshow(first["gaze"][i], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title("image + gaze" if i == 0 else "", fontsize=10)
        for j, (arm, arrays) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            ax.imshow(arrays["image"][i], cmap="gray", vmin=0, vmax=1)
            own = arrays.get("generator", arrays["gbp"])
            ax.imshow(own[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(arm, fontsize=10)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Shortcut twin, test images: each arm's own generator map (seed with lowest id)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def page(
    study: Study,
    title: str,
    lines: Sequence[str],
    tables: Sequence[tuple[str, pd.DataFrame]],
    note: str,
    figures: Sequence[Path],
) -> str:
    """The HTML page: header (study, its settings, when), the verdict lines, each ``(heading,
    table)``, the note, and the figures inlined."""
    settings = ", ".join(f"{k}={v}" for k, v in sorted(study.params.items()) if k in SHOWN_PARAMS)
    imgs = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(p.stem)}">'
        for p in figures
    )
    body = "".join(
        f"<h2>{html.escape(heading)}</h2>{table.reset_index().to_html(index=False, border=0)}"
        for heading, table in tables
    )
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(title)} {html.escape(study.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:80em;color:#222}}
table{{border-collapse:collapse;font-size:0.85em}}th,td{{border:1px solid #bbb;padding:.25em .5em}}
th{{background:#eee}}p.note{{font-size:.85em;color:#555}}img{{max-width:100%;margin:.5em 0}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p class="note">Study {html.escape(study.name)} (run {study.parent_run_id}); {html.escape(settings)};
written {now}.</p>
<h2>What the numbers show</h2><ul>{"".join(f"<li>{html.escape(x)}</li>" for x in lines)}</ul>
{body}<p class="note">{html.escape(note)}</p><h2>Figures</h2>{imgs}</body></html>
"""


@dataclass(frozen=True)
class PlanFiles:
    """What an evidence plan's report shows: ``heading`` over the first of ``tables`` (each other
    one under its name), ``md_tail``, the note and the verdict ``lines``; ``frame`` is the long
    CSV, ``figures`` are drawn already, ``extra`` files were written beside them."""

    heading: str
    title: str
    tables: Sequence[tuple[str, pd.DataFrame]]
    frame: pd.DataFrame
    figures: Sequence[Path]
    lines: Sequence[str]
    note: str
    table: object  # the plan's table object, returned in EvidenceOutput
    md_tail: str = ""
    extra: Sequence[Path] = ()


def write_plan_files(study: Study, out_dir: Path, stem: str, f: PlanFiles) -> EvidenceOutput:
    """What every evidence plan writes: ``<stem>.md``, ``<stem>.csv``, the figures, the extra
    files and ``<stem>.html`` (see :class:`PlanFiles`), with the arms that had no successful
    trial named among the lines."""
    lines, tables, note = list(f.lines), f.tables, f.note
    failed = failed_arms_note(study.trials, study.arms)
    lines += [failed] if failed else []
    parts = [f"## {f.heading}", markdown_table(tables[0][1])]
    for name, shown in tables[1:]:
        parts += [f"### {name}", markdown_table(shown)]
    md = "\n\n".join(parts) + f.md_tail + f"\n\n{note}\n\n" + "\n".join(f"- {x}" for x in lines) + "\n"  # fmt: skip
    (out_dir / f"{stem}.md").write_text(md)
    f.frame.to_csv(out_dir / f"{stem}.csv", index=False)
    report = out_dir / f"{stem}.html"
    report.write_text(page(study, f.title, lines, tables, note, f.figures))
    files = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv", *f.extra, *f.figures, report]
    return EvidenceOutput(md, report, files, f.table)


def write_unmeasured(study: Study, out_dir: Path, stem: str) -> EvidenceOutput:
    """The page of a plan none of whose trials produced a test AUC (every trial failed or was
    stopped): the same files as the plan's own writer, each arm named with why, no numbers."""
    arms = pd.DataFrame(index=pd.Index(list(study.arms), name="arm"))
    return write_plan_files(study, out_dir, stem, PlanFiles(
        heading="No trial produced a test AUC", title=f"{study.name}: nothing was measured",
        tables=[("Arms", arms)], frame=arms.reset_index(), figures=[],
        lines=["No trial of this plan produced a test AUC: there is nothing to compare."],
        note="", table=None,
    ))  # fmt: skip


def write_evidence(
    record: Record, study: Study, out_dir: Path, data: Mapping | None = None
) -> EvidenceOutput:
    """The evidence plan's report: ``evidence.md`` / ``.csv``, three figures, ``evidence.html``."""
    trials = [t for t in study.trials if t.stage == Stage.EVIDENCE]
    table = evidence_table(trials, list(study.arms))
    lines = verdict(table) + goal_lines(trials, table)
    figures = evidence_figures(record, by_seed(trials), table.frame, out_dir)
    return write_plan_files(study, out_dir, "evidence", PlanFiles(
        heading="Evidence experiment: clean vs shortcut twin",
        title="Evidence experiment: does gaze guidance resist a shortcut?",
        tables=[("Per arm", table.display)], frame=table.frame, figures=figures, lines=lines,
        note=NOTE, table=table,
    ))  # fmt: skip
