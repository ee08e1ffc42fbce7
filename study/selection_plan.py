"""The selection plan: can a study choose a guided arm's hyperparameters without the test set?

    gaze-study evidence --plan selection            # rrr-share lambda x lr, + the baselines' lr
    gaze-study evidence --plan selection --quick    # 3 lambdas, one lr, 2 seeds

On the shortcut twin validation carries the shortcut too (validation AUC ~0.99 for every arm that
learned it), so selecting by it prefers the shortcut, and the test split, where the shortcut
breaks, must not be read. Every configuration of a small grid (``share_lambda`` x ``lr`` for an
arm whose loss has the weight, ``lr`` alone for the others; lambda 0 is rrr-share without its
penalty, the configuration a rule should avoid) trains with several seeds and logs the blind
validation signals every epoch (``TrialConfig.selection_signals``). ``analysis.selection`` then
reports, per rule (plain validation AUC, masked validation AUC, gaze agreement, their
combination), the configuration it picks from validation alone, the test AUC of that pick and of
the oracle pick (the best test AUC), per arm and over every configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from study.evidence import SEEDS, EvidenceGrid, EvidencePlan
from study.plans import PLANS
from study.presets import StudyConfig
from trainables.config import DataConfig
from trainables.record import PARAM_PLAN, TAG_TWIN, TAG_VARIANT

SELECTION_ARMS: tuple[str, ...] = ("rrr-share", "gaze-mask", "cutout")
LAMBDAS: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0, 10.0)
LRS: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
TWIN = "shortcut"


def variant_label(arm: str, overrides: dict[str, float]) -> str:
    """``rrr-share lambda=1 lr=0.001``: a configuration's name in tags and tables."""
    names = {"share_lambda": "lambda"}
    return " ".join([arm, *(f"{names.get(k, k)}={v:g}" for k, v in overrides.items())])


@PLANS.register("selection")
@dataclass(frozen=True)
class SelectionPlan(EvidenceGrid):
    """A hyperparameter grid x seeds on the shortcut twin, every trial logging the blind signals."""

    name_prefix = "selection"
    plan_name = "selection"

    arms_run: tuple[str, ...] = SELECTION_ARMS
    seeds: tuple[int, ...] = SEEDS
    lambdas: tuple[float, ...] = LAMBDAS  # share_lambda, for arms whose loss has it
    lrs: tuple[float, ...] = LRS
    shortcut: str = "marker"

    def arms(self, cfg: StudyConfig) -> list[str]:
        return list(self.arms_run)

    def configurations(self) -> list[tuple[str, str, dict[str, float]]]:
        """``(label, arm, overrides)`` of every grid point, in order."""
        from trainables.model_sets import get_arm

        out = []
        for arm in self.arms_run:
            weighted = "share_lambda" in get_arm(arm).hyperparams
            for lam, lr in itertools.product(self.lambdas if weighted else (None,), self.lrs):
                overrides = {"share_lambda": lam} if lam is not None else {}
                overrides["lr"] = lr
                out.append((variant_label(arm, overrides), arm, overrides))
        return out

    def datasets(self, cfg: StudyConfig) -> dict[str | None, DataConfig]:
        twin = EvidencePlan(shortcut=self.shortcut).twin(cfg, TWIN)
        return {TWIN: twin}

    def extra_settings(self) -> dict[str, Any]:
        fields = ("seeds", "lambdas", "lrs", "shortcut")
        return {"selection": {k: getattr(self, k) for k in fields}, PARAM_PLAN: self.plan_name}

    def params(self, cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
        return {
            **self.common_params(cfg), "arms": ",".join(arms),
            "seeds": ",".join(map(str, self.seeds)), "shortcut": self.shortcut,
            "lambdas": ",".join(f"{v:g}" for v in self.lambdas),
            "lrs": ",".join(f"{v:g}" for v in self.lrs),
        }  # fmt: skip

    def describe(self, cfg: StudyConfig) -> str:
        return (
            f"{len(self.configurations())} configurations x {len(self.seeds)} seeds on the "
            f"{self.shortcut} shortcut twin, blind validation signals logged every epoch"
        )

    def grid_trials(self, cfg: StudyConfig) -> list:
        from study.stages import GridTrial

        base = dataclasses.replace(cfg.trial, selection_signals=True)
        return [
            GridTrial(
                dataclasses.replace(base, arm=arm, seed=seed, **overrides),
                TWIN,
                {TAG_TWIN: TWIN, TAG_VARIANT: label},
            )
            for label, arm, overrides in self.configurations()
            for seed in self.seeds
        ]

    @classmethod
    def from_args(cls, args: argparse.Namespace, arms: Sequence[str] | None) -> SelectionPlan:
        quick = cls(arms_run=("rrr-share", "gaze-mask"), seeds=(0, 1), lambdas=(0.0, 1.0, 10.0), lrs=(1e-3,))  # fmt: skip
        base = quick if args.quick else cls()
        return cls(
            arms_run=tuple(arms or base.arms_run),
            seeds=tuple(range(args.evidence_seeds)) if args.evidence_seeds else base.seeds,
            lambdas=args.lambdas or base.lambdas,
            lrs=args.lrs or base.lrs,
            shortcut=args.shortcut or base.shortcut,
        )
