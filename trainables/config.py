"""Typed configuration shared by the data layer, the fit loop and the study driver.

One source of truth: the CLI builds these from a preset plus overrides, the fully resolved values go
to MLflow params and into every checkpoint (``dataclasses.asdict``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

SPLITS: tuple[str, ...] = ("train", "val", "test")  # split ids 0, 1, 2 in CachedData.split
SPLIT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)  # the paper's 80/10/10

# -- value rules -------------------------------------------------------------------------------
# Each config checks its own fields in __post_init__, so the CLI and programmatic callers get the
# same rules; the CLI turns a ConfigError into an argparse error naming the flag of ``field``.

NAME_RULE = "must be 1-128 letters, digits, '-', '_' or '.', starting with a letter or digit"
_NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
)  # no '/', no '..': safe in paths and filters

Rule = tuple[Callable[[Any], bool], str]  # (predicate on the value, what the rule says)


def _bounded_repr() -> reprlib.Repr:
    # A value may come from a file (predict's model.pt): a list sharing itself 60 times over
    # (a = [a, a]) is 2**60 values to a plain repr. This one stops at a few levels and items.
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring, r.maxother, r.maxlong = 80, 80, 40
    return r


_REPR = _bounded_repr()


class ConfigError(ValueError):
    """A config field breaks its rule; ``field`` is the dataclass field's name. The message
    quotes the value through a bounded repr, so no value makes it long or slow."""

    def __init__(self, owner: str, field: str, rule: str, value: Any) -> None:
        super().__init__(f"{owner}.{field} {rule}, got {_REPR.repr(value)}")
        self.owner, self.field, self.rule, self.value = owner, field, rule, value


def is_valid_name(value: Any) -> bool:
    """Study and experiment names: what ``NAME_RULE`` says."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def split_fractions_ok(fractions: Sequence[float]) -> bool:
    """Shares of train, val and test: three positive numbers that add up to 1."""
    return (
        len(fractions) == len(SPLITS)
        and all(_number(f) and f > 0 for f in fractions)
        and abs(sum(fractions) - 1) < 1e-6
    )


def at_least(low: float) -> Rule:
    return (lambda v: _number(v) and v >= low), f"must be >= {low:g}"


def above(low: float) -> Rule:
    return (lambda v: _number(v) and v > low), f"must be > {low:g}"


