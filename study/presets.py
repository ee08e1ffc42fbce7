"""The study's one typed config, and the named presets it starts from.

``StudyConfig`` holds every setting of a study invocation; ``DataConfig`` and ``TrialConfig`` are
nested inside it, so the fixed trial settings (epochs, image size, encoder ...) have one home. A
preset is a small function returning a StudyConfig; the CLI applies its flags on top with
``with_overrides``. The fully resolved config goes to the parent MLflow run as
``study/config.json``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces import list_spaces
from trainables.config import (
    NAME,
    ConfigError,
    DataConfig,
    Placement,
    TrialConfig,
    above,
    at_least,
    check_fields,
    model_stride,
    optional,
)
from trainables.record.schema import SEARCH_METRIC, SEARCH_METRICS
from trainables.registry import Registry

PROJECT_DIR = Path(__file__).resolve().parents[1]
# timm's tiny test EfficientNet (SiLU): CPU demo and smoke runs
TINY_ENCODER = "tu-test_efficientnet"
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
    seeds: int = 0  # re-run each arm's best config with this many further seeds (0 = off)
    cpus_per_trial: float = 1.0  # Ray CPUs per trial (also torch threads)
    gpus_per_trial: float | None = None  # Ray GPUs per trial (fractions share one); None = 1 or 0
    grace_period: int = 1  # ASHA: epochs every trial runs before it may be stopped
    reduction_factor: int = 2  # ASHA: a rung keeps the best 1/reduction_factor of trials
    # What Optuna, ASHA and Tune optimise per epoch: val/auc_mean, or a blind selection signal
    # (trainables.record.BLIND_SIGNALS: needs trial.selection_signals, so the trials log it)
    search_metric: str = SEARCH_METRIC
    max_failures: int = 2  # Tune restarts a failed trial (e.g. a lost node) from its checkpoint
    address: str | None = None  # Ray cluster to join ("auto" on a head); None = local Ray
    # Tune storage: s3://, gs:// or shared path; None = <project>/ray_results
    storage_path: str | None = None
    storage_is_shared: bool = False  # a local storage path that every node mounts (NFS)
    tracking_uri: str | None = None  # MLflow; None = sqlite:///<project>/mlflow.db
    experiment: str = "gaze-unet"  # MLflow experiment
    optuna_storage: str | None = None  # Optuna RDB URL (optuna-dashboard); None = in memory
    resume: bool = False  # continue an interrupted study (Tuner.restore of each stage)
    verbose: bool = False  # Ray's own progress tables and every worker's output on the console
    command: tuple[str, ...] = ()  # the command line that made this config (resume hint, MLflow)
    report: bool = True  # write the analysis report (analysis.report) when the study ends
    project_dir: str = str(PROJECT_DIR)  # absolute project root (trials chdir: no relative paths)
    data: DataConfig = field(default_factory=DataConfig)  # images and gaze maps
    # fixed trial settings (arm, lr, ... are searched); trial.seed is the study's seed (--seed)
    trial: TrialConfig = field(default_factory=TrialConfig)
    placement: Placement = field(default_factory=Placement)  # device / threads over Ray's

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "study_name": optional(NAME),  # a folder under storage_path and an MLflow filter
                "experiment": NAME,
                "search_space": (lambda v: v in list_spaces(), f"must be one of {list_spaces()}"),
                "trials_per_arm": at_least(1),
                "max_concurrent": optional(at_least(1)),
                "seeds": at_least(0),
                "cpus_per_trial": above(0),
                "gpus_per_trial": optional(at_least(0)),
                "grace_period": at_least(1),
                "reduction_factor": at_least(2),
                "max_failures": at_least(-1),  # -1: Tune retries for ever
                "search_metric": (
                    lambda v: v in SEARCH_METRICS,
                    f"must be one of {SEARCH_METRICS}",
                ),
            },
        )
        if self.search_metric != SEARCH_METRIC and not self.trial.selection_signals:
            raise ConfigError(
                "StudyConfig",
                "search_metric",
                "is a blind selection signal the trials log only with trial.selection_signals=true",
                self.search_metric,
            )
        stride = model_stride(self.trial.decoder_channels)
        if self.data.image_size % stride:
            raise ConfigError(
                "DataConfig",
                "image_size",
                f"must be a multiple of {stride} (the U-Net's {len(self.trial.decoder_channels)} "
                f"decoder stages halve it {len(self.trial.decoder_channels)} times)",
                self.data.image_size,
            )

    @property
    def seed(self) -> int:
        """The study's seed: the TPE samplers', the search trials' (``trial.seed``); the seeds
        stage re-runs with seed + 1, + 2, ..."""
        return self.trial.seed

    def storage_root(self) -> str:
        """Where the Tune experiments of this study live (absolute path or URI)."""
        if self.storage_path and "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path or Path(self.project_dir) / "ray_results").resolve())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PresetFn = Callable[[], StudyConfig]
PRESETS: Registry[PresetFn] = Registry("preset")


def register_preset(name: str) -> Callable[[PresetFn], PresetFn]:
    """Decorator registering a function returning a StudyConfig as preset ``name``."""
    return PRESETS.register(name)


def list_presets() -> list[str]:
    return sorted(PRESETS.names())


def get_preset(name: str) -> StudyConfig:
    """The StudyConfig of preset ``name`` (KeyError listing the valid ones)."""
    return PRESETS.get(name)()


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
        data=DataConfig(data_dir=_data_dir(), image_size=64, synthetic_images=240),
        trial=TrialConfig(
            epochs=3,
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
            batch_size=8,
            eval_batch_size=32,
            encoder=TINY_ENCODER,
            decoder_channels=TINY_DECODER,
            bootstrap_resamples=20,
            panels=3,
            augment=False,
        ),
    )


@register_preset("shortcut")
def shortcut() -> StudyConfig:
    """The demo study on the shortcut twin: a corner marker encodes the class in train/val images
    and a random class in test (``trainables.data.synthetic.shortcuts``)."""
    cfg = demo()
    return dataclasses.replace(
        cfg,
        preset="shortcut",
        data=dataclasses.replace(
            cfg.data, synthetic_shortcut="marker", synthetic_shortcut_test="shuffled"
        ),
    )


# The evidence experiment (``python -m study.evidence``): fixed hyperparameters, 11 arms x 5 seeds
# x 2 twins = 110 trials, sized for under half an hour on a 2-core CPU (--quick: a few minutes).
@register_preset("evidence")
def evidence() -> StudyConfig:
    """Trial settings of the evidence experiment (clean twin; study.evidence adds the shortcut)."""
    cfg = demo()
    return dataclasses.replace(
        cfg,
        preset="evidence",
        experiment="gaze-unet-evidence",
        # 384 images (study.evidence splits them 50/10/40: 192 to train, ~150 to test)
        data=dataclasses.replace(cfg.data, synthetic_images=384),
        trial=dataclasses.replace(
            cfg.trial, epochs=4, lr=1e-3, bootstrap_resamples=100, panels=2, augment=True
        ),
    )


@register_preset("evidence-quick")
def evidence_quick() -> StudyConfig:
    """The evidence experiment in a few minutes: the same twins and trials, fewer arms and seeds
    (study.evidence --quick). Smaller images or fewer epochs would not show the effect: at 32 px
    and 2 epochs every arm sat near chance and the shortcut cost unet 0.02."""
    cfg = evidence()
    return dataclasses.replace(
        cfg,
        preset="evidence-quick",
        trial=dataclasses.replace(cfg.trial, bootstrap_resamples=50, panels=1),
    )


_DATA_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}
_TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}
_SECTIONS = {"data": DataConfig, "trial": TrialConfig, "placement": Placement}
_STUDY_FIELDS = {f.name for f in dataclasses.fields(StudyConfig)} - set(_SECTIONS)


def with_overrides(
    cfg: StudyConfig,
    *,
    data: dict[str, Any] | None = None,
    trial: dict[str, Any] | None = None,
    **study: Any,
) -> StudyConfig:
    """Apply overrides that are not None (``None`` reads as "flag not given").

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
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **data),
        trial=dataclasses.replace(cfg.trial, **trial),
        **study,
    )


