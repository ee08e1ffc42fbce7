"""What a study records for the MLflow UI besides the trials' own runs.

At the start (``record_study_start``): the data summary (``study/data.json`` and ``data/*`` params),
the git commit, the data fingerprint and a description on the parent run, and the experiment's kind
("model training"). At the end (``record_study_end``): each arm's best trial
(``selection.best_of_arm``) tagged ``best_of_arm=true``, the per-arm comparison metrics on the
parent (``<arm>/best_val_auc_mean``, ``<arm>/test_auc_mean`` with CI ..., names from
``trainables.record.arm_metric``), a description on every run (the parent's opens with the verdict
of ``analysis.verdict``, in the report's words; a trial's names only the hyperparameters its arm
reads), and two saved runs-table views (the best trial of each arm; all trials) that the printed
links open.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from search_spaces import SEARCHABLE
from study.console import ArmResult, format_ci, shown_auc_columns, summarize_arms
from study.presets import StudyConfig
from trainables.model_sets import loss_hyperparams, uses_hyperparam
from trainables.record import (
    CEILING,
    DATA_PARAM_PREFIX,
    EXPERIMENT_KIND,
    SEARCH_METRIC,
    SELECTION_METRIC,
    SELECTION_SUMMARY,
    SHARED_VIEW_PREFIX,
    TAG_ARM,
    TAG_BEST_OF_ARM,
    TAG_DATA_FINGERPRINT,
    TAG_EXPERIMENT_KIND,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_NOTE,
    TAG_PARENT,
    TAG_STATUS,
    VAL_LOSS,
    Status,
    arm_metric,
    excluded_images,
    metric_key,
)
from trainables.record import writer as record
from trainables.record.store import TrackingContext
from trainables.record.trial import Trial
from trainables.task import Task

UNKNOWN = "unknown"


def git_commit(project_dir: str) -> tuple[str, bool]:
    """(commit, has uncommitted changes) of the checkout, or ("unknown", False) outside git."""

    def git(*args: str) -> str | None:
        try:
            run = subprocess.run(
                ["git", "-C", project_dir, *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return UNKNOWN, False
    return commit, bool(git("status", "--porcelain", "--untracked-files=no"))


def data_params(summary: dict[str, Any]) -> dict[str, Any]:
    """The few ``data/*`` params of the parent run (the whole summary is ``study/data.json``);
    ``data/<name>/*`` for each dataset of a plan that trains on several."""
    if "datasets" in summary:
        params = {f"{DATA_PARAM_PREFIX}fingerprint": summary["fingerprint"]}
        for name, one in summary["datasets"].items():
            own = data_params(one)
            params |= {k.replace(DATA_PARAM_PREFIX, f"{DATA_PARAM_PREFIX}{name}/", 1): v for k, v in own.items() if not k.endswith("fingerprint")}  # fmt: skip
        return params
    params = {f"{DATA_PARAM_PREFIX}images": summary["images"]}
    for split, info in summary["splits"].items():
        params[f"{DATA_PARAM_PREFIX}{split}"] = info["images"]
    params[f"{DATA_PARAM_PREFIX}excluded"] = excluded_images(summary["exclusions"])  # images only
    params[f"{DATA_PARAM_PREFIX}fingerprint"] = summary["fingerprint"]
    return params


def study_description(cfg: StudyConfig, arms: Sequence[str], data: dict[str, Any]) -> str:
    """The parent run's description (markdown) while the study runs."""
    splits = ", ".join(f"{s} {v['images']}" for s, v in data["splits"].items())
    lines = [
        (
            f"**Study `{cfg.study_name}`** (preset `{cfg.preset}`): {len(arms)} arms x "
            f"{cfg.trials_per_arm} trials, {cfg.trial.epochs} epochs at "
            f"{cfg.data.image_size} px, search space `{cfg.search_space}`."
        ),
        f"Data: {data['images']} images ({splits}); fingerprint `{data['fingerprint']}`.",
    ]
    if cfg.command:
        lines.append(f"Command: `{' '.join(cfg.command)}`")
    return "\n\n".join(lines)


def record_study_start(
    ctx: TrackingContext, cfg: StudyConfig, summary: dict[str, Any], note: str
) -> None:
    """Log the data summary, provenance (git commit, data fingerprint) and the description
    ``note`` on the parent run, and the experiment's kind (see module doc)."""
    commit, dirty = git_commit(cfg.project_dir)
    tags = {
        TAG_GIT_COMMIT: commit,
        TAG_GIT_DIRTY: str(dirty).lower(),
        TAG_DATA_FINGERPRINT: summary["fingerprint"],
        TAG_NOTE: note,
    }
    record.log_study_data(ctx, summary, data_params(summary))
    record.set_run_tags(ctx, tags)
    record.set_experiment_tags(
        ctx.tracking_uri, ctx.experiment_id, {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
    )


def record_ceiling(ctx: TrackingContext, data: Any) -> None:
    """A dataset whose images several radiologists read (REFLACX): the human ceiling of its test
    images, per image, as ``study/ceiling.csv`` on the parent run (analysis compares each arm's
    maps with it). Nothing for a dataset of one reader."""
    if data.readers is None or not (data.readers.row >= 0).any():
        return
    import tempfile
    from pathlib import Path

    from trainables.reader_eval import ceiling_frame

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(CEILING).name
        ceiling_frame(data).to_csv(path, index=False)
        record.log_files(ctx, [path], str(Path(CEILING).parent))


def arm_metrics(results: dict[str, ArmResult], task: Task) -> dict[str, float]:
    """The parent's comparison metrics: each arm's best trial's validation and test AUCs (with
    CI) and the arm's trial counts."""
    out: dict[str, float] = {}
    for arm, res in results.items():
        out[arm_metric(arm, "trials_ok")] = res.ok
        out[arm_metric(arm, "trials_stopped")] = res.stopped
        out[arm_metric(arm, "trials_failed")] = res.failed
        if res.best is None:
            continue
        m = res.best.metrics
        out[arm_metric(arm, "best_val_auc_mean")] = m.get(SELECTION_METRIC, math.nan)
        for key in task.auc_columns:
            name = f"test_{key}"
            out[arm_metric(arm, name)] = m.get(metric_key("test", key), math.nan)
            for bound in ("low", "high"):
                out[arm_metric(arm, name, bound)] = m.get(metric_key("test", key, bound), math.nan)
    return out


def _hp(trial: Trial) -> str:
    """The hyperparameters the trial's arm reads, as the run logged them (none it never reads)."""
    names = [h for h in loss_hyperparams() if h in trial.params and uses_hyperparam(trial.arm, h)]
    return ", ".join(f"{k} {_num(trial.params[k])}" for k in names)


def _num(text: str) -> str:
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def _last_val(trial: Trial) -> str:
    """``last validation AUC 0.611, loss 1.02`` from the run's latest per-epoch values."""
    m = trial.metrics
    parts = [f"{name} {m[key]:.3f}" for name, key in (("AUC", SEARCH_METRIC), ("loss", VAL_LOSS)) if key in m]  # fmt: skip
    return f"last validation {', '.join(parts)}" if parts else "no validation recorded"


def trial_description(trial: Trial, best: bool) -> str:
    """A trial run's description: arm, hyperparameters, how it ended, its AUCs."""
    head = f"Arm `{trial.arm}`, {trial.stage} stage, trial `{trial.trial_id}`: {_hp(trial)}."
    val = trial.metrics.get(SELECTION_METRIC)
    if trial.status == Status.OK:
        body = (
            f"Finished: best epoch {trial.metrics.get('best/epoch', math.nan):.0f}, "
            f"val AUC {val:.3f}; test AUC {format_ci(trial.metrics, 'auc_mean')}."
            if val is not None
            else "Finished."
        )
    elif trial.status == Status.STOPPED:
        body = (
            f"Stopped early by ASHA (its validation AUC trailed the others): not a failure; "
            f"{_last_val(trial)}."
        )
    else:
        body = f"{trial.status}: {trial.error or 'no error recorded'}"
    tail = "\n\n**Best trial of its arm** (highest validation AUC)." if best else ""
    return f"{head}\n\n{body}{tail}"


def searched(cfg: StudyConfig, arms: Sequence[str]) -> list[str]:
    """The hyperparameters any of ``arms`` searches (``search_spaces``), in search order."""
    from search_spaces import get_space
    from trainables.model_sets import get_arm

    space = get_space(cfg.search_space)
    return list(dict.fromkeys(k for arm in arms for k in space(get_arm(arm)).params))


def comparison_views(
    parent_run_id: str,
    arms: Sequence[str],
    study_name: str,
    task: Task,
    params: Sequence[str] = SEARCHABLE,
) -> dict[str, dict[str, Any]]:
    """Saved runs-table views (MLflow's shared view state): share key -> view.

    ``<study>``: the best trial of each arm, sorted by validation; it opens with the run name
    (``<arm>-<trial>``), the test AUCs (mean and per class) and the hyperparameters ``params``
    the arms searched (MLflow draws metrics, then params, then tags, each group sorted by
    name). ``<study>-all``: every trial of the study, with the validation AUC and loss of its
    last epoch besides its final ones, so an ASHA-stopped trial shows where it stopped.
    """
    tests = [f"metrics.`{metric_key('test', key)}`" for key in shown_auc_columns(task)]
    hyper = [f"params.`{p}`" for p in params]
    tags = [f"tags.`{TAG_ARM}`", f"tags.`{TAG_STATUS}`"]
    of_study = f"tags.`{TAG_PARENT}` = '{parent_run_id}'"
    base = {
        "orderByKey": f"metrics.`{SELECTION_METRIC}`",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "runsHiddenMode": "SHOW_ALL",
    }
    last = [f"metrics.`{SEARCH_METRIC}`", f"metrics.`{VAL_LOSS}`"]
    every = [f"metrics.`{SELECTION_METRIC}`", tests[0], *last, *hyper, *tags]
    return {
        study_name: {
            **base,
            "selectedColumns": [*tests, *hyper, *tags],
            "searchFilter": f"tags.{TAG_BEST_OF_ARM} = 'true' and {of_study}",
        },
        f"{study_name}-all": {**base, "selectedColumns": every, "searchFilter": of_study},
    }


@dataclass(frozen=True)
class StudyEnd:
    """What ``record_study_end`` recorded that the console prints too."""

    views: dict[str, str]  # label -> saved view key
    verdict: str  # the verdict's words (selection and sentence), as in the description


def study_verdict_text(ctx: TrackingContext, cfg: StudyConfig) -> tuple[str, str]:
    """(the verdict's words, its Markdown for the description), read back from the record by
    ``analysis.verdict``; a record it cannot read says why instead."""
    from analysis.verdict import study_verdict
    from trainables.record.reader import Record

    try:
        reader = Record(ctx.tracking_uri)
        v = study_verdict(reader, reader.study(cfg.experiment, ctx.parent_run_id))
    except (KeyError, ValueError, FileNotFoundError) as err:
        text = f"Verdict not computed: {err}"
        return text, f"**{text}**"
    return f"{v.selection} {v.sentence}", v.markdown()


def record_study_end(
    ctx: TrackingContext,
    cfg: StudyConfig,
    trials: Sequence[Trial],
    arms: Sequence[str],
    note: str,
    task: Task,
) -> StudyEnd:
    """Tag the best trials, log the comparison, describe every run (the parent: the verdict
    first), save the views; ``note`` (the study's description) closes the parent's description;
    ``task``: the study's classes.

    Returns:
        The saved views (label -> key, for ``study.console.results_block``) and the verdict.
    """
    results = summarize_arms(trials, arms)
    best_ids = {r.best.run_id for r in results.values() if r.best is not None}
    search_ids = {t.run_id for res in results.values() for t in res.trials}
    for trial in trials:
        tags = {TAG_NOTE: trial_description(trial, trial.run_id in best_ids)}
        if trial.run_id in search_ids:
            tags[TAG_BEST_OF_ARM] = str(trial.run_id in best_ids).lower()
        record.set_run_tags(ctx, tags, trial.run_id)
    verdict, verdict_md = study_verdict_text(ctx, cfg)
    ranked = [r for r in results.values() if r.best is not None]
    ranked.sort(key=lambda r: -r.best.metrics.get(SELECTION_METRIC, -math.inf))
    lines = [
        f"- `{r.arm}`: val {r.best.metrics[SELECTION_METRIC]:.3f}, test "
        f"{format_ci(r.best.metrics, 'auc_mean')}, trials {r.counts}"
        for r in ranked
    ]
    compare = (
        "Each arm's best trial is tagged `best_of_arm=true`; this run's metrics "
        f"`<arm>/{SELECTION_SUMMARY}`, `<arm>/test_auc_mean` ... compare the arms."
    )
    best_lines = "Each arm's best trial (by validation):\n" + "\n".join(lines) if lines else ""
    parts = [verdict_md, best_lines, compare, note]
    record.set_run_tags(ctx, {TAG_NOTE: "\n\n".join(p for p in parts if p)})
    ended = sum(1 for t in trials if t.status != Status.RUNNING)
    record.log_study_results(ctx, arm_metrics(results, task), ended)
    views = comparison_views(
        ctx.parent_run_id, arms, str(cfg.study_name), task, searched(cfg, arms)
    )
    record.set_experiment_tags(
        ctx.tracking_uri,
        ctx.experiment_id,
        {SHARED_VIEW_PREFIX + key: json.dumps(view) for key, view in views.items()},
    )
    name = str(cfg.study_name)
    labels = {"best trial of each arm": name, "all trials of this study": f"{name}-all"}
    return StudyEnd(labels, verdict)