def within(low: float, high: float, *, open_low: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        return _number(v) and (v > low if open_low else v >= low) and v <= high

    return ok, f"must be in {'(' if open_low else '['}{low:g}, {high:g}]"


def optional(rule: Rule) -> Rule:
    return (lambda v: v is None or rule[0](v)), f"{rule[1]} (or None)"


NAME: Rule = (is_valid_name, NAME_RULE)


def _known_shortcut(value: Any) -> bool:
    if value is None:
        return True
    from trainables.data.synthetic.shortcuts import SHORTCUTS  # the twin's writer: only when named

    return value in SHORTCUTS


def _known_dataset(value: Any) -> bool:
    from trainables.data.datasets import list_datasets  # a light registry (no pandas, no torch)

    return value in list_datasets()


@functools.cache
def _literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    hints = get_type_hints(cls)
    return {name: get_args(t) for name, t in hints.items() if get_origin(t) is Literal}


def check_fields(cfg: Any, rules: Mapping[str, Rule]) -> None:
    """Raise ConfigError for the first field breaking its rule (``Literal`` fields included).

    Raises:
        ConfigError: naming the class, the field, the rule and the value.
    """
    owner = type(cfg).__name__
    for name, choices in _literal_choices(type(cfg)).items():
        value = getattr(cfg, name)
        if value not in choices:
            raise ConfigError(owner, name, f"must be one of {', '.join(map(repr, choices))}", value)
    for name, (ok, rule) in rules.items():
        value = getattr(cfg, name)
        if not ok(value):
            raise ConfigError(owner, name, rule, value)


@dataclass(frozen=True)
class DataConfig:
    """Where the images and gaze come from and how they are turned into training tensors."""

    # the dataset registry entry (trainables.data.datasets): egd-cxr, reflacx, ...
    dataset: str = "egd-cxr"
    # the dataset's folder (EGD-CXR: master_sheet.csv, fixations.csv; REFLACX: main_data/);
    # None = its synthetic twin, written on first use
    data_root: str | None = None
    # MIMIC-CXR root the dataset's image paths are relative to; None = data_root
    mimic_root: str | None = None
    # filenames.csv-style list (",filename" header) restricting images
    image_list: str | None = None
    data_dir: str = "data"  # where the synthetic twin is generated and the cache is written
    # size of the synthetic twin made on first use when data_root is None
    synthetic_images: int = 300
    synthetic_seed: int = 0  # seed of the synthetic twin
    # A class-correlated shortcut planted in the twin's train/val images (trainables.data.synthetic
    # .shortcuts: marker, intensity, border), broken in its test split; None = a clean twin.
    synthetic_shortcut: str | None = None
    synthetic_shortcut_fraction: float = 0.9  # train/val images carrying the shortcut
    synthetic_shortcut_test: Literal["absent", "shuffled"] = "absent"  # test: none or random class
    image_size: int = 128  # square training size (the trials train at it); aspect kept, padded
    image_dtype: Literal["uint8", "float16"] = "uint8"  # how cached images are stored
    # Gaussian sigma of the gaze maps in MIMIC-CXR pixels (published code: 150); on the synthetic
    # twin, whose images are about a third of MIMIC's size, scaled by its twin.json pixel_scale.
    gaze_sigma: float = 150.0
    gaze_weighting: Literal["count", "duration"] = "count"  # +1 per fixation, or weight by FPOGD
    # FPOGX/Y through the pads, or X/Y_ORIGINAL
    gaze_coordinates: Literal["pads", "original"] = "pads"
    split_seed: int = 0  # seed of the patient-level split
    # train, val, test shares of the seeded patient split (the paper's 80/10/10); the evidence
    # experiment tests on more images so that its AUCs are not read off 24 test images
    split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    split_file: str | None = None  # CSV (dicom_id,split) overriding the seeded split
    # Reader realism of the twin's gaze (trainables.data.synthetic.reader; on the REFLACX twin,
    # every one of its five readers); the defaults write the twin byte for byte as before. Share
    # of each reading's fixations moved to a scan of the whole film, corners included
    # (radiologists check the edges and the labels too):
    synthetic_scanning_share: float = 0.0
    synthetic_thoroughness: float = 1.0  # fixations per reading and their dwell times, x this
    # REFLACX: a finding is present at this certainty (0-5) or above (the authors' 3)
    certainty_threshold: int = 3
    # REFLACX: split by the dataset's own (MIMIC-CXR) split column instead of a seeded one
    dataset_split: bool = False
    # REFLACX twin: images read by all five radiologists (None: REFLACX's share, 109 of 2,616)
    synthetic_multi_reader_images: int | None = None
    # -- data efficiency (issue 19; trainables.data.subset): train on part of the training split.
    # None = all of it. Whole patients, drawn in a seeded order that alternates the classes, so the
    # 24 images of a seed are among its 48; validation and test are untouched.
    train_images: int | None = None
    train_images_seed: int = 0  # seed of that order (the data-efficiency plan: the trial's seed)

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "dataset": (_known_dataset, "must be a registered dataset"),
                "certainty_threshold": within(1, 5),
                "synthetic_images": at_least(3),  # one image per class at least
                "synthetic_seed": at_least(0),
                # the U-Net's stride adds a multiple-of rule (StudyConfig, and fit for any caller)
                "image_size": at_least(32),
                "gaze_sigma": above(0),
                "split_seed": at_least(0),
                "split_fractions": (
                    split_fractions_ok,
                    "must be three positive shares (train, val, test) that add up to 1",
                ),
                "synthetic_shortcut_fraction": within(0, 1),
                "synthetic_scanning_share": within(0, 1),
                "synthetic_thoroughness": within(0.1, 10),
                "train_images": optional(at_least(2)),  # BatchNorm trains on two images at least
                "train_images_seed": at_least(0),
                "synthetic_multi_reader_images": optional(at_least(0)),
                "synthetic_shortcut": (
                    _known_shortcut,
                    "must be a registered shortcut kind or None",
                ),
            },
        )

    def resolved_mimic_root(self) -> str | None:
        return self.mimic_root or self.data_root