def _parse_value(text: str, hint: Any, key: str) -> Any:
    """``text`` as a value of the field type ``hint`` (int, float, bool, str, Literal, tuple of
    int, and ``X | None`` with "none")."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if text.lower() in ("none", "null", ""):
            return None
        return _parse_value(text, args[0], key)
    if typing.get_origin(hint) is typing.Literal:
        if text not in args:
            raise ValueError(f"{key}: {text!r} is not one of {', '.join(map(str, args))}")
        return text
    if typing.get_origin(hint) is tuple:
        return tuple(_parse_value(t.strip(), args[0], key) for t in text.split(",") if t.strip())
    if hint is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{key}: {text!r} is not a boolean (true/false)")
        return text.lower() in ("true", "1", "yes")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(
                f"{key}: {text!r} is not a{'n int' if hint is int else ' number'}"
            ) from None
    return text


def apply_settings(cfg: StudyConfig, settings: Sequence[str]) -> StudyConfig:
    """Apply ``--set`` overrides: ``data.<field>=V``, ``trial.<field>=V``,
    ``placement.<field>=V`` or ``<study field>=V``, each value parsed by the field's type; the
    configs' own rules then check it.

    One generic door for the settings that have no flag of their own (``data.gaze_sigma``,
    ``data.split_file``, ``trial.bn_mode``, ``trial.scheduler``, ``trial.weight_decay``, ...).

    Raises:
        ValueError: malformed item, unknown field, or a value that does not parse.
        ConfigError: a value breaks the field's rule.
    """
    owners = {**_SECTIONS, "study": StudyConfig}
    groups: dict[str, dict[str, Any]] = {name: {} for name in owners}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r}: expected KEY=VALUE, e.g. data.gaze_sigma=50")
        key = key.strip()
        group, _, name = key.rpartition(".")
        group = group or "study"
        if group not in groups:
            raise ValueError(
                f"{key}: the key starts with data., trial., placement. or a study field"
            )
        hints = typing.get_type_hints(owners[group])
        valid = {f.name for f in dataclasses.fields(owners[group])} - set(_SECTIONS)
        if name not in valid:
            raise ValueError(f"{key}: no such field; {group} fields: {', '.join(sorted(valid))}")
        groups[group][name] = _parse_value(text.strip(), hints[name], key)
    sections = {name: dataclasses.replace(getattr(cfg, name), **groups[name]) for name in _SECTIONS}
    return dataclasses.replace(cfg, **sections, **groups["study"])
