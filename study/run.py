"""The study driver: ``python study/run.py [--preset demo|paper] [flags]`` (see ``--help``).

``run_study`` prepares the data once, opens the MLflow parent run, searches each arm with its own
Tuner (``study.tuner``), optionally re-runs each arm's best config with more seeds, closes the
records of early-stopped trials, prints the per-arm table and writes the analysis report.
``run_single_trial`` runs one configuration in-process without Ray (for a debugger).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python study/run.py` puts study/, not the project root, on sys.path.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import importlib.util
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from study.presets import StudyConfig
from trainables import tracking
from trainables.config import CLASSES, replace
from trainables.model_sets import get_arm, list_arms
from trainables.record import (
    AUC_COLUMNS,
    SELECTION_METRIC,
    STATUS_OK,
    select_best,
    test_metric,
    trial_tags,
)


@dataclass
class StudySummary:
    """What a study invocation produced."""

    study_name: str
    tracking: tracking.TrackingContext
    interrupted: bool = False  # stopped by Ctrl-C; continue with --resume
    records: list[tracking.TrialRecord] = field(default_factory=list)
    report_path: str | None = None  # analysis report, when analysis/ is available
    wall_s: float = 0.0
    outcomes: dict[str, Any] = field(default_factory=dict)  # Tune experiment name -> ArmOutcome


def _study_name(cfg: StudyConfig, uri: str, experiment_id: str) -> str:
    if cfg.study_name:
        return cfg.study_name
    if cfg.resume:
        found = tracking.find_study_run(uri, experiment_id, preset=cfg.preset)
        if found is None:
            raise SystemExit(
                f"--resume: no study of preset {cfg.preset!r} in this MLflow experiment; "
                f"pass --study-name"
            )
        return found[1]
    return f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _connect_ray(cfg: StudyConfig) -> bool:
    """Start or join Ray; True when this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    # Workers import trainables/ and study/ from the project root, wherever the driver was started.
    path = os.pathsep.join(p for p in (cfg.project_dir, os.environ.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}}
    if cfg.address is None:
        kwargs["include_dashboard"] = False
    ray.init(address=cfg.address, **kwargs)
    return True


