"""Everything the report's sections draw on, computed once from the record (``build_context``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import html as h
from analysis.curves import arm_trials, curves_figure, has_curves
from analysis.data_summary import DataSummary, data_summary
from analysis.doctor import DoctorOutput, write_doctor_from
from analysis.figures import FiguresOutput, write_figures_from
from analysis.paper import report_arms
from analysis.readers import ReadersOutput, write_readers_from
from analysis.results import arm_summaries, identical_groups, results_frame
from analysis.stats import align_arms
from analysis.tables import TablesOutput, write_tables_from
from analysis.verdict import VerdictOutput, write_verdict_from
from trainables.record.reader import Record, Study

RESULTS_NAME = "results.csv"


@dataclass(frozen=True)
class ReportContext:
    """Everything the sections draw on, computed once."""

    record: Record
    study: Study
    experiment: str
    verdict: VerdictOutput
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
    readers: ReadersOutput | None = None  # a multi-reader dataset's ceiling and localization

    @property
    def files(self) -> list[Path]:
        """Every file the context wrote (beside the report)."""
        return [
            *self.verdict.files, *self.tables.files, *self.figures.files, *self.doctor.files,
            self.results_path, *([self.curves] if self.curves else []),
            *(self.readers.files if self.readers else []),
        ]  # fmt: skip


def build_context(record: Record, study: Study, experiment: str, out_dir: Path) -> ReportContext:
    """Compute every table and figure of the report, writing them to ``out_dir``."""
    verdict = write_verdict_from(record, study, out_dir)
    tables = write_tables_from(record, study, out_dir)
    figures = write_figures_from(record, study, out_dir)
    doctor = write_doctor_from(record, study, out_dir)
    summaries = arm_summaries(study, tables.best, report_arms(study.dataset, study.arms))
    results = results_frame(summaries, tables.tables)
    results_path = out_dir / RESULTS_NAME
    results.to_csv(results_path, index=False)
    trials = arm_trials(study, [s.arm for s in summaries])
    curves = (
        curves_figure(record, trials, tables.best, out_dir) if has_curves(record, trials) else None
    )
    task = study.task
    present = {a: record.predictions(t.run_id, task) for a, t in tables.best.items() if t is not None}  # fmt: skip
    labels, identical = None, []
    if present:
        _, labels, probs = align_arms(present, task)
        identical = identical_groups(probs)
    run_ids = frozenset([study.parent_run_id, *(t.run_id for t in study.trials)])
    return ReportContext(
        record=record,
        study=study,
        experiment=experiment,
        verdict=verdict,
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
        readers=write_readers_from(record, study, study.best_of(study.arms), out_dir),
    )
