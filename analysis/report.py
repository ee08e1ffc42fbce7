"""One self-contained HTML report of a study that explains itself.

``python -m analysis.report --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

The page opens with the verdict (which arm the selection rule picks, with any tie; each arm's
paired difference in test AUC against ``unet`` with its 95% CI and Holm-adjusted p; one sentence
from those numbers: ``analysis.verdict``), then a table of contents, then the sections
(``analysis.report_sections.SECTIONS``): the best trial of each arm (hyperparameters it used, blank
where its loss reads none; validation and test AUCs; ``results.csv``) with the test set's AUC
resolution and arms that predicted identically; trials and wall time per arm; the data; Tables
1-4 with a p column, ours vs the paper with a caption naming both settings, seeds; ROC small
multiples; learning curves; DOCTOR misclassification detection; explainability and heatmap panels
(with a caption saying how to read them); the configuration that ran. Figures are embedded as
base64 PNGs shown 1:1 (at most 1,200 px wide), so the single file opens anywhere; tables fit a
1,280-px window and, with the print style (A4 landscape), the printed page. Run ids show their
first 8 characters and link to the MLflow UI. ``write_report`` is what the study calls at the end.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path

from analysis import html as h
from analysis.cli import run_cli
from analysis.report_context import RESULTS_NAME, ReportContext, build_context
from analysis.report_sections import PER_TRIAL, SECTIONS, Section, title, what_ran
from trainables.record import Kind
from trainables.record.reader import Record

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
__all__ = [
    "PER_TRIAL", "REPORT_NAME", "RESULTS_NAME", "ReportContext", "build_context", "render_html",
    "what_ran", "write_report",
]  # fmt: skip


def render_html(ctx: ReportContext, sections: Sequence[Section] = SECTIONS) -> str:
    """The report page as one HTML string."""
    body = "\n".join(part for section in sections for part in section(ctx))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title(ctx.study))}</title><style>{h.STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path | str,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> Path:
    """Write the verdict, tables, figures, ``results.csv`` and ``report.html`` to ``out_dir``
    (and, with ``log_to_mlflow``, to the parent run: the study does, a reader of the record need
    not).

    Args:
        tracking_uri: MLflow URI (None: ``$MLFLOW_TRACKING_URI`` or ``<project>/mlflow.db``).
        experiment: the study's experiment name.
        out_dir: output folder (created).
        parent: study run id; None = the experiment's latest study run.
        log_to_mlflow: log the outputs to the parent run under ``analysis/``.

    Returns:
        The path of ``report.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = Record(tracking_uri)
    study = record.study(experiment, parent)
    path = out_dir / REPORT_NAME
    if study.kind == Kind.EVIDENCE:
        # The evidence plan has no search: its report is the clean vs shortcut comparison.
        from analysis.evidence import write_evidence_from

        out = write_evidence_from(record, study, out_dir)
        path.write_text(out.report.read_text(encoding="utf-8"), encoding="utf-8")
        files = [*out.files, path]
    else:
        ctx = build_context(record, study, experiment, out_dir)
        path.write_text(render_html(ctx), encoding="utf-8")
        files = [*ctx.files, path]
    if log_to_mlflow:
        record.log_outputs(study, files)
    return path.resolve()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the report and print its path."""
    return run_cli("gaze-study report", "Self-contained HTML report of a study.", write_report, str, argv)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
