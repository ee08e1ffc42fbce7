"""The one study driver: ``run_plan`` runs any plan (``study.plans``) under one lifecycle.

It checks the arms and the encoder before anything starts, resolves and reaches the tracking
store, claims or finds the study's name, starts or joins Ray, prepares the plan's data once, opens
(or on ``--resume`` reopens, after checking settings and data) the MLflow parent run with the git
commit and the data fingerprint, runs the plan's stages, lets the plan conclude, and ends the parent
run FINISHED, FAILED (an exception, or an arm without one successful trial: exit code 1) or
KILLED (Ctrl-C: exit code 130, with the command that resumes it). ``run_study`` is the search plan.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from study import console, lifecycle, progress, results
from study.plans import Plan, SearchPlan
from study.presets import StudyConfig
from study.reconcile import close_after_failure
from study.resources import describe, resolve_resources
from trainables.model_sets import get_arm
from trainables.record import writer as record
from trainables.record.selection import failed_arms
from trainables.record.store import TrackingContext, check_reachable, resolve_tracking_uri, store
from trainables.record.trial import Trial


@dataclass
class StudySummary:
    """What a study invocation produced."""

    study_name: str
    tracking: TrackingContext
    interrupted: bool = False  # stopped by Ctrl-C; continue with --resume
    failed_arms: dict[str, str] = field(default_factory=dict)  # arm -> why no trial succeeded
    records: list[Trial] = field(default_factory=list)
    report_path: str | None = None
    wall_s: float = 0.0
    outcomes: dict[str, Any] = field(default_factory=dict)  # Tune experiment name -> ArmOutcome

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed_arms else 0


def check_before_start(arms: Sequence[str], encoder: str) -> None:
    """Unknown arms and encoders are refused before any data is read or Ray starts.

    Raises:
        KeyError: an unknown arm (listing the valid ones). ValueError: an unknown encoder.
    """
    for arm in arms:
        get_arm(arm)
    from trainables.model import check_encoder

    check_encoder(encoder)


def run_study(
    cfg: StudyConfig, *, callbacks: Sequence[Any] = (), trainable: Any = None
) -> StudySummary:
    """Run (or resume) the search plan: the paper's study."""
    return run_plan(SearchPlan(), cfg, callbacks=callbacks, trainable=trainable)


