"""What a study runs: plans under the one driver (``study.driver``).

A plan says which trials to run and how its results are concluded; the driver owns everything
else (Ray, the parent run and its end state, the git commit, the data fingerprint, resume). A
plan is one registry entry: ``search`` (the paper's study: every arm's Optuna search, then each
arm's best configuration with more seeds) here, ``evidence`` (clean vs shortcut twins, arms x
seeds) and ``scanning`` in ``study.evidence``, ``data-efficiency`` in ``study.efficiency``,
``selection`` in ``study.selection_plan`` and ``border`` in ``study.border``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from study import console
from study.presets import StudyConfig
from trainables.config import DataConfig, TrialConfig
from trainables.record import Kind, Stage
from trainables.registry import Registry

if TYPE_CHECKING:
    from study.stages import StageRunner
    from trainables.data.cached import CachedData
    from trainables.record.store import TrackingContext
    from trainables.record.trial import Trial

# data summaries that are not about data contents: never part of a study's identity
_DATA_LOCATIONS = ("data_root", "mimic_root", "image_list", "data_dir", "split_file")
# study fields that say how and where a study runs, not what its trials are
_RUN_FIELDS = ("study_name", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "address",
               "storage_path", "storage_is_shared", "tracking_uri", "experiment", "optuna_storage",
               "resume", "verbose", "command", "report", "project_dir", "max_failures")  # fmt: skip


@dataclass
class Conclusion:
    """What a plan gives back once its trials ran."""

    report: Path | None = None  # the HTML report, when one was written
    lines: list[str] = field(default_factory=list)  # printed after the trials' lines
    views: dict[str, str] = field(default_factory=dict)  # label -> saved MLflow view key


class Plan(ABC):
    """Which trials a study runs, and what it concludes from them."""

    kind: ClassVar[Kind]
    name_prefix: ClassVar[str]  # of a generated study name

    @abstractmethod
    def arms(self, cfg: StudyConfig) -> list[str]: ...

    def datasets(self, cfg: StudyConfig) -> dict[str | None, DataConfig]:
        """Name -> data (None: the study's one dataset)."""
        return {None: cfg.data}

    def extra_settings(self) -> dict[str, Any]:
        """The plan's own settings beyond the StudyConfig's."""
        return {}

    def settings(self, cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
        """What the study's trials are: checked on ``--resume`` (a change is refused), logged in
        ``study/config.json``. Where it runs (resources, storage, tracking) is not part of it."""
        study = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in (*_RUN_FIELDS, "data", "trial", "placement")}  # fmt: skip
        data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in _DATA_LOCATIONS}
        return {"plan": self.kind.value, "arms": list(arms), "study": study,
                "trial": cfg.trial.to_dict(), "data": data, **self.extra_settings()}  # fmt: skip

    @abstractmethod
    def params(self, cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
        """A readable subset of the settings, as params of the parent run."""

    @abstractmethod
    def trials_per_arm(self, cfg: StudyConfig) -> int:
        """Trials each arm runs in all (the progress board's count)."""

    def header(self, cfg: StudyConfig, arms: Sequence[str]) -> str:
        return console.study_header(cfg, arms)

    def note(
        self, cfg: StudyConfig, arms: Sequence[str], data: dict[str | None, CachedData]
    ) -> str:
        """The parent run's description while the study runs (and the end of it afterwards)."""
        from study.results import study_description

        return study_description(cfg, arms, next(iter(data.values())).summary_dict())

    @abstractmethod
    def run(self, runner: StageRunner) -> bool:
        """Run the plan's stages; False when Ctrl-C stopped one."""

    @abstractmethod
    def conclude(self, cfg: StudyConfig, ctx: TrackingContext, trials: Sequence[Trial], data: dict[str | None, CachedData]) -> Conclusion:  # fmt: skip
        """Record and report the results (after every stage ended)."""


PLANS: Registry[type[Plan]] = Registry("plan")


# The modules whose plans register themselves on import (the search plan is below).
PLAN_MODULES = ("study.evidence", "study.efficiency", "study.selection_plan", "study.border")


def _load_plans() -> Registry[type[Plan]]:
    import importlib

    for module in PLAN_MODULES:
        importlib.import_module(module)
    return PLANS


def get_plan(name: str) -> type[Plan]:
    """The plan class registered as ``name`` (KeyError listing the valid ones)."""
    return _load_plans().get(name)


def plan_names(kind: Kind | None = None) -> list[str]:
    """Every registered plan's name (of ``kind`` only, when given), in registration order."""
    return [e.name for e in _load_plans() if kind is None or e.obj.kind is kind]


@PLANS.register("search")
class SearchPlan(Plan):
    """The paper's study: every arm's hyperparameters searched at once (Optuna + ASHA per arm),
    then, with ``seeds``, each arm's best configuration re-run with seed + 1, + 2, ..."""

    kind = Kind.STUDY
    name_prefix = ""  # the preset's name

    def arms(self, cfg: StudyConfig) -> list[str]:
        from trainables.model_sets import paper_arms

        return list(cfg.arms) or paper_arms()

    def params(self, cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
        from study.tuner import arm_space

        params: dict[str, Any] = {
            "preset": cfg.preset, "study_name": cfg.study_name, "arms": ",".join(arms),
            "trials_per_arm": cfg.trials_per_arm, "epochs": cfg.trial.epochs,
            "image_size": cfg.data.image_size, "encoder": cfg.trial.encoder,
            "encoder_weights": cfg.trial.encoder_weights, "batch_size": cfg.trial.batch_size,
            "seed": cfg.seed, "seeds": cfg.seeds, "search_space": cfg.search_space,
            "grace_period": cfg.grace_period, "reduction_factor": cfg.reduction_factor,
            "bootstrap_resamples": cfg.trial.bootstrap_resamples,
            "dataset": cfg.data.dataset, "data": "files" if cfg.data.data_root else "synthetic twin",
        }  # fmt: skip
        for arm in arms:
            space = arm_space(cfg, arm)
            params[f"space/{arm}"] = ",".join(
                f"{k}:{r.low:g}-{r.high:g}{' log' if r.log else ''}"
                for k, r in space.params.items()
            )
        return params

    def trials_per_arm(self, cfg: StudyConfig) -> int:
        return cfg.trials_per_arm + cfg.seeds

    def run(self, runner: StageRunner) -> bool:
        from study.stages import GridTrial
        from trainables.record.selection import best_of_arm
        from trainables.record.store import store

        cfg, ctx = runner.launch.cfg, runner.launch.study.tracking
        arms = self.arms(cfg)
        if runner.search(arms) is None:
            return False
        if not cfg.seeds:
            return True
        searched = store(ctx.tracking_uri).trials(ctx, stage=Stage.SEARCH)
        trials = []
        for arm in arms:
            best = best_of_arm(searched, arm)
            if best is None:
                print(f"[study] {arm}: no finished trial, no seeds stage", flush=True)
                continue
            config = TrialConfig.from_params(best.params)
            trials += [GridTrial(dataclasses.replace(config, seed=cfg.seed + i + 1)) for i in range(cfg.seeds)]  # fmt: skip
        return not trials or runner.grid(Stage.SEEDS, trials) is not None

    def conclude(self, cfg, ctx, trials, data) -> Conclusion:
        from study.results import record_study_end

        arms = self.arms(cfg)
        task = next(iter(data.values())).task
        end = record_study_end(ctx, cfg, trials, arms, self.note(cfg, arms, data), task)
        table = console.per_arm_table(trials, arms, task)
        out = Conclusion(views=end.views, lines=["", table, f"Verdict: {end.verdict}"])
        if cfg.report:
            from analysis.report import write_report

            out_dir = Path(cfg.project_dir) / "outputs" / "reports" / str(cfg.study_name)
            out.report = write_report(ctx.tracking_uri, cfg.experiment, out_dir, parent=ctx.parent_run_id, log_to_mlflow=True)  # fmt: skip
        return out
