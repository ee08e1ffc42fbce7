"""What the study prints: the per-arm results table, where the results are, the resume hint (and
the single trial's AUC table); and how quiet the libraries are on the console.

The progress lines while trials run are ``study.progress``.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from search_spaces import SEARCHABLE
from trainables.model_sets import uses_hyperparam
from trainables.record import (
    FAILED_STATUSES,
    SELECTION_METRIC,
    Stage,
    Status,
    metric_key,
)
from trainables.record.selection import best_of_arm
from trainables.record.trial import Trial
from trainables.task import Task

if TYPE_CHECKING:
    from study.presets import StudyConfig
    from trainables.record.store import TrackingContext

# Loggers whose INFO lines (new Optuna study, MLflow schema creation, Tune's state files) are noise
# next to the progress lines; their warnings and errors still show.
_CHATTY_LOGGERS = ("optuna", "mlflow", "alembic", "ray.tune", "ray.train")
UI_NOTE = (
    "MLflow 3 may open on its GenAI pages; these links open 'Model training' "
    "(else use the GenAI / Model training switch at the top left)"
)


def quiet_console(verbose: bool) -> None:
    """Unless ``verbose``: the chatty libraries' loggers at WARNING, and Tune's legacy reporter,
    which prints nothing at ``verbose=0`` (the new one still prints a box per experiment)."""
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's "snapshotting triggered multiple times" advice (4 lines, once per burst of epoch
    # checkpoints on a loaded machine) is about Tune's own bookkeeping, not the study; 0 = off.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def ray_init_options(verbose: bool) -> dict[str, Any]:
    """``ray.init`` options: workers' output on this console only when ``verbose``.

    Quiet: no worker output (trial errors still reach the trial lines and Tune's error files;
    workers' logs stay in Ray's session folder). Verbose: every line, with Ray's de-duplication
    off so the epoch lines of all trials show.
    """
    if verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # read by the driver's log monitor
        return {"log_to_driver": True}
    return {"log_to_driver": False, "logging_level": logging.WARNING}


def study_header(cfg: StudyConfig, arms: Sequence[str]) -> str:
    """The line that opens a study's progress."""
    seeds = f" + {plural(cfg.seeds, 'seed')}" if cfg.seeds else ""
    how = "" if cfg.verbose else "; one line per finished trial (--verbose: Ray's own tables)"
    return (
        f"[study] {cfg.study_name}: {plural(len(arms), 'arm')} x "
        f"{plural(cfg.trials_per_arm, 'trial')}{seeds}, {plural(cfg.trial.epochs, 'epoch')} "
        f"each{how}"
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def resume_command(cfg: StudyConfig) -> str:
    """The command that continues this study: the flags it was started with, plus
    ``--study-name NAME --resume`` (``cfg.command`` holds the program and its arguments)."""
    prog, *argv = cfg.command or ("python -m study", "--preset", cfg.preset)
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--study-name":
            skip = True
        elif not (arg == "--resume" or arg.startswith("--study-name=")):
            kept.append(arg)
    return " ".join([prog, shlex.join([*kept, "--study-name", str(cfg.study_name), "--resume"])])


def ui_base_url(tracking_uri: str) -> str:
    """Where the MLflow UI of a store is: the server itself, or ``mlflow ui``'s default address."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"


def runs_view_url(tracking_uri: str, experiment_id: str, view: str | None = None) -> str:
    """Direct link to an experiment's runs table in its "model training" view, optionally a
    saved view (``study.results.comparison_views``)."""
    url = (
        f"{ui_base_url(tracking_uri)}/#/experiments/{experiment_id}/runs"
        "?workflowType=machine_learning"
    )
    return url + (f"&viewStateShareKey={quote(view)}" if view else "")


def results_block(ctx: TrackingContext, views: dict[str, str], report: str | None) -> list[str]:
    """Where the results are: the MLflow UI command and links, the report."""
    lines = []
    if ctx.tracking_uri.startswith("sqlite:"):
        lines.append(f"MLflow UI: mlflow ui --backend-store-uri {ctx.tracking_uri}  then open")
    else:
        lines.append("MLflow UI:")
    for label, view in views.items():
        lines.append(f"  {label}: {runs_view_url(ctx.tracking_uri, ctx.experiment_id, view)}")
    lines.append(f"  Note: {UI_NOTE}.")
    if report:
        lines.append(f"Report: {report}")
    return lines


@dataclass
class ArmResult:
    """The search trials of one arm: counts by how they ended, and the best one."""

    arm: str
    trials: list[Trial] = field(default_factory=list)
    ok: int = 0
    stopped: int = 0  # ASHA stopped them early: ended normally, not failures
    failed: int = 0  # failed or diverged
    best: Trial | None = None  # selection.best_of_arm, the one rule

    @property
    def counts(self) -> str:
        """``2/2 (1 stopped early)``: trials that ended normally out of all, then why not ok."""
        text = f"{self.ok + self.stopped}/{len(self.trials)}"
        notes = [f"{self.stopped} stopped early"] if self.stopped else []
        notes += [f"{self.failed} failed"] if self.failed else []
        return text + (f" ({', '.join(notes)})" if notes else "")


def summarize_arms(trials: Sequence[Trial], arms: Sequence[str]) -> dict[str, ArmResult]:
    """Each arm's search trials, counted by status, with its best (``best_of_arm``)."""
    out = {}
    for arm in arms:
        mine = [t for t in trials if t.arm == arm and t.stage == Stage.SEARCH]
        out[arm] = ArmResult(
            arm,
            mine,
            ok=sum(t.status == Status.OK for t in mine),
            stopped=sum(t.status == Status.STOPPED for t in mine),
            failed=sum(t.status in FAILED_STATUSES for t in mine),
            best=best_of_arm(trials, arm),
        )
    return out


def format_ci(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(metric_key("test", key))
    if value is None or not math.isfinite(value):
        return "-"
    low = metrics.get(metric_key("test", key, "low"), math.nan)
    high = metrics.get(metric_key("test", key, "high"), math.nan)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


CONSOLE_CLASSES = (
    4  # more classes than this (REFLACX's findings): the mean only, per class in the report
)


def shown_auc_columns(task: Task) -> tuple[str, ...]:
    """The AUC columns a console table shows: the mean, and each class's when they are few."""
    return task.auc_columns if task.n <= CONSOLE_CLASSES else ("auc_mean",)


def per_arm_table(records: Sequence[Trial], arms: Sequence[str], task: Task) -> str:
    """Best search trial per arm (by best validation mean AUC): test AUCs with 95% CI, and the
    searchable hyperparameters (blank where the arm's loss never reads one)."""
    classes = dict(zip(task.auc_keys, task.classes, strict=False))
    header = [
        "arm",
        "trials done/all",
        "best val AUC",
        "test mean AUC [95% CI]",
        *[f"{classes[k]} AUC" for k in shown_auc_columns(task)[1:]],
        *SEARCHABLE,
    ]
    rows = [header]
    for arm, result in summarize_arms(records, arms).items():
        best = result.best
        if best is None:
            rows.append([arm, result.counts] + ["-"] * (len(header) - 2))
            continue
        rows.append(
            [
                arm,
                result.counts,
                f"{best.metrics[SELECTION_METRIC]:.3f}",
                *[format_ci(best.metrics, k) for k in shown_auc_columns(task)],
                *[_param(best, k) for k in SEARCHABLE],
            ]
        )
    seeds = [r for r in records if r.stage == Stage.SEEDS and r.status == Status.OK]
    lines = format_rows(rows)
    if seeds:
        lines.append("")
        srows = [["arm", "seeds", "test mean AUC (mean +- sd over seeds)"]]
        for arm in arms:
            vals = [
                r.metrics[metric_key("test", "auc_mean")]
                for r in seeds
                if r.arm == arm and metric_key("test", "auc_mean") in r.metrics
            ]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                srows.append([arm, str(len(vals)), f"{statistics.mean(vals):.3f} +- {sd:.3f}"])
        lines += format_rows(srows)
    return "\n".join(lines)


def _param(trial: Trial, name: str) -> str:
    """A hyperparameter of the trial as logged; blank when its arm never reads it."""
    if not uses_hyperparam(trial.arm, name) or name not in trial.params:
        return ""
    try:
        return f"{float(trial.params[name]):.3g}"
    except ValueError:
        return trial.params[name]


def format_rows(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def auc_table(test: dict[str, float], task: Task) -> str:
    """Mean and per-class test AUC with 95% CI, one row each (the single trial's summary)."""
    rows = [["class", "test AUC [95% CI]"]]
    for key, name in zip(task.auc_columns, ("mean", *task.classes), strict=True):
        rows.append([name, format_ci(test, key)])
    return "\n".join(format_rows(rows))