def run_plan(
    plan: Plan, cfg: StudyConfig, *, callbacks: Sequence[Any] = (), trainable: Any = None
) -> StudySummary:
    """Run (or resume) ``plan``; see the module docstring.

    Args:
        plan: which trials to run and how to conclude.
        cfg: the resolved StudyConfig (``study.cli`` builds it from a preset and flags);
            ``gpus_per_trial`` / ``max_concurrent`` left None are set from the Ray cluster.
        callbacks: extra Tune callbacks for every experiment (tests inject failures with them).
        trainable: builds each stage's Tune trainable (``study.tuner.TrainableFactory``); default
            the real trial. ``benchmarks.cluster_sim`` passes simulated trials.
    """
    import ray

    from study import tuner
    from study.stages import StageRunner
    from trainables.data.prepare import prepare_data
    from trainables.trainable import StudyContext

    t0 = time.perf_counter()
    console.quiet_console(cfg.verbose)
    arms = plan.arms(cfg)
    check_before_start(arms, cfg.trial.encoder)
    uri = resolve_tracking_uri(cfg.tracking_uri, cfg.project_dir)
    check_reachable(uri)
    experiment_id = record.get_or_create_experiment(uri, cfg.experiment)
    cfg = dataclasses.replace(cfg, tracking_uri=uri)
    name = lifecycle.study_name(cfg, experiment_id, plan.name_prefix or cfg.preset)
    cfg = dataclasses.replace(cfg, study_name=name)
    lifecycle.claim_name(cfg)
    owns_ray = lifecycle.connect_ray(cfg, console.ray_init_options(cfg.verbose))
    try:
        cluster = ray.cluster_resources()
        cfg = resolve_resources(cfg, cluster)
        print(f"[study] {describe(cfg, cluster)}", flush=True)
        tuner.check_storage_path(cfg.storage_root(), tuner.cluster_hosts(), shared=cfg.storage_is_shared)  # fmt: skip
        data = {key: prepare_data(dc) for key, dc in plan.datasets(cfg).items()}
        for key, d in data.items():
            print(f"[study] data{f' ({key})' if key else ''}: {d.summary()}", flush=True)
        summaries = {key: d.summary_dict() for key, d in data.items()}
        summary = summaries[None] if None in summaries else combined_summary(summaries)
        settings = plan.settings(cfg, arms)
        print(plan.header(cfg, arms), flush=True)
        ctx = lifecycle.open_parent(cfg, experiment_id, plan.kind, settings, summary["fingerprint"])
        out = StudySummary(name, ctx)
        try:
            if not cfg.resume:
                config = {**cfg.to_dict(), "plan": plan.extra_settings(), "settings": settings}
                record.log_study_settings(ctx, plan.params(cfg, arms), config)
            results.record_study_start(ctx, cfg, summary, plan.note(cfg, arms, data))
            results.record_ceiling(ctx, next(iter(data.values())))
            board = progress.ProgressBoard(arms, plan.trials_per_arm(cfg))
            trial_ctx = StudyContext(
                ctx, cpus_per_trial=cfg.cpus_per_trial, placement=cfg.placement,
                search_metric=cfg.search_metric,
            )  # fmt: skip
            launch = tuner.Launch(
                cfg, data[None] if list(data) == [None] else data, trial_ctx,
                (*callbacks, progress.TuneProgress(name, board)), trainable,
            )  # fmt: skip
            runner = StageRunner(launch)
            out.outcomes = runner.outcomes
            if not plan.run(runner):
                return _interrupted(cfg, out, t0)
            return _conclude(plan, cfg, out, data, t0)
        except KeyboardInterrupt:  # Ctrl-C outside Tuner.fit (which handles its own)
            return _interrupted(cfg, out, t0)
        except BaseException as exc:  # the parent run must not stay RUNNING
            close_after_failure(ctx, exc)
            raise
    finally:
        if owns_ray:
            ray.shutdown()


def combined_summary(summaries: dict[str | None, dict]) -> dict:
    """One ``study/data.json`` for several datasets: each one's summary, and one fingerprint."""
    fingerprint = lifecycle.digest({str(k): s["fingerprint"] for k, s in summaries.items()})
    return {"datasets": {str(k): s for k, s in summaries.items()}, "fingerprint": fingerprint}


def _conclude(
    plan: Plan, cfg: StudyConfig, out: StudySummary, data: dict, t0: float
) -> StudySummary:
    ctx = out.tracking
    out.records = store(ctx.tracking_uri).trials(ctx)
    done = plan.conclude(cfg, ctx, out.records, data)
    out.report_path = str(done.report) if done.report else None
    print("\n".join(done.lines), flush=True)
    print("\n" + "\n".join(console.results_block(ctx, done.views, out.report_path)), flush=True)
    out.failed_arms = failed_arms(out.records, plan.arms(cfg))
    if out.failed_arms:
        why = "; ".join(f"{arm}: {reason}" for arm, reason in out.failed_arms.items())
        print(f"[study] no successful trial for {len(out.failed_arms)} arm(s): {why}", flush=True)
        record.end_study_run(ctx, "FAILED", error=f"no successful trial for arm(s): {why}")
    else:
        record.end_study_run(ctx, "FINISHED")
    out.wall_s = time.perf_counter() - t0
    print(f"[study] {out.study_name} {'failed' if out.failed_arms else 'finished'} in {out.wall_s:.0f} s", flush=True)  # fmt: skip
    return out


def _interrupted(cfg: StudyConfig, out: StudySummary, t0: float) -> StudySummary:
    record.end_study_run(out.tracking, "KILLED")
    out.interrupted, out.wall_s = True, time.perf_counter() - t0
    print(f"\n[study] interrupted. Continue with: {console.resume_command(cfg)}", flush=True)
    return out
