"""Does a map point at what the radiologists outlined? Pointing game and energy inside ellipses.

REFLACX's radiologists drew an ellipse around each finding, given as its bounding box (the
extreme points of the ellipse's axes, native DICOM pixels; ``reflacx.target_ellipses`` selects
those of an image's present findings). The ellipses are taken to the map's grid through the
image's letterbox ``Transform`` (affine per axis, so an inscribed ellipse stays inscribed in its
mapped box) and rasterised at pixel centres. Per image:

- ``pointing``: the pointing game (Zhang et al., ECCV 2016): 1 when the map's maximum lies inside
  an ellipse, else 0; when several pixels share the maximum, the share of them inside (a
  constant map scores the ellipses' area share, chance level, not 1).
- ``energy``: the share of the map's mass inside the ellipses.
- ``area``: the ellipses' share of the image, what a uniform map would score on ``energy``.

Images without an ellipse give ``nan`` (left out of ``per_image.summarise``). Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainables.data.dicom import Transform

LOCALIZATION_KEYS: tuple[str, ...] = ("pointing", "energy", "area")


def boxes_to_grid(boxes: np.ndarray, transform: Transform) -> np.ndarray:
    """(E, 4) native xmin, ymin, xmax, ymax -> the same boxes on the training grid."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    u0, v0 = transform.apply(b[:, 0], b[:, 1])
    u1, v1 = transform.apply(b[:, 2], b[:, 3])
    return np.stack([u0, v0, u1, v1], axis=1)


def ellipse_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool union of the ellipses inscribed in ``boxes`` (xmin, ymin, xmax, ymax, pixel
    centres at integers): the pixel centres inside or on each ellipse, plus the pixel holding its
    centre, so an ellipse smaller than a pixel still marks one."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    rows, cols = np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :]
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ax, ay = max(abs(x1 - x0) / 2, 1e-9), max(abs(y1 - y0) / 2, 1e-9)
        mask |= ((cols - cx) / ax) ** 2 + ((rows - cy) / ay) ** 2 <= 1.0
        r, c = round(cy), round(cx)
        if 0 <= r < h and 0 <= c < w:
            mask[r, c] = True
    return mask


def _check(saliency: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, m = np.asarray(saliency, dtype=np.float64), np.asarray(mask, dtype=bool)
    if s.ndim != 2 or s.shape != m.shape:
        raise ValueError(f"saliency {s.shape} and mask {m.shape} must be the same 2-D shape")
    if not np.isfinite(s).all():
        raise ValueError("saliency contains non-finite values")
    return s, m


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's maximal pixels inside ``mask`` (1 or 0 for a unique maximum); ``nan``
    for an empty mask."""
    s, m = _check(saliency, mask)
    if not m.any():
        return float("nan")
    top = s == s.max()
    return float((top & m).sum() / top.sum())


def energy_inside(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) map's sum inside ``mask``; ``nan`` for an empty mask or an
    all-zero map."""
    s, m = _check(saliency, mask)
    if s.min() < 0:
        raise ValueError(f"saliency must be non-negative (min {s.min():.3g})")
    total = s.sum()
    if not m.any() or total <= 0:
        return float("nan")
    return float(s[m].sum() / total)


def localization(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per image :data:`LOCALIZATION_KEYS` of ``maps[i]`` against the ellipse mask ``masks[i]``.

    Returns:
        key -> (N,) float64; ``nan`` where the image has no ellipse.
    """
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps but {len(masks)} masks")
    out = {k: np.full(len(maps), np.nan) for k in LOCALIZATION_KEYS}
    for i, (s, m) in enumerate(zip(maps, masks, strict=True)):
        out["pointing"][i] = pointing_hit(s, m)
        out["energy"][i] = energy_inside(s, m)
        m = np.asarray(m, dtype=bool)
        out["area"][i] = m.mean() if m.any() else np.nan
    return out
