"""REFLACX gaze maps: the authors' recipe, on the native grid and on the letterboxed training grid.

The recipe (Bigolin Lanfredi et al.'s ``create_heatmap``; DESIGN.md section 3b): per fixation a 2-D
Gaussian density centred at (``x_position``, ``y_position``) with standard deviations
``angular_resolution_{x,y}_pixels_per_degree`` x 1 degree, evaluated only inside the part of the
image shown on screen during that fixation (``*_shown_from_image``, rounded, half-open, zero
outside), weighted by the fixation's duration (end - start), summed and divided by the sum. The
authors evaluate ``scipy.stats.multivariate_normal.pdf`` at integer pixel coordinates, so each
Gaussian carries its ``1 / (2 pi sx sy)`` factor: a zoomed-in fixation (fewer pixels per degree)
is a narrower, taller bump of the same mass. The covariance is diagonal and the shown region a
rectangle, so every term is separable and no (H, W) array per fixation is ever made.

Numpy and scipy only (decoding workers import this module without pandas).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtr

if TYPE_CHECKING:
    from trainables.data.dicom import Transform

SIGMA_DEGREES = 1.0  # the authors' Gaussian: one degree of visual angle


@dataclass(frozen=True, eq=False)
class ReflacxFixations:
    """One reading's fixations (``fixations.csv``), float64 arrays of equal length, file order.

    Positions and shown regions are native DICOM pixel coordinates (pixel centres at integers,
    origin top left); a position may lie off the image (a glance at the interface).
    """

    start: np.ndarray  # timestamp_start_fixation (s from the start of the recording)
    end: np.ndarray  # timestamp_end_fixation (s)
    x: np.ndarray  # x_position (column)
    y: np.ndarray  # y_position (row)
    ppd_x: np.ndarray  # angular_resolution_x_pixels_per_degree (image pixels per degree)
    ppd_y: np.ndarray  # angular_resolution_y_pixels_per_degree
    shown_xmin: np.ndarray  # xmin_shown_from_image: the region on screen (zoom / pan)
    shown_ymin: np.ndarray
    shown_xmax: np.ndarray
    shown_ymax: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def durations(self) -> np.ndarray:
        """end - start (s), the recipe's weight (never negative)."""
        return np.clip(self.end - self.start, 0.0, None)


