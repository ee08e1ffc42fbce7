"""The study's one typed config, and the named presets it starts from.

``StudyConfig`` holds every setting of a study invocation; ``DataConfig`` and ``TrialConfig`` are
nested inside it, so the fixed trial settings (epochs, image size, encoder ...) have one home. A
preset is a small function returning a StudyConfig; the CLI applies its flags on top with
``with_overrides``. The fully resolved config goes to the parent MLflow run as
``study/config.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import DataConfig, TrialConfig

PROJECT_DIR = Path(__file__).resolve().parents[1]
TINY_ENCODER = (
    "tu-test_efficientnet"  # timm's tiny test EfficientNet (SiLU): CPU demo and smoke runs
)
TINY_DECODER = (16, 8, 8, 4, 4)  # decoder channels matching the tiny encoder's five stages


@dataclass(frozen=True)
class StudyConfig:
    """Everything one study invocation needs (a preset plus CLI overrides)."""

    preset: str = "demo"  # preset these values started from (MLflow tag)
    study_name: str | None = None  # Tune folder + MLflow tag; None = "<preset>-<timestamp>"
    arms: tuple[str, ...] = ()  # arms to search, in order; () = every registered arm
    trials_per_arm: int = 2  # Optuna trials per arm; the baseline point is the first
    search_space: str = "demo"  # search_spaces registry name
    max_concurrent: int | None = None  # trials at once (all arms, or the arm); None = all slots
    sequential_arms: bool = False  # arms one after another (the old order), not side by side
    seed: int = 0  # seeds the TPE sampler and the search-stage trials
    seeds: int = 0  # re-run each arm's best config with this many further seeds (0 = off)
    cpus_per_trial: float = 1.0  # Ray CPUs per trial (also torch threads)
    gpus_per_trial: float | None = None  # Ray GPUs per trial (fractions share one); None = 1 or 0
    grace_period: int = 1  # ASHA: epochs every trial runs before it may be stopped
    reduction_factor: int = 2  # ASHA: a rung keeps the best 1/reduction_factor of trials
    max_failures: int = 2  # Tune restarts a failed trial (e.g. a lost node) from its checkpoint
    address: str | None = None  # Ray cluster to join ("auto" on a head); None = local Ray
    storage_path: str | None = (
        None  # Tune storage: s3://, gs:// or shared path; None = <project>/ray_results
    )
    storage_is_shared: bool = False  # a local storage path that every node mounts (NFS)
    tracking_uri: str | None = None  # MLflow; None = sqlite:///<project>/mlflow.db
    experiment: str = "gaze-unet"  # MLflow experiment
    optuna_storage: str | None = None  # Optuna RDB URL (optuna-dashboard); None = in memory
    resume: bool = False  # continue an interrupted study (Tuner.restore per arm)
    report: bool = True  # write the analysis report (analysis.report) when the study ends
    project_dir: str = str(PROJECT_DIR)  # absolute project root (trials chdir: no relative paths)
    data: DataConfig = field(default_factory=DataConfig)  # images and gaze maps
    trial: TrialConfig = field(
        default_factory=TrialConfig
    )  # fixed trial settings (arm/lr/... searched)

    def storage_root(self) -> str:
        """Where the Tune experiments of this study live (absolute path or URI)."""
        if self.storage_path and "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path or Path(self.project_dir) / "ray_results").resolve())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PresetFn = Callable[[], StudyConfig]
_PRESETS: dict[str, PresetFn] = {}


def register_preset(name: str) -> Callable[[PresetFn], PresetFn]:
    """Decorator registering a function returning a StudyConfig as preset ``name``."""

    def wrap(fn: PresetFn) -> PresetFn:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is registered twice")
        _PRESETS[name] = fn
        return fn

    return wrap


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> StudyConfig:
    """The StudyConfig of preset ``name``.

    Raises:
        KeyError: unknown name; lists the valid ones.
    """
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    return _PRESETS[name]()


def _data_dir() -> str:
    return str(PROJECT_DIR / "data")


# The demo's sizes are chosen so `python study/run.py` (8 arms x 2 trials) ends in under 10 minutes
# on a 2-core CPU; change them here.
@register_preset("demo")
def demo() -> StudyConfig:
    """All eight arms on the synthetic twin, sized for a 2-core CPU in under ten minutes."""
    return StudyConfig(
        preset="demo",
        trials_per_arm=2,
        search_space="demo",
        cpus_per_trial=1.0,
        grace_period=1,
        reduction_factor=2,
        # the twin's DICOMs are 640-1024 px, about a third of MIMIC's: sigma 150 px would blur the
        # gaze map over the whole chest, so it is scaled down with them
        data=DataConfig(data_dir=_data_dir(), image_size=64, synthetic_images=240, gaze_sigma=50.0),
        trial=TrialConfig(
            epochs=3,
            image_size=64,
            batch_size=16,
            encoder=TINY_ENCODER,
            decoder_channels=TINY_DECODER,
            encoder_weights=None,
            bootstrap_resamples=200,
            panels=3,
            augment=True,
        ),
    )


@register_preset("paper")
def paper() -> StudyConfig:
    """The paper-scale study for a GPU cluster: 224 px, 35 epochs, ImageNet EfficientNet-b0."""
    return StudyConfig(
        preset="paper",
        trials_per_arm=20,
        search_space="paper",
        cpus_per_trial=4.0,
        grace_period=5,
        reduction_factor=3,
        seeds=3,
        data=DataConfig(data_dir=_data_dir(), image_size=224),
        trial=TrialConfig(
            epochs=35,
            image_size=224,
            batch_size=32,
            encoder="efficientnet-b0",
            encoder_weights="imagenet",
            bootstrap_resamples=1000,
            panels=6,
        ),
    )


@register_preset("smoke")
def smoke() -> StudyConfig:
    """Tiny everything (``--smoke-test``): two arms, one trial each, seconds per trial."""
    return StudyConfig(
        preset="smoke",
        arms=("no-seg", "set3-gbp"),
        trials_per_arm=1,
        search_space="demo",
        cpus_per_trial=1.0,
        grace_period=1,
        data=DataConfig(data_dir=_data_dir(), image_size=32, synthetic_images=40),
        trial=TrialConfig(
            epochs=1,
            image_size=32,
            batch_size=8,
            eval_batch_size=32,
            encoder=TINY_ENCODER,
            decoder_channels=TINY_DECODER,
            bootstrap_resamples=20,
            panels=3,
            augment=False,
        ),
    )


_DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}
_TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}
_STUDY_FIELDS = {f.name for f in dataclasses.fields(StudyConfig)} - {"data", "trial"}


def with_overrides(
    cfg: StudyConfig,
    *,
    data: dict[str, Any] | None = None,
    trial: dict[str, Any] | None = None,
    **study: Any,
) -> StudyConfig:
    """Apply overrides that are not None; ``image_size`` set on either side sets both.

    Raises:
        KeyError: an override names no field of StudyConfig, DataConfig or TrialConfig.
    """
    data = {k: v for k, v in (data or {}).items() if v is not None}
    trial = {k: v for k, v in (trial or {}).items() if v is not None}
    study = {k: v for k, v in study.items() if v is not None}
    for given, valid, what in (
        (data, _DATA_FIELDS, "DataConfig"),
        (trial, _TRIAL_FIELDS, "TrialConfig"),
        (study, _STUDY_FIELDS, "StudyConfig"),
    ):
        unknown = set(given) - valid
        if unknown:
            raise KeyError(f"unknown {what} override(s) {sorted(unknown)}; valid: {sorted(valid)}")
    size = trial.get("image_size", data.get("image_size"))
    if size is not None:
        data["image_size"] = trial["image_size"] = size
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **data),
        trial=dataclasses.replace(cfg.trial, **trial),
        **study,
    )
