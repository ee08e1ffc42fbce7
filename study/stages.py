"""Running a plan's stages: ``StageRunner.search`` (every arm's Optuna search in one experiment)
and ``StageRunner.grid`` (fixed trials: seed re-runs, evidence grids). Around each experiment: on
``--resume`` the runs Tune's saved state does not own are closed as orphaned first; afterwards every
trial that ended gets its final status in MLflow. Each returns None when Ctrl-C stopped it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from study import tuner
from study.reconcile import close_open_trials, orphan_lost_trials
from trainables.config import TrialConfig
from trainables.record import Stage
from trainables.trainable import DATASET_KEY, TAG_PREFIX


@dataclass(frozen=True)
class GridTrial:
    """One fixed trial of a grid stage: its config, the dataset it trains on (a key of the plan's
    datasets, or None for the study's one dataset) and extra tags of its run."""

    config: TrialConfig
    dataset: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def tune_config(self) -> dict[str, Any]:
        out: dict[str, Any] = self.config.to_dict()
        if self.dataset is not None:
            out[DATASET_KEY] = self.dataset
        out.update({TAG_PREFIX + k: v for k, v in self.tags.items()})
        return out


@dataclass
class StageRunner:
    """Runs a plan's experiments under one driver (which owns Ray, the parent run and resume)."""

    launch: tuner.Launch
    outcomes: dict[str, tuner.ArmOutcome] = field(default_factory=dict)

    def _run(self, stage: Stage, name: str, arms: Sequence[str], start) -> tuner.ArmOutcome | None:
        launch = self.launch.for_stage(stage)
        ctx = launch.study.tracking
        if launch.cfg.resume:
            orphan_lost_trials(ctx, tuner.experiment_path(launch.cfg, name), stage, arms)
        outcome = start(launch)
        self.outcomes[name] = outcome
        if outcome.interrupted:
            return None
        close_open_trials(ctx, outcome, stage)
        return outcome

    def search(self, arms: Sequence[str]) -> tuner.ArmOutcome | None:
        """Every arm's search, in one experiment named after the stage."""
        return self._run(
            Stage.SEARCH, Stage.SEARCH, arms, lambda la: tuner.search(la, arms, Stage.SEARCH)
        )

    def grid(self, stage: Stage, trials: Sequence[GridTrial]) -> tuner.ArmOutcome | None:
        """The given trials, in one experiment named after the stage."""
        points = [t.tune_config() for t in trials]
        arms = sorted({t.config.arm for t in trials})
        return self._run(stage, stage, arms, lambda la: tuner.grid(la, stage, points))
