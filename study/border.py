"""The border plan: why does an outside-gaze loss recover only part of the border shortcut?

    gaze-study evidence --plan border            # 10 variants x 5 calibration seeds x 2 twins
    gaze-study evidence --plan border --quick    # 5 variants x 2 calibration seeds

A bright line along one edge codes the class (``--shortcut border``); rrr-share recovered 42% of
what it costs ``unet`` there (issue 19), against ~100% on a corner marker. Candidate reasons: the
threshold (is the line under the gaze?), the loss weight, the loss form (hard threshold vs
density weight), where the line sits relative to the gaze. Each ``Variant`` is one arm with a few
TrialConfig fields changed; all run on a clean and a border twin with CALIBRATION seeds (10, 11,
...), never the evidence seeds (0-4), so that a setting chosen here is then tested, not tuned, by
``gaze-study evidence --shortcut border --set trial.<field>=<value>``. ``analysis.border`` reports
each variant's recovered share and clean AUC against ``unet`` and the default rrr-share, and the
gaze's coverage of the line's pixels (``analysis.shortcut_coverage``) on the plan's own twins.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from study.evidence import TWINS, EvidenceGrid, EvidencePlan, twin_name
from study.plans import PLANS
from study.presets import StudyConfig
from trainables.config import DataConfig
from trainables.record import PARAM_PLAN, TAG_TWIN, TAG_VARIANT

CALIBRATION_SEEDS: tuple[int, ...] = (10, 11, 12, 13, 14)  # never the evidence seeds 0-4


@dataclass(frozen=True)
class Variant:
    """One arm with a few TrialConfig fields changed, under a label."""

    label: str
    arm: str
    overrides: tuple[tuple[str, float], ...] = ()

    def config(self, cfg: StudyConfig, seed: int):
        return dataclasses.replace(cfg.trial, arm=self.arm, seed=seed, **dict(self.overrides))


VARIANTS: tuple[Variant, ...] = (
    Variant("unet", "unet"),
    Variant("rrr-share", "rrr-share"),  # the evidence setting: lambda 1, threshold 0.01
    Variant("rrr-share lambda=3", "rrr-share", (("share_lambda", 3.0),)),
    Variant("rrr-share lambda=10", "rrr-share", (("share_lambda", 10.0),)),
    # threshold 0.1: the gaze's fringe counts as "not looked at" too (the line's pixels are
    # already 98% below 0.01 at sigma 150: benchmarks/RESULTS.md, 2026-12-07)
    Variant("rrr-share threshold=0.1", "rrr-share", (("gaze_mask_threshold", 0.1),)),
    Variant("density-share", "density-share"),  # p 8
    Variant("density-share p=32", "density-share", (("density_power", 32.0),)),
    Variant("density-share lambda=3", "density-share", (("share_lambda", 3.0),)),
    Variant("gaze-mask", "gaze-mask"),
    Variant("cutout", "cutout"),
)
QUICK_VARIANTS = ("unet", "rrr-share", "rrr-share lambda=3", "density-share", "gaze-mask")


@PLANS.register("border")
@dataclass(frozen=True)
class BorderPlan(EvidenceGrid):
    """Variants x calibration seeds on a clean and a border-shortcut twin."""

    name_prefix = "border"
    plan_name = "border"

    variants: tuple[Variant, ...] = VARIANTS
    seeds: tuple[int, ...] = CALIBRATION_SEEDS
    shortcut: str = "border"
    scanning: float = 0.0  # the twins' reader (issue 19's goal is stated at 0.25)

    def __post_init__(self) -> None:
        if set(self.seeds) & set(range(5)):
            raise ValueError(f"the border plan calibrates on seeds other than the evidence seeds 0-4, got {self.seeds}")  # fmt: skip

    def arms(self, cfg: StudyConfig) -> list[str]:
        return list(dict.fromkeys(v.arm for v in self.variants))

    def datasets(self, cfg: StudyConfig) -> dict[str | None, DataConfig]:
        twins = EvidencePlan(shortcut=self.shortcut)
        return {twin_name(t, self.scanning): twins.twin(cfg, t, self.scanning) for t in TWINS}

    def extra_settings(self) -> dict[str, Any]:
        return {
            "border": {"seeds": self.seeds, "shortcut": self.shortcut, "scanning": self.scanning,
                       "variants": [dataclasses.asdict(v) for v in self.variants]},
            PARAM_PLAN: self.plan_name,
        }  # fmt: skip

    def params(self, cfg: StudyConfig, arms: Sequence[str]) -> dict[str, Any]:
        return {
            **self.common_params(cfg), "arms": ",".join(arms),
            "seeds": ",".join(map(str, self.seeds)), "shortcut": self.shortcut,
            "scanning": f"{self.scanning:g}", "variants": "; ".join(v.label for v in self.variants),
        }  # fmt: skip

    def describe(self, cfg: StudyConfig) -> str:
        return (
            f"{len(self.variants)} variants x {len(self.seeds)} calibration seeds x {len(TWINS)} "
            f"twins ({self.shortcut} shortcut, scanning {self.scanning:g})"
        )

    def grid_trials(self, cfg: StudyConfig) -> list:
        from study.stages import GridTrial

        return [
            GridTrial(
                v.config(cfg, seed),
                twin_name(twin, self.scanning),
                {TAG_TWIN: twin, TAG_VARIANT: v.label},
            )
            for twin in TWINS
            for v in self.variants
            for seed in self.seeds
        ]

    @classmethod
    def from_args(cls, args: argparse.Namespace, arms: Sequence[str] | None) -> BorderPlan:
        variants = VARIANTS if not args.quick else tuple(v for v in VARIANTS if v.label in QUICK_VARIANTS)  # fmt: skip
        if arms:  # the variants of these arms, and unet: the baseline every number is read against
            variants = tuple(v for v in variants if v.arm in arms or v.arm == "unet")
        n_seeds = args.evidence_seeds or (2 if args.quick else len(CALIBRATION_SEEDS))
        if args.scanning is not None and len(args.scanning) != 1:
            raise ValueError("--scanning: the border plan takes one scanning share")
        return cls(
            variants=variants,
            seeds=tuple(CALIBRATION_SEEDS[0] + i for i in range(n_seeds)),
            shortcut=args.shortcut or "border",
            scanning=args.scanning[0] if args.scanning else 0.0,
        )
