"""One self-contained HTML report of a study: configuration, Tables 1-4, seeds, explainability.

``python -m analysis.report --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Figures are embedded as base64 PNGs, so the single file opens anywhere (no network, no assets).
``write_report`` is what the study's ``make study`` calls at the end.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis.cli import run_cli
from analysis.figures import EXPLAIN_NOTE, FiguresOutput, explain_display, write_figures_from
from analysis.records import Record, Study
from analysis.tables import (
    TablesOutput,
    display_frame,
    method_note,
    seeds_display,
    seeds_note,
    write_tables_from,
)

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
p.note { font-size: 0.85em; color: #555; max-width: 70em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def _table(frame: pd.DataFrame, css_class: str) -> str:
    return frame.reset_index().to_html(escape=True, classes=css_class, border=0, index=False)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _config_section(record: Record, study: Study) -> list[str]:
    parts = ["<h2>Study configuration</h2>"]
    params = pd.DataFrame(sorted(study.params.items()), columns=["param", "value"])
    parts.append(_table(params, "config") if len(params) else _note("no params"))
    config = record.study_config(study.parent_run_id)
    if config is not None:
        text = json.dumps(config, indent=2, sort_keys=True)
        parts += ["<h3>study/config.json</h3>", f"<pre>{html.escape(text)}</pre>"]
    return parts


def render_html(
    record: Record, study: Study, tables: TablesOutput, figures: FiguresOutput, experiment: str
) -> str:
    """The report page as one HTML string."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Gaze-guided U-Net study {study.name or study.parent_run_id}"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _note(f"experiment {experiment}; study run {study.parent_run_id}; "
              f"{len(study.trials)} trial runs; tracking {record.tracking_uri}; generated {stamp}"),
    ]  # fmt: skip
    parts += ["<h2>Classification: Tables 1-4</h2>"]
    for t in tables.tables:
        parts += [f"<h3>Table {t.spec.number}. {html.escape(t.spec.title)}</h3>"]
        parts += [_table(display_frame(t), "auc"), _note(method_note(t))]
        parts += [
            "<h4>Our median vs the paper's</h4>",
            _table(display_frame(t, vs_paper=True), "paper"),
        ]
    parts += ["<h3>Seeds</h3>", _table(seeds_display(tables.seeds), "seeds")]
    parts += [_note(seeds_note(tables.seeds))]
    if figures.roc is not None:
        parts += ["<h3>ROC curves (best run per arm)</h3>", _img(figures.roc, "ROC curves")]
    parts += ["<h2>Explainability: map vs gaze</h2>"]
    parts += [_table(explain_display(figures.explain), "explain"), _note(EXPLAIN_NOTE)]
    parts += ["<h3>Heatmap panels</h3>"]
    parts += [_img(p, f"heatmap panel {p.stem}") for p in figures.panels] or [_note("no panels")]
    parts += _config_section(record, study)
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path | str,
    *,
    parent: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    log_to_mlflow: bool = True,
) -> Path:
    """Write tables, figures and ``report.html`` to ``out_dir``; log them to the parent run.

    Args:
        tracking_uri: MLflow URI (None: ``$MLFLOW_TRACKING_URI`` or ``<project>/mlflow.db``).
        experiment: the study's experiment name.
        out_dir: output folder (created).
        parent: study run id; None = the experiment's latest study run.

    Returns:
        The path of ``report.html``.
    """
    out_dir = Path(out_dir)
    record = Record(tracking_uri)
    study = record.study(experiment, parent)
    tables = write_tables_from(record, study, out_dir, resamples=resamples, seed=seed)
    figures = write_figures_from(record, study, out_dir, resamples=resamples, seed=seed)
    path = out_dir / REPORT_NAME
    path.write_text(render_html(record, study, tables, figures, experiment), encoding="utf-8")
    if log_to_mlflow:
        record.log_outputs(study.parent_run_id, [*tables.files, *figures.files, path])
    return path.resolve()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the report and print its path."""
    return run_cli("Self-contained HTML report of a study.", write_report, str, argv)


if __name__ == "__main__":
    raise SystemExit(main())
