"""The data-efficiency plan: does gaze guidance help when labels are scarce?

    gaze-study evidence --plan data-efficiency            # 6 arms x 4 sizes x 5 seeds
    gaze-study evidence --plan data-efficiency --quick    # 3 arms x 2 sizes x 2 seeds

The gaze literature's usual claim is sample efficiency. On the clean twin, every arm trains on
24, 48, 96 and 192 of the training images (``DataConfig.train_images``: whole patients, classes
in turn, the smaller sets inside the larger ones), and every size is tested on the same
validation and test images. Seed s draws the subsets with seed s and trains with seed s, so each
seed is a different small training set and arms are paired on it. A smaller set trains more
epochs, up to ``max_epochs``, so that every size takes about the same number of optimiser steps
(4 epochs of 192 images = 32 epochs of 24): with a fixed epoch count the small sets would mostly
measure how few steps they got. ``analysis.efficiency`` reports test mean AUC against size per
arm, with paired differences against ``unet`` and 95% CIs over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from study.evidence import SEEDS, EvidenceGrid
from study.plans import PLANS
from study.presets import StudyConfig
from trainables.config import DataConfig
from trainables.record import PARAM_PLAN, TAG_TRAIN_IMAGES, TAG_TWIN

# The paper's strongest arm, the reference models and what issue 19 asks about: the share loss,
# its density form, and the two baselines.
EFFICIENCY_ARMS: tuple[str, ...] = (
    "unet", "set3-gbp", "rrr-share", "density-share", "gaze-mask", "cutout",
)  # fmt: skip
TRAIN_SIZES: tuple[int, ...] = (24, 48, 96, 192)  # 192: all of the 384-image twin's 50% split


def dataset_key(n: int, seed: int) -> str:
    return f"n{n}-s{seed}"


@PLANS.register("data-efficiency")
@dataclass(frozen=True)
class DataEfficiencyPlan(EvidenceGrid):
    """Arms x training-set sizes x seeds on the clean twin; the same validation and test images."""

    name_prefix = "efficiency"
    plan_name = "data-efficiency"

    arms_run: tuple[str, ...] = EFFICIENCY_ARMS
    seeds: tuple[int, ...] = SEEDS  # trial seeds, and the seeds of each seed's subsets
    train_sizes: tuple[int, ...] = TRAIN_SIZES
    max_epochs: int = 32  # the most epochs a small set trains (the study's epochs at the largest)

    def __post_init__(self) -> None:
        if not self.train_sizes or min(self.train_sizes) < 3 or self.max_epochs < 1:
            raise ValueError(f"train sizes must be >= 3 images, got {self.train_sizes}")

    def arms(self, cfg: StudyConfig) -> list[str]:
        return list(self.arms_run)

    def epochs_for(self, cfg: StudyConfig, n: int) -> int:
        """Epochs at ``n`` images: the study's epochs x largest size / n, at most ``max_epochs``
        (never fewer than the study's)."""
        scaled = math.ceil(cfg.trial.epochs * max(self.train_sizes) / n)
        return max(cfg.trial.epochs, min(self.max_epochs, scaled))

    def datasets(self, cfg: StudyConfig) -> dict[str | None, DataConfig]:
        return {
            dataset_key(n, seed): self.base_data(cfg, train_images=n, train_images_seed=seed)
            for n in self.train_sizes
            for seed in self.seeds
        }

    def extra_settings(self) -> dict[str, Any]:
        fields = ("seeds", "train_sizes", "max_epochs")
        return {"efficiency": {k: getattr(self, k) for k in fields}, PARAM_PLAN: self.plan_name}

    def params(self, cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
        return {
            **self.common_params(cfg), "arms": ",".join(arms),
            "seeds": ",".join(map(str, self.seeds)),
            "train_sizes": ",".join(map(str, self.train_sizes)),
            "epochs_per_size": ",".join(str(self.epochs_for(cfg, n)) for n in self.train_sizes),
        }  # fmt: skip

    def describe(self, cfg: StudyConfig) -> str:
        epochs = ", ".join(f"{n}: {self.epochs_for(cfg, n)}" for n in self.train_sizes)
        return (
            f"{len(self.arms_run)} arms x {len(self.train_sizes)} training sizes x "
            f"{len(self.seeds)} seeds on the clean twin (epochs per size {epochs})"
        )

    def grid_trials(self, cfg: StudyConfig) -> list:
        from study.stages import GridTrial

        return [
            GridTrial(
                dataclasses.replace(cfg.trial, arm=arm, seed=seed, epochs=self.epochs_for(cfg, n)),
                dataset_key(n, seed),
                {TAG_TWIN: "clean", TAG_TRAIN_IMAGES: str(n)},
            )
            for n in self.train_sizes
            for arm in self.arms_run
            for seed in self.seeds
        ]

    @classmethod
    def from_args(cls, args: argparse.Namespace, arms: Sequence[str] | None) -> DataEfficiencyPlan:
        quick = cls(arms_run=("unet", "rrr-share", "gaze-mask"), seeds=(0, 1), train_sizes=(24, 96))  # fmt: skip
        base = quick if args.quick else cls()
        return cls(
            arms_run=tuple(arms or base.arms_run),
            seeds=tuple(range(args.evidence_seeds)) if args.evidence_seeds else base.seeds,
            train_sizes=args.train_sizes or base.train_sizes,
        )
