"""Chest-radiograph phantoms: body, lungs, heart, spine, ribs, clavicles, lung texture, findings."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from scipy.special import expit

from trainables.data.synthetic.cases import Case, heart_ellipse

_DRAW_FACTOR = 4  # anatomy drawn at 1/4 size and upsampled (16x cheaper); noise added at full size


def _ellipse(
    xy: tuple[np.ndarray, np.ndarray],
    ellipse: tuple[float, float, float, float],
    edge: float,
    p: float = 2.0,
) -> np.ndarray:
    """A soft superellipse (centre cx, cy; half axes ax, ay) of exponent ``p`` on the grid ``xy``."""
    (x, y), (cx, cy, ax, ay) = xy, ellipse
    r = (np.abs((x - cx) / ax) ** p + np.abs((y - cy) / ay) ** p) ** (1 / p)
    return expit((1.0 - r) / edge)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


@functools.cache
def _noise_tile() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((1280, 1280), dtype=np.float32) * 0.008


def render(case: Case, rng: np.random.Generator) -> np.ndarray:
    """The phantom as float32 (rows, columns) in [0, 1], bright = attenuating (MONOCHROME2)."""
    f = _DRAW_FACTOR
    h2, w2 = case.height // f, case.width // f
    cols = ((np.arange(w2, dtype=np.float32) + 0.5) * f - 0.5 - case.cx) / case.unit
    rows = ((np.arange(h2, dtype=np.float32) + 0.5) * f - 0.5 - case.cy) / case.unit
    x, y = cols[None, :], rows[:, None]
    body = _ellipse((x, y), (0.0, 0.14, 0.46, 0.72), 0.02, 2.6)
    lungs = np.maximum(
        _ellipse((x, y), (-0.2, -0.03, 0.15, 0.32), 0.03, 2.4),
        _ellipse((x, y), (0.21, -0.01, 0.14, 0.31), 0.03, 2.4),
    )
    heart = _ellipse((x, y), heart_ellipse(case), 0.04)
    hilum_d = np.minimum(np.hypot(x + 0.1, y + 0.03), np.hypot(x - 0.1, y + 0.03))
    vessels = np.exp(-hilum_d / 0.13)
    spine = np.exp(-((x / 0.035) ** 4)) * (0.8 + 0.2 * np.cos(2 * np.pi * y / 0.09) ** 2)
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (y + 0.55 - 0.55 * x**2) / 0.085)) ** 6
    clav = sum(
        np.exp(-(((y - (-0.37 - 0.2 * (np.abs(x) - 0.04))) / 0.018) ** 2))
        * ((np.abs(x) > 0.04) & (np.abs(x) < 0.34) & (np.sign(x) == s))
        for s in (-1, 1)
    )
    texture = _smooth_noise(rng, (h2, w2), 28) + 0.4 * _smooth_noise(rng, (h2, w2), 90)
    air = lungs * (1 - 0.85 * heart)
    img = (
        0.1
        + 0.42 * body
        - 0.36 * air
        + 0.12 * heart
        + 0.12 * spine * (1 - 0.6 * lungs)
        + 0.07 * ribs * body
        + 0.12 * clav
        + air * (0.1 * vessels * (0.6 + 0.4 * texture) + 0.025 * texture)
    )
    if case.haze > 0:  # bilateral perihilar ("bat-wing") haze
        img = img + 0.22 * case.haze * np.exp(-hilum_d / 0.12) * air * (1 + 0.3 * texture)
    if case.effusion > 0:  # fluid blunting both bases
        img = img + 0.15 * case.effusion * air * expit((y - 0.15) / 0.03)
    if case.opacity is not None:
        ox, oy, rad, amp = case.opacity
        blob = np.exp(-((x - ox) ** 2 + (y - oy) ** 2) / (2 * rad**2))
        img = img + amp * blob * air * np.clip(0.7 + 0.5 * texture, 0, None)
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15)  # exposure differences
    full = np.asarray(
        Image.fromarray(img.astype(np.float32)).resize(
            (case.width, case.height), Image.Resampling.BILINEAR
        )
    )
    # Detector noise (sd 0.008): a random crop of one shared tile, far cheaper than fresh draws.
    tile = _noise_tile()
    oy, ox = (int(rng.integers(0, t - n + 1)) for t, n in zip(tile.shape, full.shape, strict=True))
    noise = tile[oy : oy + full.shape[0], ox : ox + full.shape[1]]
    return np.clip(full + noise, 0, 1)
