"""The study driver: ``run_study`` prepares the data once, opens the MLflow parent run, searches
all arms side by side (or one after another with ``sequential_arms``; ``study.tuner``), optionally
re-runs each arm's best config with more seeds, closes the records of early-stopped trials, prints
the per-arm table and writes the analysis report. The command line is ``study.cli``
(``gaze-study``, ``python -m study``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study import console, progress, results
from study.console import per_arm_table
from study.presets import StudyConfig
from study.reconcile import close_after_failure
from study.resources import describe, resolve_resources
from trainables import tracking
from trainables.config import replace
from trainables.model_sets import get_arm, paper_arms

if TYPE_CHECKING:
    from study.tuner import TrainableFactory


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
    if cfg.resume and not cfg.study_name:
        found = tracking.find_study_run(uri, experiment_id, preset=cfg.preset)
        if found is None:
            raise SystemExit(
                f"--resume: no study of preset {cfg.preset!r} in this MLflow experiment; "
                f"pass --study-name"
            )
        return found[1]
    if (
        cfg.resume
        and tracking.find_study_run(uri, experiment_id, study_name=cfg.study_name) is None
    ):
        raise SystemExit(
            f"--resume: no study named {cfg.study_name!r} in MLflow experiment {cfg.experiment!r} "
            f"({uri}); drop --resume to start it"
        )
    return cfg.study_name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _connect_ray(cfg: StudyConfig) -> bool:
    """Start or join Ray; True when this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    # Workers import trainables/ and study/ from the project root, wherever the driver was started.
    path = os.pathsep.join(p for p in (cfg.project_dir, os.environ.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": {"PYTHONPATH": path}},
        **console.ray_init_options(cfg.verbose),
    }
    if cfg.address is None:
        kwargs["include_dashboard"] = False
    # Without --address: a new local instance ("local"), not whatever cluster a `ray start` left
    # running on this machine (ray.init(None) would attach to it); --address auto joins one.
    ray.init(address=cfg.address or "local", **kwargs)
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
        "image_size": cfg.data.image_size,
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


def run_study(
    cfg: StudyConfig, *, callbacks: Sequence[Any] = (), trainable: TrainableFactory | None = None
) -> StudySummary:
    """Run (or resume) a whole study; see the module docstring.

    Args:
        cfg: the resolved StudyConfig (``study.cli`` builds it from a preset and flags);
            ``gpus_per_trial`` / ``max_concurrent`` left None are set from the Ray cluster
            (``study.resources.resolve_resources``).
        callbacks: extra Tune callbacks for every Tuner (tests use them to inject failures).
        trainable: builds each stage's Tune trainable; default ``study.tuner.trainable`` (the real
            trial). ``benchmarks.cluster_sim`` passes simulated trials.

    Returns:
        StudySummary; ``interrupted`` when Ctrl-C stopped it (re-run with ``--resume``).
    """
    import ray

    from study import tuner
    from trainables.data.prepare import prepare_data

    t0 = time.perf_counter()
    console.quiet_console(cfg.verbose)
    arms = list(cfg.arms) or paper_arms()
    for arm in arms:
        get_arm(arm)  # unknown arm: KeyError listing the valid ones, before anything starts
    uri = tracking.resolve_tracking_uri(cfg.tracking_uri, cfg.project_dir)
    experiment_id = tracking.get_or_create_experiment(uri, cfg.experiment)
    cfg = replace(cfg, study_name=_study_name(cfg, uri, experiment_id))
    if cfg.data.egd_root is None and cfg.preset == "paper":
        print(
            "[study] note: no --data given; the paper preset runs on the synthetic twin", flush=True
        )

    tuner.check_experiments(cfg, arms)
    owns_ray = _connect_ray(cfg)
    try:
        cluster = ray.cluster_resources()
        cfg = resolve_resources(cfg, cluster)
        print(f"[study] {describe(cfg, cluster)}", flush=True)
        tuner.check_storage_path(
            cfg.storage_root(), tuner.cluster_hosts(), shared=cfg.storage_is_shared
        )
        data = prepare_data(cfg.data)
        print(f"[study] data: {data.summary()}", flush=True)
        print(console.study_header(cfg, arms), flush=True)
        ctx = tracking.start_study_run(
            uri,
            experiment_id,
            study_name=str(cfg.study_name),
            preset=cfg.preset,
            params=study_params(cfg, arms),
            config=cfg.to_dict(),
            resume=cfg.resume,
        )
        results.record_study_start(ctx, cfg, arms, data)
        summary = StudySummary(str(cfg.study_name), ctx)
        try:
            return _run_stages(
                cfg, arms, data, summary, callbacks, trainable or tuner.trainable, t0
            )
        except KeyboardInterrupt:  # Ctrl-C outside Tuner.fit (which handles its own)
            return _interrupted(cfg, summary, t0)
        except BaseException as exc:  # the parent run must not stay RUNNING
            close_after_failure(ctx, exc)
            raise
    finally:
        if owns_ray:
            ray.shutdown()


def _run_stages(
    cfg: StudyConfig,
    arms: Sequence[str],
    data: Any,
    summary: StudySummary,
    callbacks: Sequence[Any],
    make_trainable: TrainableFactory,
    t0: float,
) -> StudySummary:
    from study.stages import arms_in_turn, arms_side_by_side

    ctx = summary.tracking
    board = progress.ProgressBoard(arms, cfg.trials_per_arm + cfg.seeds)
    callbacks = [*callbacks, progress.TuneProgress(str(cfg.study_name), board)]
    stages = arms_in_turn if cfg.sequential_arms else arms_side_by_side
    if not stages(cfg, arms, data, ctx, summary.outcomes, callbacks, make_trainable):
        return _interrupted(cfg, summary, t0)
    summary.records = tracking.trial_records(ctx)
    views = results.record_study_end(ctx, cfg, summary.records, arms, data)
    print("\n" + per_arm_table(summary.records, arms), flush=True)
    if cfg.report:
        summary.report_path = _write_analysis_report(cfg, ctx, summary.study_name)
    print("\n" + "\n".join(console.results_block(ctx, views, summary.report_path)), flush=True)
    tracking.end_study_run(ctx, "FINISHED")
    summary.wall_s = time.perf_counter() - t0
    print(f"[study] {summary.study_name} finished in {summary.wall_s:.0f} s", flush=True)
    return summary


def _interrupted(cfg: StudyConfig, summary: StudySummary, t0: float) -> StudySummary:
    tracking.end_study_run(summary.tracking, "KILLED")
    summary.interrupted, summary.wall_s = True, time.perf_counter() - t0
    print(f"\n[study] interrupted. Continue with: {console.resume_command(cfg)}", flush=True)
    return summary