def study_params(cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
    """The study settings logged as params of the parent run (full config goes to config.json)."""
    from study.tuner import arm_space

    params: dict[str, Any] = {
        "preset": cfg.preset,
        "study_name": cfg.study_name,
        "arms": ",".join(arms),
        "trials_per_arm": cfg.trials_per_arm,
        "epochs": cfg.trial.epochs,
        "image_size": cfg.trial.image_size,
        "encoder": cfg.trial.encoder,
        "encoder_weights": cfg.trial.encoder_weights,
        "batch_size": cfg.trial.batch_size,
        "seed": cfg.seed,
        "seeds": cfg.seeds,
        "search_space": cfg.search_space,
        "max_concurrent": cfg.max_concurrent,
        "cpus_per_trial": cfg.cpus_per_trial,
        "gpus_per_trial": cfg.gpus_per_trial,
        "grace_period": cfg.grace_period,
        "reduction_factor": cfg.reduction_factor,
        "max_failures": cfg.max_failures,
        "data": "egd-cxr" if cfg.data.egd_root else "synthetic",
    }
    for arm in arms:
        space = arm_space(cfg, arm)
        params[f"space/{arm}"] = ",".join(
            f"{k}:{r.low:g}-{r.high:g}{' log' if r.log else ''}" for k, r in space.params.items()
        )
    return params


def _arm_tags(config: dict[str, Any], stage: str) -> dict[str, str]:
    name = str(config.get("arm", ""))
    try:
        arm = get_arm(name)
    except KeyError:  # the trial may have failed precisely because of its arm
        return trial_tags(name, stage)
    return trial_tags(arm.name, stage, arm.model_set, arm.generator)


def close_open_trials(ctx: tracking.TrackingContext, outcome: Any, stage: str) -> None:
    """Give every ended trial of a Tuner a final status in MLflow.

    Runs still "running" after their Tuner returned were stopped by ASHA ("stopped") or errored in a
    way the trial could not record itself (e.g. a node lost after the last retry: "failed"). A trial
    that errored before it opened its run gets a failed run, so every trial has exactly one.
    """
    records = {r.trial_id: r for r in tracking.trial_records(ctx)}
    for result in outcome.results:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        error = f"{type(result.error).__name__}: {result.error}" if result.error else None
        record = records.get(trial_id)
        if record is None:
            if error is None:
                continue
            run_id = tracking.trial_run(
                ctx,
                trial_id,
                run_id=None,
                tags=_arm_tags(result.config, stage),
                params=result.config,
            )
            tracking.set_status(ctx, run_id, "failed", error)
        elif record.status == "running":
            tracking.set_status(ctx, record.run_id, "failed" if error else "stopped", error)


def _ci(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(test_metric(key))
    if value is None or not math.isfinite(value):
        return "-"
    low = metrics.get(test_metric(key, "low"), math.nan)
    high = metrics.get(test_metric(key, "high"), math.nan)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def per_arm_table(records: Sequence[tracking.TrialRecord], arms: Sequence[str]) -> str:
    """Best search trial per arm (by best validation mean AUC): test per-class AUC with 95% CI."""
    header = [
        "arm",
        "trials ok/all",
        "best val AUC",
        "test mean AUC [95% CI]",
        *[f"{c} AUC" for c in CLASSES],
        "lr",
        "gamma",
        "seg_ratio",
    ]
    rows = [header]
    for arm in arms:
        mine = [r for r in records if r.arm == arm and r.stage == "search"]
        ok = [r for r in mine if r.status == STATUS_OK]
        best = select_best(ok, lambda r: r.metrics)
        if best is None:
            rows.append([arm, f"0/{len(mine)}"] + ["-"] * (len(header) - 2))
            continue
        rows.append(
            [
                arm,
                f"{len(ok)}/{len(mine)}",
                f"{best.metrics[SELECTION_METRIC]:.3f}",
                *[_ci(best.metrics, k) for k in AUC_COLUMNS],
                *[f"{float(best.params.get(k, 'nan')):.3g}" for k in ("lr", "gamma", "seg_ratio")],
            ]
        )
    seeds = [r for r in records if r.stage == "seeds" and r.status == STATUS_OK]
    lines = _format(rows)
    if seeds:
        lines.append("")
        srows = [["arm", "seeds", "test mean AUC (mean +- sd over seeds)"]]
        for arm in arms:
            vals = [
                r.metrics[test_metric("auc_mean")]
                for r in seeds
                if r.arm == arm and test_metric("auc_mean") in r.metrics
            ]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                srows.append([arm, str(len(vals)), f"{statistics.mean(vals):.3f} +- {sd:.3f}"])
        lines += _format(srows)
    return "\n".join(lines)


def _format(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _write_analysis_report(
    cfg: StudyConfig, ctx: tracking.TrackingContext, study_name: str
) -> str | None:
    # analysis/ is written separately; the study runs without it.
    if importlib.util.find_spec("analysis.report") is None:
        return None
    from analysis.report import write_report

    out_dir = Path(cfg.project_dir) / "outputs" / "reports" / study_name
    path = write_report(
        ctx.tracking_uri, cfg.experiment, out_dir, parent=ctx.parent_run_id, seed=cfg.seed
    )
    return str(path)


def run_study(cfg: StudyConfig, *, callbacks: Sequence[Any] = ()) -> StudySummary:
    """Run (or resume) a whole study; see the module docstring.

    Args:
        cfg: the resolved StudyConfig (``study.cli`` builds it from a preset and flags).
        callbacks: extra Tune callbacks for every Tuner (tests use them to inject failures).

    Returns:
        StudySummary; ``interrupted`` when Ctrl-C stopped it (re-run with ``--resume``).
    """
    import ray

    from study import tuner
    from trainables.data.prepare import prepare_data

    t0 = time.perf_counter()
    arms = list(cfg.arms) or list_arms()
    for arm in arms:
        get_arm(arm)  # unknown arm: KeyError listing the valid ones, before anything starts
    uri = tracking.resolve_tracking_uri(cfg.tracking_uri, cfg.project_dir)
    experiment_id = tracking.get_or_create_experiment(uri, cfg.experiment)
    cfg = replace(cfg, study_name=_study_name(cfg, uri, experiment_id))
    if cfg.data.egd_root is None and cfg.preset == "paper":
        print(
            "[study] note: no --data given; the paper preset runs on the synthetic twin", flush=True
        )

    if not cfg.resume:
        taken = tuner.existing_experiments(cfg, arms)
        if taken:
            raise SystemExit(
                f"study {cfg.study_name!r} already has results for {', '.join(taken)} in "
                f"{tuner.experiment_root(cfg)}: pass --resume, or another --study-name"
            )
    owns_ray = _connect_ray(cfg)
    try:
        tuner.check_storage_path(
            cfg.storage_root(), tuner.cluster_hosts(), shared=cfg.storage_is_shared
        )
        data = prepare_data(cfg.data)
        print(f"[study] data: {data.summary()}", flush=True)
        ctx = tracking.start_study_run(
            uri,
            experiment_id,
            study_name=str(cfg.study_name),
            preset=cfg.preset,
            params=study_params(cfg, arms),
            config=cfg.to_dict(),
            resume=cfg.resume,
        )
        summary = StudySummary(str(cfg.study_name), ctx)
        try:
            return _run_stages(cfg, arms, data, summary, callbacks, t0)
        except KeyboardInterrupt:  # Ctrl-C outside Tuner.fit (which handles its own)
            return _interrupted(cfg, summary, t0)
    finally:
        if owns_ray:
            ray.shutdown()


def _run_stages(
    cfg: StudyConfig,
    arms: Sequence[str],
    data: Any,
    summary: StudySummary,
    callbacks: Sequence[Any],
    t0: float,
) -> StudySummary:
    from study import tuner
    from trainables.trainable import StudyContext

    ctx = summary.tracking
    outcomes = {}
    for arm in arms:
        study_ctx = StudyContext(ctx, "search", cfg.cpus_per_trial)
        outcome = tuner.run_arm(cfg, arm, data, study_ctx, callbacks)
        summary.outcomes[outcome.name] = outcome
        if outcome.interrupted:
            return _interrupted(cfg, summary, t0)
        close_open_trials(ctx, outcome, "search")
        outcomes[arm] = outcome
    if cfg.seeds > 0:
        seeds = [cfg.seed + i + 1 for i in range(cfg.seeds)]
        for arm, outcome in outcomes.items():
            best = tuner.best_config(outcome)
            if best is None:
                print(f"[study] {arm}: no finished trial, no seeds stage", flush=True)
                continue
            seeds_outcome = tuner.run_grid(
                cfg,
                f"{arm}-seeds",
                best,
                {"seed": seeds},
                data,
                StudyContext(ctx, "seeds", cfg.cpus_per_trial),
                callbacks,
            )
            summary.outcomes[seeds_outcome.name] = seeds_outcome
            if seeds_outcome.interrupted:
                return _interrupted(cfg, summary, t0)
            close_open_trials(ctx, seeds_outcome, "seeds")
    summary.records = tracking.trial_records(ctx)
    print("\n" + per_arm_table(summary.records, arms), flush=True)
    if tracking.is_local_store(ctx.tracking_uri):
        print(f"\nBrowse the runs: mlflow ui --backend-store-uri {ctx.tracking_uri}", flush=True)
    else:
        print(f"\nBrowse the runs: {ctx.tracking_uri}", flush=True)
    if cfg.report:
        summary.report_path = _write_analysis_report(cfg, ctx, summary.study_name)
    if summary.report_path:
        print(f"Report: {summary.report_path}", flush=True)
    tracking.end_study_run(ctx, "FINISHED")
    summary.wall_s = time.perf_counter() - t0
    print(f"[study] {summary.study_name} finished in {summary.wall_s:.0f} s", flush=True)
    return summary


def _interrupted(cfg: StudyConfig, summary: StudySummary, t0: float) -> StudySummary:
    tracking.end_study_run(summary.tracking, "KILLED")
    summary.interrupted, summary.wall_s = True, time.perf_counter() - t0
    print(
        f"\n[study] interrupted. Continue with: python study/run.py --preset {cfg.preset} "
        f"--study-name {summary.study_name} --resume",
        flush=True,
    )
    return summary


def run_single_trial(
    cfg: StudyConfig,
    *,
    arm: str,
    lr: float | None = None,
    seg_ratio: float | None = None,
    gamma: float | None = None,
    out: str | None = None,
):
    """Train one configuration in this process (no Ray, no MLflow) and print its test AUCs.

    Returns:
        trainables.fit.FitResult; outputs (and the latest checkpoint) are in ``result.out_dir``.
    """
    from trainables.data.prepare import prepare_data
    from trainables.fit import fit

    get_arm(arm)
    trial = replace(cfg.trial, arm=arm, lr=lr, seg_ratio=seg_ratio, gamma=gamma, seed=cfg.seed)
    out_dir = (
        Path(out)
        if out
        else (
            Path(cfg.project_dir)
            / "outputs"
            / "single-trial"
            / f"{arm}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    )
    data = prepare_data(cfg.data)
    print(f"[single-trial] data: {data.summary()}\n[single-trial] {trial}", flush=True)
    result = fit(trial, data, out_dir.resolve(), log=lambda m: print(m, flush=True))
    if result.status != "ok":
        print(f"[single-trial] {result.status}: {result.message}", flush=True)
        return result
    rows = [["class", "test AUC [95% CI]"]]
    for key, name in zip(AUC_COLUMNS, ("mean", *CLASSES), strict=True):
        rows.append([name, _ci(result.test, key)])
    print("\n" + "\n".join(_format(rows)), flush=True)
    print(
        f"best epoch {result.best_epoch} (val mean AUC {result.best_val_auc_mean:.3f}); "
        f"outputs in {result.out_dir}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    from study.cli import main

    sys.exit(main())
