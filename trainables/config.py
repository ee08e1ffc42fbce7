"""Typed configuration shared by the data layer, the fit loop and the study driver.

One source of truth: the CLI builds these from a preset plus overrides, the fully resolved values go
to MLflow params and into every checkpoint (``dataclasses.asdict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

CLASSES: tuple[str, ...] = (
    "Normal",
    "CHF",
    "pneumonia",
)  # label order everywhere (index = class id)
SPLITS: tuple[str, ...] = ("train", "val", "test")  # split ids 0, 1, 2 in CachedData.split


@dataclass(frozen=True)
class DataConfig:
    """Where the images and gaze come from and how they are turned into training tensors."""

    egd_root: str | None = (
        None  # EGD-CXR folder (master_sheet.csv, fixations.csv); None = synthetic twin
    )
    mimic_root: str | None = (
        None  # MIMIC-CXR root the `path` column is relative to; None = egd_root
    )
    image_list: str | None = (
        None  # filenames.csv-style list (",filename" header) restricting images
    )
    data_dir: str = "data"  # where the synthetic twin is generated and the cache is written
    synthetic_images: int = (
        300  # size of the synthetic twin made on first use when egd_root is None
    )
    synthetic_seed: int = 0  # seed of the synthetic twin
    # A class-correlated shortcut planted in the twin's train/val images (trainables.data.synthetic
    # .shortcuts: marker, intensity, border), broken in its test split; None = a clean twin.
    synthetic_shortcut: str | None = None
    synthetic_shortcut_fraction: float = 0.9  # train/val images carrying the shortcut
    synthetic_shortcut_test: Literal["absent", "shuffled"] = "absent"  # test: none or random class
    image_size: int = 128  # square training size; aspect kept, padded
    image_dtype: Literal["uint8", "float16"] = "uint8"  # how cached images are stored
    # Gaussian sigma of the gaze maps in MIMIC-CXR pixels (published code: 150); on the synthetic
    # twin, whose images are about a third of MIMIC's size, scaled by its twin.json pixel_scale.
    gaze_sigma: float = 150.0
    gaze_weighting: Literal["count", "duration"] = "count"  # +1 per fixation, or weight by FPOGD
    gaze_coordinates: Literal["pads", "original"] = (
        "pads"  # FPOGX/Y through the pads, or X/Y_ORIGINAL
    )
    split_seed: int = 0  # seed of the patient-level 80/10/10 split
    split_file: str | None = None  # CSV (dicom_id,split) overriding the seeded split

    def resolved_mimic_root(self) -> str | None:
        return self.mimic_root or self.egd_root


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
    epochs: int = 5  # training epochs; best epoch chosen by validation mean AUC
    batch_size: int = 16  # training batch size
    eval_batch_size: int = 64  # batch size for validation / test inference
    image_size: int = 128  # must match the DataConfig the cache was built with
    encoder: str = "efficientnet-b0"  # any smp encoder name (tests use tiny timm ones)
    encoder_weights: str | None = None  # "imagenet", a local .pth file, or None (random init)
    decoder_channels: tuple[int, ...] = (
        256,
        128,
        64,
        32,
        16,
    )  # smp default; smaller for demos/tests
    seed: int = 0  # seeds torch, numpy and python RNGs for this trial
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    weight_decay: float = 0.0  # Adam weight decay
    grad_clip_value: float | None = 0.1  # clip gradient values (baseline code: 0.1); None = off
    scheduler: Literal["none", "cosine", "plateau"] = "cosine"  # LR schedule over epochs
    # BN statistics in the training saliency pass, as constants (each image's map is its own):
    # "batch" = those of the training forward, "frozen" = the running statistics.
    bn_mode: Literal["frozen", "batch"] = "batch"
    fast_conv: bool = True  # batched double backward for convs in the saliency pass (same results)
    augment: bool = True  # small random affine on the device (image and gaze map share it)
    bootstrap_resamples: int = 1000  # resamples for the test AUC confidence intervals
    panels: int = 4  # test images drawn as heatmap panels
    num_threads: int | None = None  # torch CPU threads (None = torch default)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def replace(cfg, **overrides):
    """`dataclasses.replace` that ignores None overrides (CLI flags left unset)."""
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
