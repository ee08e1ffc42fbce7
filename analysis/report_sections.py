"""The report's sections, in page order (``SECTIONS``): each a small function of the
``ReportContext`` that returns HTML parts. ``CONTENTS`` is the table of contents (anchor, title)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from analysis import html as h
from analysis.curves import CURVES_NOTE
from analysis.doctor import doctor_display, doctor_note
from analysis.figures import EXPLAIN_NOTE, ROC_NOTE, explain_display
from analysis.readers import readers_sections
from analysis.report_context import ReportContext
from analysis.results import best_display, resolution_note, trials_display
from analysis.table_render import (
    display_frame,
    method_note,
    one_seed,
    paper_caption,
    paper_frame,
    seeds_display,
    seeds_note,
    study_setting,
)
from analysis.verdict import differences_display, differences_note
from trainables.record.reader import Study
from trainables.record.selection import failed_arms_note

PER_TRIAL = "per trial: see the best trial of each arm"  # replaces searched template fields
CONTENTS: tuple[tuple[str, str], ...] = (
    ("verdict", "Verdict"),
    ("best", "Best trial of each arm"),
    ("trials", "Trials and wall time per arm"),
    ("data", "Data"),
    ("tables", "Classification: AUC tables"),
    ("paper", "Ours vs the paper"),
    ("seeds", "Seeds"),
    ("roc", "ROC curves"),
    ("curves", "Learning curves"),
    ("doctor", "Which predictions to trust: DOCTOR"),
    ("explain", "Explainability: map vs gaze"),
    ("readers", "Maps vs the radiologists and their ellipses"),
    ("panels", "Heatmap panels"),
    ("config", "Study configuration (what ran)"),
)
TITLES = dict(CONTENTS)


def _h2(anchor: str) -> str:
    return h.heading(2, TITLES[anchor], anchor)


def title(study: Study) -> str:
    return f"Gaze-guided U-Net study {study.name or study.parent_run_id}"


def header(ctx: ReportContext) -> list[str]:
    study = ctx.study
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    ui = h.ui_base(ctx.record.tracking_uri)
    serve = "" if ui != h.LOCAL_UI else f" (start it with: mlflow ui --backend-store-uri {ctx.record.tracking_uri})"  # fmt: skip
    return [
        h.heading(1, title(study)),
        h.note(f"Experiment {ctx.experiment}; study run {study.parent_run_id}; "
               f"{len(study.trials)} trial runs; tracking {ctx.record.tracking_uri}; generated "
               f"{stamp}. Run ids show their first {h.SHORT_ID} characters and link to the "
               f"MLflow UI at {ui}{serve}.", ctx.link),
    ]  # fmt: skip


def verdict(ctx: ReportContext) -> list[str]:
    v = ctx.verdict.verdict
    parts = [_h2("verdict"), h.verdict(v.selection, v.sentence, ctx.link)]
    if v.differences:
        parts += [
            h.heading(3, f"Difference from {v.baseline} (mean and per class)"),
            h.table(differences_display(v), "differences"),
            h.note(differences_note(v)),
        ]
    return parts + [h.links_note(ctx.verdict.files)]


def shown_sections(ctx: ReportContext) -> tuple[tuple[str, str], ...]:
    """The contents of this study's page: no paper comparison off EGD-CXR's tables, no readers
    section for a single-reader dataset."""
    skip = set()
    if not any(t.spec.paper for t in ctx.tables.tables):
        skip.add("paper")
    if not readers_sections(ctx.readers, ctx.study.bootstrap.resamples):
        skip.add("readers")
    return tuple((a, t) for a, t in CONTENTS if a not in skip)


def contents(ctx: ReportContext) -> list[str]:
    return [h.toc(shown_sections(ctx))]


def best(ctx: ReportContext) -> list[str]:
    labels = ctx.tables.tables[0].labels
    parts = [_h2("best"), h.table(best_display(ctx.results, labels), "best", ctx.link)]
    parts += [
        h.note(
            "The best trial of an arm has the highest validation mean AUC of its best epoch (the "
            "test set is never used to choose). Searched: the hyperparameters the arm's search "
            "varied (the parent run's space/<arm> params); the others were fixed (see the "
            "configuration). A blank hyperparameter is one the arm's loss never reads (no-seg "
            "has no segmentation loss, so no gamma; only set 3 mixes two, so only set 3 has "
            "seg_ratio). Test AUCs: whole test set, with the 2.5th-97.5th percentile over the "
            "bootstrap resamples of the AUC tables."
        )
    ]
    failed = failed_arms_note(ctx.study.trials, ctx.study.arms)
    if failed:
        parts += [h.note(failed)]
    if ctx.labels is not None:
        parts += [h.note(resolution_note(ctx.labels, ctx.identical, ctx.study.task))]
    return parts + [h.links_note([ctx.results_path])]


def trials(ctx: ReportContext) -> list[str]:
    return [
        _h2("trials"),
        h.table(trials_display(ctx.results), "trials"),
        h.note(
            "Trials by status: finished, stopped early by ASHA, diverged (non-finite loss), "
            "failed (error), still running. Trial time: the summed wall time of the arm's trial "
            "runs (trials of an arm may run at the same time); wall time: from the first trial's "
            "start to the last one's end."
        ),
    ]


def data(ctx: ReportContext) -> list[str]:
    d = ctx.data
    parts = [_h2("data"), h.table(d.splits, "splits")]
    if d.exclusions is not None:
        parts += [h.heading(3, "Exclusions"), h.table(d.exclusions, "exclusions")]
        parts += [
            h.note(
                "Each count is in its own unit: images left out, or rows, ids, fixations, "
                "readings or files of the dataset's tables that were dropped; totals add up one "
                "unit each."
            )
        ]
    else:
        parts += [h.note("Exclusions: not recorded.")]
    if d.other:
        other = pd.DataFrame(sorted(d.other.items()), columns=["field", "value"]).set_index("field")
        parts += [h.table(other, "data-other")]
    return parts + [h.note(d.source)]


def tables(ctx: ReportContext) -> list[str]:
    parts = [_h2("tables")]
    exclusive = ctx.study.task.exclusive
    for t in ctx.tables.tables:
        parts += [h.heading(3, f"Table {t.spec.number}. {t.spec.title}")]
        parts += [h.table(display_frame(t), "auc"), h.note(method_note(t, exclusive), ctx.link)]
    all_tables = ctx.tables.tables
    if any(t.spec.paper for t in all_tables):
        setting = study_setting(ctx.study.params, all_tables[0].n_test, ctx.study.bootstrap.resamples)  # fmt: skip
        parts += [_h2("paper"), h.table(paper_frame(all_tables), "paper")]
        parts += [h.caption(paper_caption(setting))]
    seeds = ctx.tables.seeds
    parts += [_h2("seeds")]
    if not one_seed(seeds):
        parts += [h.table(seeds_display(seeds, all_tables[0].labels), "seeds")]
    return parts + [h.note(seeds_note(seeds))]


def roc(ctx: ReportContext) -> list[str]:
    if ctx.figures.roc is None:
        return [_h2("roc"), h.note("No arm has a finished trial.")]
    return [_h2("roc"), h.img(ctx.figures.roc, "ROC curves"), h.caption(ROC_NOTE)]


def curves(ctx: ReportContext) -> list[str]:
    parts = [_h2("curves")]
    if ctx.curves is None:
        return parts + [h.note("No trial logged a per-epoch metric.")]
    return parts + [h.img(ctx.curves, "learning curves per arm"), h.caption(CURVES_NOTE)]


def doctor(ctx: ReportContext) -> list[str]:
    d = ctx.doctor
    parts = [_h2("doctor")]
    if d.frame.empty:
        return parts + [h.note(d.reason or "No arm has a finished trial.")]
    parts += [h.table(doctor_display(d.frame), "doctor")]
    if d.figure is not None:
        parts += [h.img(d.figure, "risk-coverage curves")]
    return parts + [
        h.caption(doctor_note(d.frame, ctx.study.bootstrap.resamples, ctx.study.bootstrap.seed))
    ]


def explain(ctx: ReportContext) -> list[str]:
    parts = [_h2("explain")]
    parts += [h.table(explain_display(ctx.figures.explain), "explain"), h.note(EXPLAIN_NOTE)]
    sections = readers_sections(ctx.readers, ctx.study.bootstrap.resamples)
    if sections:
        parts += [_h2("readers")]
        for heading, frame, note in sections:
            parts += [h.heading(3, heading)]
            parts += [h.table(frame, "readers")] if not frame.empty else []
            parts += [h.note(note)]
        parts += [h.links_note(ctx.readers.files)]
    parts += [_h2("panels")]
    if not ctx.figures.panels:
        return parts + [h.note("No arm that trains a map has heatmap panels.")]
    parts += [h.caption(ctx.figures.panel_caption)]
    return parts + [h.img(p, f"heatmap panel {p.stem}") for p in ctx.figures.panels]


def what_ran(config: dict[str, Any], study: Study) -> tuple[dict[str, Any], list[str]]:
    """The study config as it ran: the trial template's fields that trials did not share replaced
    by ``PER_TRIAL`` (the arm, searched hyperparameters, seeds; in ``trial`` and in
    ``settings.trial``), and an empty ``arms`` (the default) by the arms that ran; returns it and
    those field names."""
    shown = dict(config)
    ran = study_arms(config, study)
    if not shown.get("arms") and ran:
        shown["arms"] = ran
    template = config.get("trial")
    if not isinstance(template, dict) or not study.trials:
        return shown, []

    def norm(v: Any) -> str:
        return str(tuple(v)) if isinstance(v, list) else str(v)

    varied = []
    for key, value in template.items():
        seen = {t.params[key] for t in study.trials if key in t.params}
        if len(seen) > 1 or (len(seen) == 1 and seen != {norm(value)}):
            varied.append(key)

    def masked(block: dict[str, Any]) -> dict[str, Any]:
        return {k: (PER_TRIAL if k in varied else v) for k, v in block.items()}

    shown["trial"] = masked(template)
    settings = shown.get("settings")
    if isinstance(settings, dict) and isinstance(settings.get("trial"), dict):
        shown["settings"] = {**settings, "trial": masked(settings["trial"])}
    return shown, varied


def study_arms(config: dict[str, Any] | None, study: Study) -> list[str]:
    """The arms that ran: the resolved list in ``settings`` (``arms`` is as given, [] for the
    default), else the study's."""
    settings = (config or {}).get("settings")
    if isinstance(settings, dict) and settings.get("arms"):
        return list(settings["arms"])
    return list(study.arms)


