"""Where a planted shortcut sits relative to the gaze map: can an outside-gaze loss see it?

``python -m analysis.shortcut_coverage --data-dir DIR [--kinds marker,border] [--sigmas 75,150]
[--scanning 0,0.3] [--thresholds 0.001,0.01,0.05]``

rrr-share penalises input-gradient energy where the gaze map is below ``gaze_mask_threshold``.
Shortcut pixels at or above it are "looked at" for that loss: a model may read the class there at
no cost. This measures, on the training-size tensors the trials see (shortcut twin minus its clean
twin, train and validation images), per shortcut kind, gaze sigma and reader:

- ``pixels``: shortcut pixels per image (how much image a model can read the class from);
- ``covered@t``: the share of shortcut pixels with gaze >= t (invisible to a threshold-t loss);
- ``density_weight``: the mean ``1 - gaze`` over shortcut pixels, what ``density-share`` (p = 1)
  charges for energy there relative to a pixel never looked at;
- ``distance_px``: the median distance (training pixels) from a shortcut pixel to the nearest
  pixel with gaze >= 0.01 (how close the shortcut sits to what the radiologist looked at).

Nothing is trained: it says whether the threshold or the gaze map can explain a weak result, not
whether they do.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from trainables.config import DataConfig
from trainables.data.cached import CachedData

MIN_CHANGE = 0.1  # a pixel belongs to the shortcut when the shortcut moves it by more (of [0, 1])
NEAR = 0.01  # the gaze level distance_px measures to (TrialConfig.gaze_mask_threshold's default)


def _as_float(images: np.ndarray) -> np.ndarray:
    return (
        images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    )


def shortcut_pixels(clean: CachedData, shortcut: CachedData, min_change: float = MIN_CHANGE):
    """Boolean (N, S, S): where the shortcut twin's image differs from its clean twin's by more
    than ``min_change``, in the shortcut twin's row order (the twins hold the same images: every
    other pixel is identical).

    Raises:
        ValueError: the twins do not hold the same image keys.
    """
    if sorted(clean.keys) != sorted(shortcut.keys):
        raise ValueError("the clean and shortcut twins hold different images")
    row = {k: i for i, k in enumerate(clean.keys)}
    order = np.array([row[k] for k in shortcut.keys])
    return np.abs(_as_float(shortcut.images) - _as_float(clean.images[order])) > min_change


def gaze_coverage(
    gaze: np.ndarray, pixels: np.ndarray, thresholds: Sequence[float]
) -> dict[str, float]:
    """Coverage of the shortcut ``pixels`` (N, S, S) by the ``gaze`` maps (N, S, S), pooled over
    the images that carry a shortcut: ``images``, ``pixels`` (per image), ``covered@t`` per
    threshold, ``density_weight`` and ``distance_px`` (module docstring)."""
    carrying = pixels.reshape(len(pixels), -1).any(1)
    on = gaze[carrying].astype(np.float32)[pixels[carrying]]
    distances = [
        ndimage.distance_transform_edt(gaze[i] < NEAR)[pixels[i]] for i in np.flatnonzero(carrying)
    ]
    out = {
        "images": int(carrying.sum()),
        "pixels": float(pixels[carrying].sum() / max(1, carrying.sum())),
    }
    for t in thresholds:
        out[f"covered@{t:g}"] = float((on >= t).mean()) if on.size else float("nan")
    out["density_weight"] = float((1.0 - np.clip(on, 0, 1)).mean()) if on.size else float("nan")
    out["distance_px"] = float(np.median(np.concatenate(distances))) if on.size else float("nan")
    return out


def measure(
    base: DataConfig,
    kinds: Sequence[str],
    sigmas: Sequence[float],
    scanning: Sequence[float],
    thresholds: Sequence[float],
) -> pd.DataFrame:
    """One row per (kind, sigma, scanning share): :func:`gaze_coverage` of the train and
    validation images of the shortcut twin of ``base`` (twins and caches made on first use)."""
    from trainables.data.prepare import prepare_data  # the data layer only when measuring

    rows = []
    for share in scanning:
        for sigma in sigmas:
            cfg = dataclasses.replace(base, gaze_sigma=sigma, synthetic_scanning_share=share)
            clean = prepare_data(dataclasses.replace(cfg, synthetic_shortcut=None), progress=False)
            for kind in kinds:
                twin = prepare_data(
                    dataclasses.replace(cfg, synthetic_shortcut=kind), progress=False
                )
                keep = np.isin(twin.split, (0, 1))  # train and validation: where it is planted
                pixels = shortcut_pixels(clean, twin) & keep[:, None, None]
                cov = gaze_coverage(twin.gaze, pixels, thresholds)
                rows.append({"kind": kind, "sigma": sigma, "scanning": share, **cov})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data", help="where twins and caches are written")
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--kinds", default="marker,intensity,border")
    p.add_argument("--sigmas", default="75,150,300", help="gaze sigmas in MIMIC pixels")
    p.add_argument("--scanning", default="0,0.3", help="scanning shares of the reader")
    p.add_argument("--thresholds", default="0.001,0.01,0.05,0.1")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def floats(text: str) -> list[float]:
        return [float(v) for v in text.split(",")]

    # The evidence experiment's twins: 98% of train/val images carry it, split 50/10/40.
    base = DataConfig(
        data_dir=args.data_dir, synthetic_images=args.images, image_size=args.size,
        synthetic_shortcut_fraction=0.98, synthetic_shortcut_test="shuffled",
        split_fractions=(0.5, 0.1, 0.4),
    )  # fmt: skip
    table = measure(
        base,
        args.kinds.split(","),
        floats(args.sigmas),
        floats(args.scanning),
        floats(args.thresholds),
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