def _shown_edges(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The shown pixel range [lo, hi) as edges in pixel-centre coordinates, clipped to the image.

    Rounded half to even like the authors' Python ``round``; pixel c spans [c - 0.5, c + 0.5].
    """
    first = np.clip(np.round(lo), 0, n)
    last = np.clip(np.round(hi), 0, n)
    return first - 0.5, np.maximum(last, first) - 0.5


def _axis_native(
    mu: np.ndarray, sigma: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int
) -> np.ndarray:
    """(K, n) 1-D normal densities at the pixel centres 0..n-1, zero outside [lo, hi)."""
    c = np.arange(n, dtype=np.float64)[None, :]
    left, right = _shown_edges(lo, hi, n)
    s = sigma[:, None]
    dens = np.exp(-0.5 * ((c - mu[:, None]) / s) ** 2) / (s * np.sqrt(2 * np.pi))
    return np.where((c > left[:, None]) & (c < right[:, None]), dens, 0.0)


def _box_windows(n: int, rn: int) -> tuple[np.ndarray, np.ndarray]:
    """The native pixels [first, last) that PIL's BOX resize (``dicom.letterbox``) averages into
    each of ``rn`` output pixels: those whose centre falls in the output pixel's span (PIL's
    ``precompute_coeffs``; no fractional edge weights), one nearest pixel when enlarging."""
    scale = n / rn
    support = 0.5 * max(scale, 1.0)
    centre = (np.arange(rn, dtype=np.float64) + 0.5) * scale
    first = np.clip(np.floor(centre - support + 0.5), 0, n)
    last = np.clip(np.floor(centre + support + 0.5), 0, n)
    return first, last


def _axis_training(
    mu: np.ndarray, sigma: np.ndarray, lo: np.ndarray, hi: np.ndarray, span: tuple[int, int]
) -> np.ndarray:
    """(K, rn) mean of each 1-D normal density over each resized pixel's BOX window ∩ [lo, hi).

    ``span`` = (native length n, resized length rn) along this axis. The window's mass comes
    from the normal CDF between pixel edges (pixel c spans [c - 0.5, c + 0.5]), so it equals the
    sum of the density at the window's pixel centres up to the midpoint rule.
    """
    n, rn = span
    first, last = _box_windows(n, rn)
    left, right = _shown_edges(lo, hi, n)
    width = np.maximum(last - first, 1.0)[None, :]
    inv = (1.0 / sigma)[:, None]
    z_left, z_right = ((left - mu)[:, None] * inv), ((right - mu)[:, None] * inv)

    def cdf(edges: np.ndarray) -> np.ndarray:
        z = (edges[None, :] - 0.5 - mu[:, None]) * inv
        np.maximum(z, z_left, out=z)  # clipping z clips the edge to the shown region
        np.minimum(z, z_right, out=z)
        return ndtr(z)

    if np.array_equal(first[1:], last[:-1]):  # shrinking: windows tile the axis, one CDF table
        return np.diff(cdf(np.append(first, last[-1])), axis=1) / width
    return (cdf(last) - cdf(first)) / width


def _weights(fix: ReflacxFixations) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    sx, sy = fix.ppd_x * SIGMA_DEGREES, fix.ppd_y * SIGMA_DEGREES
    if len(fix) == 0 or not (np.all(sx > 0) and np.all(sy > 0)):
        return None
    return fix.durations, sx, sy


def native_gaze_map(fix: ReflacxFixations, native_shape: tuple[int, int]) -> np.ndarray | None:
    """The recipe on the native (rows, columns) grid: float64, sums to 1.

    Returns None when nothing lands on the shown image (no fixations, all durations zero, every
    shown region empty): the caller counts the reading, an all-zero map would teach "look nowhere".
    """
    parts = _weights(fix)
    if parts is None:
        return None
    w, sx, sy = parts
    h, wd = native_shape
    gx = _axis_native(fix.x, sx, fix.shown_xmin, fix.shown_xmax, wd)
    gy = _axis_native(fix.y, sy, fix.shown_ymin, fix.shown_ymax, h)
    heat = (gy * w[:, None]).T @ gx
    total = heat.sum()
    return heat / total if total > 0 else None


def gaze_distribution(fix: ReflacxFixations, transform: Transform, size: int) -> np.ndarray | None:
    """The recipe taken to the letterboxed (size, size) training grid: float64, sums to 1.

    Equal (to the midpoint rule within native pixels) to ``letterbox(native_gaze_map(...))``
    renormalised: each training pixel is the mean of the native map over exactly the native
    pixels whose values the letterbox's BOX filter averages into the image's pixel there, so map
    and image stay registered pixel for pixel. Computed per axis from the normal CDF rather than
    by building the native map (3056 x 2544 at MIMIC size: ~60 MB per reading) and resampling it:
    a few hundred fixations cost two (K, size) CDF tables and one small matrix product (~170
    fixations at 224 px: 8-9 ms on a loaded core, so REFLACX's 3,052 readings take ~30 s).

    Returns None as :func:`native_gaze_map` does.
    """
    parts = _weights(fix)
    if parts is None:
        return None
    w, sx, sy = parts
    (h, wd), (rh, rw) = transform.native_shape, transform.resized_shape
    mx = _axis_training(fix.x, sx, fix.shown_xmin, fix.shown_xmax, (wd, rw))
    my = _axis_training(fix.y, sy, fix.shown_ymin, fix.shown_ymax, (h, rh))
    # einsum's own loop, not BLAS (as heatmaps.py): on the busy 2-core machine BLAS threads
    # made this product 2.4x slower per reading (21 vs 9 ms at 224 px, 170 fixations).
    inner = np.einsum("ki,kj->ij", my * w[:, None], mx)
    total = inner.sum()
    if not total > 0:
        return None
    out = np.zeros((size, size))
    top, left = transform.offset_y, transform.offset_x
    out[top : top + rh, left : left + rw] = inner / total
    return out


def max_normalise(m: np.ndarray) -> np.ndarray:
    """float32 map scaled to max 1 (the training target convention of the EGD maps)."""
    peak = float(m.max())
    return (m / (peak if peak > 0 else 1.0)).astype(np.float32)


def gaze_target(fix: ReflacxFixations, transform: Transform, size: int) -> np.ndarray | None:
    """:func:`gaze_distribution` max-normalised to [0, 1], float32 (one reader's training map)."""
    dist = gaze_distribution(fix, transform, size)
    return None if dist is None else max_normalise(dist)


def reader_distributions(
    readings: Sequence[ReflacxFixations | None], transform: Transform, size: int
) -> list[np.ndarray | None]:
    """Per-reader :func:`gaze_distribution` (None for a reading without usable gaze)."""
    return [None if f is None else gaze_distribution(f, transform, size) for f in readings]


def mean_of_readers(maps: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Mean of the readers' sum-1 maps (each radiologist counts once, however long they looked).

    None entries (readings without gaze) are skipped; None when no map is left. Sums to 1;
    :func:`max_normalise` it for a training target.
    """
    kept = [m for m in maps if m is not None]
    return np.mean(kept, axis=0) if kept else None


def fixation_pixels(fix: ReflacxFixations, transform: Transform) -> np.ndarray:
    """(n, 2) int (row, column) training-grid pixels of the fixations that lie on the image.

    For NSS / AUC-Judd fixation masks and shuffled-AUC positives; fixations off the native
    image (interface glances) are dropped.
    """
    h, w = transform.native_shape
    on = (fix.x >= -0.5) & (fix.x < w - 0.5) & (fix.y >= -0.5) & (fix.y < h - 0.5)
    u, v = transform.apply(fix.x[on], fix.y[on])
    rh, rw = transform.resized_shape
    cols = np.clip(np.round(u), transform.offset_x, transform.offset_x + rw - 1)
    rows = np.clip(np.round(v), transform.offset_y, transform.offset_y + rh - 1)
    return np.stack([rows, cols], axis=1).astype(np.int64)
