"""The study's two stages, search and seeds, with the arms side by side or one after another.

Side by side (the default): one search experiment for all arms (``study.tuner.run_arms``), then
one seeds experiment re-running every arm's best config with each further seed. In turn
(``sequential_arms``, the old order): each arm's search, then each arm's seeds, one Tuner after
another. Each function records every Tuner's outcome in ``outcomes`` (Tune experiment name ->
``ArmOutcome``), closes the MLflow records of the trials that ended, and returns False when Ctrl-C
stopped a Tuner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from study import tuner
from study.presets import StudyConfig
from study.reconcile import close_open_trials, orphan_lost_trials
from trainables import tracking
from trainables.config import TrialConfig, replace
from trainables.record import STAGES
from trainables.trainable import StudyContext


def _ended(outcomes: dict[str, Any], outcome: tuner.ArmOutcome, study: StudyContext) -> bool:
    outcomes[outcome.name] = outcome
    if outcome.interrupted:
        return False
    close_open_trials(study.tracking, outcome, study.stage)
    return True


def _best(outcome: tuner.ArmOutcome, arm: str) -> TrialConfig | None:
    best = tuner.best_config(outcome, arm)
    if best is None:
        print(f"[study] {arm}: no finished trial, no seeds stage", flush=True)
    return best


def _seed_values(cfg: StudyConfig) -> list[int]:
    return [cfg.seed + i + 1 for i in range(cfg.seeds)]


def _before(cfg: StudyConfig, name: str, study: StudyContext, arms: Sequence[str]) -> None:
    """On --resume, close the runs that Tune's saved state of experiment ``name`` does not own."""
    if cfg.resume:
        path = f"{tuner.experiment_root(cfg)}/{name}"
        orphan_lost_trials(study.tracking, path, study.stage, arms)


def _contexts(cfg: StudyConfig, ctx: tracking.TrackingContext) -> list[StudyContext]:
    """The search and seeds stages' trial contexts."""
    return [StudyContext(ctx, stage, cfg.cpus_per_trial) for stage in STAGES[:2]]


def arms_side_by_side(
    cfg: StudyConfig,
    arms: Sequence[str],
    data: Any,
    ctx: tracking.TrackingContext,
    outcomes: dict[str, Any],
    callbacks: Sequence[Any],
    make_trainable: tuner.TrainableFactory,
) -> bool:
    """All arms in one search experiment, then all arms' seeds in one."""
    search, seeds = _contexts(cfg, ctx)
    _before(cfg, tuner.SEARCH, search, arms)
    outcome = tuner.run_arms(cfg, arms, data, search, callbacks, make_trainable)
    if not _ended(outcomes, outcome, search):
        return False
    best = [b for arm in arms if cfg.seeds and (b := _best(outcome, arm)) is not None]
    configs = [replace(b, seed=s) for b in best for s in _seed_values(cfg)]
    if not configs:
        return True
    _before(cfg, tuner.SEEDS, seeds, arms)
    run = tuner.run_configs(cfg, tuner.SEEDS, configs, data, seeds, callbacks, make_trainable)
    return _ended(outcomes, run, seeds)


def arms_in_turn(
    cfg: StudyConfig,
    arms: Sequence[str],
    data: Any,
    ctx: tracking.TrackingContext,
    outcomes: dict[str, Any],
    callbacks: Sequence[Any],
    make_trainable: tuner.TrainableFactory,
) -> bool:
    """Each arm's search, then each arm's seeds, one Tuner after another."""
    search, seeds = _contexts(cfg, ctx)
    searched = {}
    for arm in arms:
        _before(cfg, arm, search, [arm])
        outcome = tuner.run_arm(cfg, arm, data, search, callbacks, make_trainable)
        if not _ended(outcomes, outcome, search):
            return False
        searched[arm] = outcome
    for arm, outcome in searched.items() if cfg.seeds else ():
        best = _best(outcome, arm)
        if best is None:
            continue
        grid = {"seed": _seed_values(cfg)}
        _before(cfg, f"{arm}-seeds", seeds, [arm])
        run = tuner.run_grid(
            cfg, f"{arm}-seeds", best, grid, data, seeds, callbacks, make_trainable
        )
        if not _ended(outcomes, run, seeds):
            return False
    return True
