"""One self-contained HTML report of a study that explains itself.

``python -m analysis.report --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Sections (``SECTIONS``, in page order; each a small function of the ``ReportContext``): the best
trial of each arm (hyperparameters, validation and test AUCs, ``results.csv``) with the test set's
AUC resolution and arms that predicted identically; trials and wall time per arm; the data; Tables
1-4 and seeds; ROC curves; learning curves; DOCTOR misclassification detection; explainability and
heatmap panels; the configuration that ran. Figures are embedded as base64 PNGs shown 1:1, so the
single file opens anywhere. Run ids link to the MLflow UI when the tracking server is HTTP(S).
``write_report`` is what the study calls at the end.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import html as h
from analysis.cli import run_cli
from analysis.curves import CURVES_NOTE, arm_trials, curves_figure, has_curves
from analysis.data_summary import DataSummary, data_summary
from analysis.doctor import DoctorOutput, doctor_display, doctor_note, write_doctor_from
from analysis.figures import (
    EXPLAIN_NOTE,
    ROC_NOTE,
    FiguresOutput,
    explain_display,
    write_figures_from,
)
from analysis.paper import table_arms
from analysis.results import (
    arm_summaries,
    best_display,
    identical_groups,
    resolution_note,
    results_frame,
    trials_display,
)
from analysis.stats import align_arms
from analysis.table_render import display_frame, method_note, seeds_display, seeds_note
from analysis.tables import TablesOutput, write_tables_from
from trainables.record import PROB_COLUMNS, Kind
from trainables.record.reader import Record, Study

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
RESULTS_NAME = "results.csv"
PER_TRIAL = "per trial: see the best trial of each arm"  # replaces searched template fields
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
p.note { font-size: 0.85em; color: #555; max-width: 70em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; margin: 0.4em 0; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


@dataclass(frozen=True)
class ReportContext:
    """Everything the sections draw on, computed once."""

    record: Record
    study: Study
    experiment: str
    tables: TablesOutput
    figures: FiguresOutput
    doctor: DoctorOutput
    results: pd.DataFrame  # results.csv
    results_path: Path
    curves: Path | None
    data: DataSummary
    labels: np.ndarray | None  # test labels in key order (None without a finished arm)
    identical: list[tuple[str, ...]]
    link: h.Linker


def _header(ctx: ReportContext) -> list[str]:
    study = ctx.study
    title = f"Gaze-guided U-Net study {study.name or study.parent_run_id}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        h.heading(1, title),
        h.note(f"experiment {ctx.experiment}; study run {study.parent_run_id}; "
               f"{len(study.trials)} trial runs; tracking {ctx.record.tracking_uri}; generated "
               f"{stamp}", ctx.link),
    ]  # fmt: skip


def _best_section(ctx: ReportContext) -> list[str]:
    parts = [h.heading(2, "Best trial of each arm", "best")]
    parts += [h.table(best_display(ctx.results), "best", ctx.link)]
    parts += [
        h.note(
            "The best trial of an arm has the highest validation mean AUC of its best epoch (the "
            "test set is never used to choose). Searched: the hyperparameters the arm's search "
            "varied (the parent run's space/<arm> params); the others were fixed (see the "
            "configuration). Test AUCs: whole test set, with the 2.5th-97.5th percentile over the "
            "bootstrap resamples of Tables 1-4."
        )
    ]
    if ctx.labels is not None:
        parts += [h.note(resolution_note(ctx.labels, ctx.identical))]
    parts += [h.links_note([ctx.results_path])]
    return parts


def _trials_section(ctx: ReportContext) -> list[str]:
    return [
        h.heading(2, "Trials and wall time per arm", "trials"),
        h.table(trials_display(ctx.results), "trials"),
        h.note(
            "Trials by status: finished, stopped early by ASHA, diverged (non-finite loss), "
            "failed (error), still running. Trial time: the summed wall time of the arm's trial "
            "runs (trials of an arm may run at the same time); wall time: from the first trial's "
            "start to the last one's end."
        ),
    ]


def _data_section(ctx: ReportContext) -> list[str]:
    d = ctx.data
    parts = [h.heading(2, "Data", "data"), h.table(d.splits, "splits")]
    if d.exclusions is not None:
        parts += [h.heading(3, "Exclusions"), h.table(d.exclusions, "exclusions")]
    else:
        parts += [h.note("Exclusions: not recorded.")]
    if d.other:
        other = pd.DataFrame(sorted(d.other.items()), columns=["field", "value"]).set_index("field")
        parts += [h.table(other, "data-other")]
    return parts + [h.note(d.source)]


def _tables_section(ctx: ReportContext) -> list[str]:
    parts = [h.heading(2, "Classification: Tables 1-4", "tables")]
    for t in ctx.tables.tables:
        parts += [h.heading(3, f"Table {t.spec.number}. {t.spec.title}")]
        parts += [h.table(display_frame(t), "auc"), h.note(method_note(t), ctx.link)]
        parts += [
            h.heading(4, "Our bootstrap median vs the paper's"),
            h.table(display_frame(t, vs_paper=True), "paper"),
        ]
    parts += [h.heading(3, "Seeds"), h.table(seeds_display(ctx.tables.seeds), "seeds")]
    return parts + [h.note(seeds_note(ctx.tables.seeds))]


def _roc_section(ctx: ReportContext) -> list[str]:
    if ctx.figures.roc is None:
        return []
    return [
        h.heading(3, "ROC curves (best run per arm)", "roc"),
        h.img(ctx.figures.roc, "ROC curves"),
        h.note(ROC_NOTE),
    ]


def _curves_section(ctx: ReportContext) -> list[str]:
    parts = [h.heading(2, "Learning curves", "curves")]
    if ctx.curves is None:
        return parts + [h.note("No trial logged a per-epoch metric.")]
    return parts + [h.img(ctx.curves, "learning curves per arm"), h.note(CURVES_NOTE)]


def _doctor_section(ctx: ReportContext) -> list[str]:
    d = ctx.doctor
    parts = [h.heading(2, "Which predictions to trust: DOCTOR", "doctor")]
    if d.frame.empty:
        return parts + [h.note("No arm has a finished trial.")]
    parts += [h.table(doctor_display(d.frame), "doctor")]
    if d.figure is not None:
        parts += [h.img(d.figure, "risk-coverage curves")]
    return parts + [
        h.note(doctor_note(d.frame, ctx.study.bootstrap.resamples, ctx.study.bootstrap.seed))
    ]


def _explain_section(ctx: ReportContext) -> list[str]:
    parts = [h.heading(2, "Explainability: map vs gaze", "explain")]
    parts += [h.table(explain_display(ctx.figures.explain), "explain"), h.note(EXPLAIN_NOTE)]
    parts += [h.heading(3, "Heatmap panels")]
    panels = [h.img(p, f"heatmap panel {p.stem}") for p in ctx.figures.panels]
    return parts + (panels or [h.note("no panels")])


def what_ran(config: dict[str, Any], study: Study) -> tuple[dict[str, Any], list[str]]:
    """The study config with the trial template's fields that trials did not share replaced by
    ``PER_TRIAL`` (the arm, searched hyperparameters, seeds); returns it and those field names."""
    template = config.get("trial")
    if not isinstance(template, dict) or not study.trials:
        return config, []

    def norm(v: Any) -> str:
        return str(tuple(v)) if isinstance(v, list) else str(v)

    varied = []
    for key, value in template.items():
        seen = {t.params[key] for t in study.trials if key in t.params}
        if len(seen) > 1 or (len(seen) == 1 and seen != {norm(value)}):
            varied.append(key)
    shown = dict(config)
    shown["trial"] = {k: (PER_TRIAL if k in varied else v) for k, v in template.items()}
    return shown, varied


def _config_section(ctx: ReportContext) -> list[str]:
    study = ctx.study
    parts = [h.heading(2, "Study configuration (what ran)", "config")]
    params = pd.DataFrame(sorted(study.params.items()), columns=["param", "value"])
    parts.append(
        h.table(params.set_index("param"), "config") if len(params) else h.note("no params")
    )
    config = ctx.record.study_config(study.parent_run_id)
    if config is None:
        return parts + [h.note("The study run has no study/config.json.")]
    shown, varied = what_ran(config, study)
    parts += [
        h.heading(3, "study/config.json"),
        h.preformatted(json.dumps(shown, indent=2, sort_keys=True)),
    ]
    if varied:
        parts += [
            h.note(
                f"Trial fields that differed between trials ({', '.join(varied)}) are shown as "
                f"'{PER_TRIAL}': the file holds only the template the search started from."
            )
        ]
    return parts


Section = Callable[[ReportContext], list[str]]
SECTIONS: tuple[Section, ...] = (
    _header,
    _best_section,
    _trials_section,
    _data_section,
    _tables_section,
    _roc_section,
    _curves_section,
    _doctor_section,
    _explain_section,
    _config_section,
)


def render_html(ctx: ReportContext, sections: Sequence[Section] = SECTIONS) -> str:
    """The report page as one HTML string."""
    title = f"Gaze-guided U-Net study {ctx.study.name or ctx.study.parent_run_id}"
    body = "\n".join(part for section in sections for part in section(ctx))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def build_context(record: Record, study: Study, experiment: str, out_dir: Path) -> ReportContext:
    """Compute every table and figure of the report, writing them to ``out_dir``."""
    tables = write_tables_from(record, study, out_dir)
    figures = write_figures_from(record, study, out_dir)
    doctor = write_doctor_from(record, study, out_dir)
    summaries = arm_summaries(study, tables.best, table_arms())
    results = results_frame(summaries, tables.tables)
    results_path = out_dir / RESULTS_NAME
    results.to_csv(results_path, index=False)
    trials = arm_trials(study, [s.arm for s in summaries])
    curves = (
        curves_figure(record, trials, tables.best, out_dir) if has_curves(record, trials) else None
    )
    present = {a: record.predictions(t.run_id) for a, t in tables.best.items() if t is not None}
    labels, identical = None, []
    if present:
        _, labels, probs = align_arms(present, PROB_COLUMNS)
        identical = identical_groups(probs)
    run_ids = frozenset([study.parent_run_id, *(t.run_id for t in study.trials)])
    return ReportContext(
        record=record,
        study=study,
        experiment=experiment,
        tables=tables,
        figures=figures,
        doctor=doctor,
        results=results,
        results_path=results_path,
        curves=curves,
        data=data_summary(record, study, tables.best),
        labels=labels,
        identical=identical,
        link=h.Linker(record.tracking_uri, study.experiment_id, run_ids),
    )


def write_report(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path | str,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> Path:
    """Write tables, figures, ``results.csv`` and ``report.html`` to ``out_dir`` (and, with
    ``log_to_mlflow``, to the parent run: the study does, a reader of the record need not).

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
        files = [*ctx.tables.files, *ctx.figures.files, *ctx.doctor.files, ctx.results_path]
        files += [*([ctx.curves] if ctx.curves else []), path]
    if log_to_mlflow:
        record.log_outputs(study, files)
    return path.resolve()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the report and print its path."""
    return run_cli("gaze-study report", "Self-contained HTML report of a study.", write_report, str, argv)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