@dataclass(frozen=True)
class TrialConfig:
    """One training run: an arm and its hyperparameters (what one Tune trial or --single-trial runs)."""

    arm: str = "unet"  # registry name, see trainables.model_sets.list_arms()
    lr: float = 1e-3  # Adam learning rate
    seg_ratio: float = 0.5  # set 3: r * L(decoder, gaze) + (1 - r) * L(generator map, gaze)
    gamma: float = 0.41731  # total = gamma * L_cls + (1 - gamma) * L_seg (baseline code's value)
    rrr_lambda: float = 10.0  # rrr arm: weight of the outside-gaze input-gradient penalty
    share_lambda: float = 1.0  # rrr-share / gbp-share arms: weight of the outside-gaze energy share
    gaze_mask_threshold: float = 0.01  # gaze map level below which a pixel is "not looked at"
    # gaze-mask / cutout arms (trainables.masking), training inputs only:
    mask_mode: Literal["noise", "blur"] = "noise"  # what replaces the hidden pixels
    mask_strength: float = 1.0  # blend toward the replacement: 1 = replaced, 0 = left as is
    mask_dilation: float = 0.0  # grow the gaze region by this share of the image side first
    # the gaze target of an image several radiologists read (REFLACX): the mean of their maps, or
    # one of them drawn at random for each image each epoch (the readers' spread as augmentation)
    gaze_target: Literal["mean", "random-reader"] = "mean"
    # density-share arm: energy weighted by (1 - gaze) ** this; 8 halves the weight at a gaze of
    # 8% of the peak (p = 1 barely resisted the border shortcut: +0.015 AUC vs unet, 3 seeds)
    density_power: float = 8.0
    epochs: int = 5  # training epochs; best epoch chosen by validation mean AUC
    batch_size: int = 16  # training batch size
    eval_batch_size: int = 64  # batch size for validation / test inference
    encoder: str = "efficientnet-b0"  # any smp encoder name (tests use tiny timm ones)
    encoder_weights: str | None = None  # "imagenet", a local .pth file, or None (random init)
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # smp default; smaller for demos
    # seeds torch, numpy and python RNGs for this trial; in a study, the search trials' seed and
    # the TPE sampler's (``gaze-study --seed``), and the seeds stage re-runs with seed + 1, + 2 ...
    seed: int = 0
    weight_decay: float = 0.0  # Adam weight decay
    grad_clip_value: float | None = 0.1  # clip gradient values (baseline code: 0.1); None = off
    scheduler: Literal["none", "cosine", "plateau"] = "cosine"  # LR schedule over epochs
    # BN statistics in the training saliency pass, as constants (each image's map is its own):
    # "batch" = those of the training forward, "frozen" = the running statistics.
    bn_mode: Literal["frozen", "batch"] = "batch"
    fast_conv: bool = True  # batched double backward for convs in the saliency pass (same results)
    augment: bool = True  # small random affine on the device (image and gaze map share it)
    bootstrap_resamples: int = 1000  # resamples for the test AUC confidence intervals
    # seed of those resamples: the same for every trial of a study, so every arm's test set is
    # resampled alike (paired) and the report reproduces each logged interval exactly
    bootstrap_seed: int = 0
    panels: int = 4  # test images drawn as heatmap panels
    # -- blind selection (issue 19; trainables.blind_selection): also log val/masked_auc_mean,
    # val/gaze_agreement and val/selection_score every epoch (a study may search on one of them).
    # Off by default: the signals cost a masked pass and an input-gradient pass over validation.
    selection_signals: bool = False

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "lr": above(0),
                "seg_ratio": within(0, 1),
                "rrr_lambda": at_least(0),
                "share_lambda": at_least(0),
                "gaze_mask_threshold": within(0, 1, open_low=True),
                "mask_strength": within(0, 1),
                "mask_dilation": within(0, 0.5),
                "density_power": above(0),
                "gamma": within(0, 1, open_low=True),
                "epochs": at_least(1),
                "batch_size": at_least(1),
                "eval_batch_size": at_least(1),
                "decoder_channels": (
                    lambda v: len(v) >= 1 and all(_number(c) and c >= 1 for c in v),
                    "must be one or more positive widths",
                ),
                "seed": at_least(0),
                "weight_decay": at_least(0),
                "grad_clip_value": optional(above(0)),
                "bootstrap_resamples": at_least(1),
                "bootstrap_seed": at_least(0),
                "panels": at_least(0),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TrialConfig:
        """The config a run logged as its MLflow params (``str`` of each value; other keys, such
        as ``image_size``, are ignored): the record, not Tune's memory, says what a trial ran."""
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in params:
                continue
            text = params[f.name]
            if hints[f.name] is str or get_origin(hints[f.name]) is Literal:
                values[f.name] = text
            elif text == "None":
                values[f.name] = None
            else:
                try:
                    values[f.name] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    values[f.name] = text  # a str | None field (e.g. encoder_weights)
        return cls(**values)


@dataclass(frozen=True)
class Placement:
    """Where a trial runs, not what it computes: kept out of TrialConfig (and its MLflow params), so
    a trial restored on another node is the same trial. The trainable fills what is left None from
    its Ray resources; ``--set placement.device=cpu`` overrides."""

    device: str | None = None  # "cpu", "cuda", "cuda:1"; None = cuda when the trial has a GPU
    num_threads: int | None = None  # torch CPU threads; None = the trial's Ray CPUs (or torch's)

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "device": (
                    lambda v: v is None or re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(v)) is not None,
                    "must be cpu, cuda, cuda:<n> or mps (or None)",
                ),
                "num_threads": optional(at_least(1)),
            },
        )


def replace(cfg, **overrides):
    """`dataclasses.replace` that ignores None overrides (CLI flags left unset)."""
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def model_stride(decoder_channels: tuple[int, ...]) -> int:
    """The U-Net halves the image once per encoder stage: sizes must be a multiple of this."""
    return 2 ** len(decoder_channels)