def _what_ran_table(config: dict[str, Any] | None, study: Study) -> pd.DataFrame:
    p = study.params
    boot = study.bootstrap
    rows = {
        "arms": ", ".join(study_arms(config, study)),
        "trials per arm (search)": p.get("trials_per_arm", "not recorded"),
        "seeds stage (more seeds per arm)": p.get("seeds", "not recorded"),
        "epochs": p.get("epochs", "not recorded"),
        "image size (px)": p.get("image_size", "not recorded"),
        "encoder": f"{p.get('encoder', '?')} ({_weights(p.get('encoder_weights'))})",
        "search space": p.get("search_space", "not recorded"),
        "data": f"{p.get('data', 'not recorded')} ({p.get('data/images', '?')} images)",
        "test bootstrap": f"{boot.resamples} resamples, seed {boot.seed}",
    }
    frame = pd.DataFrame(list(rows.items()), columns=["setting", "value"])
    return frame.set_index("setting")


def _weights(value: str | None) -> str:
    if value is None:
        return "weights not recorded"
    return "random initialisation" if value in ("None", "none") else f"{value} weights"


def config(ctx: ReportContext) -> list[str]:
    study = ctx.study
    cfg = ctx.record.study_config(study.parent_run_id)
    parts = [_h2("config"), h.table(_what_ran_table(cfg, study), "what-ran")]
    params = pd.DataFrame(sorted(study.params.items()), columns=["param", "value"])
    parts += [h.heading(3, "Parameters of the study run")]
    parts.append(
        h.table(params.set_index("param"), "config") if len(params) else h.note("no params")
    )
    if cfg is None:
        return parts + [h.note("The study run has no study/config.json.")]
    shown, varied = what_ran(cfg, study)
    text = json.dumps(shown, indent=2, sort_keys=True)
    parts += [
        h.heading(3, "study/config.json"),
        h.details(f"the whole file ({text.count(chr(10)) + 1} lines)", h.preformatted(text)),
    ]
    notes = []
    if not cfg.get("arms") and shown.get("arms"):
        notes.append(
            'The file lists the arms as given ("arms": [], the default: the paper\'s arms); '
            "shown here are the arms that ran (its settings block)."
        )
    if varied:
        notes.append(
            f"Trial fields that differed between trials ({', '.join(varied)}) are shown as "
            f"'{PER_TRIAL}': the file holds only the template the search started from."
        )
    return parts + [h.note(" ".join(notes))] if notes else parts


Section = Callable[[ReportContext], list[str]]
SECTIONS: tuple[Section, ...] = (
    header, verdict, contents, best, trials, data, tables, roc, curves, doctor, explain, config,
)  # fmt: skip
