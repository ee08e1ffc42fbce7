"""Static and temporal gaze heatmaps, drawn directly at training resolution.

The published code puts +1 per fixation at (X_ORIGINAL, Y_ORIGINAL) on the native grid, blurs with
``scipy.ndimage.gaussian_filter(sigma=150)`` (mode ``reflect``) and saves a viridis PNG. We draw the
same sum of Gaussians on the letterboxed training grid instead: fixations go through the image's
``Transform``, sigma is scaled by the resize factor, mass beyond an image edge is reflected back as
``reflect`` does, the padding stays zero, and the map is max-normalised float32 in [0, 1]. A sum of
separable Gaussians is two small matrix products, so no native-size array is ever made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from trainables.data.dicom import Transform

SCREEN_WIDTH, SCREEN_HEIGHT = 1920, 1080  # the EGD-CXR display, in pixels
CoordinateSource = Literal["pads", "original"]
COORDINATE_SOURCES: tuple[str, ...] = ("pads", "original")


class Pads(NamedTuple):
    """Screen padding (pixels of the 1920x1080 display) around the displayed image."""

    top: int
    bottom: int
    left: int
    right: int


# The gaze types live here, not in egd.py, so decoding workers unpickle them without pandas.
@dataclass(frozen=True, eq=False)
class Fixations:
    """One image's fixations in file (time) order, as float64 arrays of equal length."""

    fpogx: np.ndarray  # fixation x as a fraction of the screen width
    fpogy: np.ndarray  # fixation y as a fraction of the screen height
    fpogd: np.ndarray  # fixation duration (s)
    x_original: np.ndarray  # DICOM column of the fixation; negative = off the image
    y_original: np.ndarray  # DICOM row of the fixation; negative = off the image

    def __len__(self) -> int:
        return len(self.fpogx)


@dataclass(frozen=True)
class NativeFixations:
    """Fixations on the image, in native pixel-centre coordinates, plus how many fell off it."""

    xs: np.ndarray  # column of each on-image fixation
    ys: np.ndarray  # row of each on-image fixation
    durations: np.ndarray  # FPOGD (s) of each on-image fixation
    off_image: int  # fixations dropped because they land outside the image

    def __len__(self) -> int:
        return len(self.xs)


def screen_to_image(
    fpogx: np.ndarray, fpogy: np.ndarray, pads: Pads, native_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Screen fractions -> native image coordinates, measured from the image's top-left edge.

    ``x = W / (1920 - L - R) * (FPOGX * 1920 - L)``, ``y = H / (1080 - T - B) * (FPOGY * 1080 - T)``
    (EGD-CXR's mapping). A value in [0, W) lies on native column ``floor(x)``.
    """
    h, w = native_shape
    shown_w = SCREEN_WIDTH - pads.left - pads.right
    shown_h = SCREEN_HEIGHT - pads.top - pads.bottom
    if shown_w <= 0 or shown_h <= 0:
        raise ValueError(f"pads {pads} leave no image on the {SCREEN_WIDTH}x{SCREEN_HEIGHT} screen")
    x = w / shown_w * (np.asarray(fpogx, np.float64) * SCREEN_WIDTH - pads.left)
    y = h / shown_h * (np.asarray(fpogy, np.float64) * SCREEN_HEIGHT - pads.top)
    return x, y


def published_on_image(fpogx: np.ndarray, fpogy: np.ndarray, pads: Pads) -> np.ndarray:
    """The published mapping's test of a fixation being on the displayed image: strictly inside
    the screen area the pads leave (EGD-CXR's ``map_eye_gaze_from_screen_to_image_coordinates.py``).
    """
    x = np.asarray(fpogx, np.float64) * SCREEN_WIDTH
    y = np.asarray(fpogy, np.float64) * SCREEN_HEIGHT
    return (
        (x > pads.left)
        & (x < SCREEN_WIDTH - pads.right)
        & (y > pads.top)
        & (y < SCREEN_HEIGHT - pads.bottom)
    )


def published_xy_original(
    fpogx: np.ndarray, fpogy: np.ndarray, pads: Pads, native_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """X_ORIGINAL / Y_ORIGINAL exactly as EGD-CXR's published mapping writes them.

    On the image: ``int(W' / (1920 - L - R) * (FPOGX * 1920 - L))`` (and likewise for y), where W'
    and H' are the DICOM's columns and rows rounded up to even numbers (the script pads odd sizes)
    and ``int`` truncates toward zero. Off the image both coordinates are computed from -1, i.e.
    ``int(-W' / (1920 - L - R))``: negative when the image is larger than its display (MIMIC), but
    0 when it is displayed enlarged -- so the sign alone does not say "off the image";
    :func:`published_on_image` does.
    """
    h, w = native_shape
    w_even, h_even = w + w % 2, h + h % 2
    shown_w = SCREEN_WIDTH - pads.left - pads.right
    shown_h = SCREEN_HEIGHT - pads.top - pads.bottom
    on = published_on_image(fpogx, fpogy, pads)
    ex = np.where(on, np.asarray(fpogx, np.float64) * SCREEN_WIDTH - pads.left, -1.0)
    ey = np.where(on, np.asarray(fpogy, np.float64) * SCREEN_HEIGHT - pads.top, -1.0)
    return np.trunc(w_even / shown_w * ex).astype(int), np.trunc(h_even / shown_h * ey).astype(int)


def native_fixations(
    fix: Fixations, pads: Pads, native_shape: tuple[int, int], source: CoordinateSource = "pads"
) -> NativeFixations:
    """Place fixations on the native pixel grid and drop those off the image.

    Args:
        fix: one image's fixations.
        pads: the display pads from the master sheet (used when ``source="pads"``).
        native_shape: (rows, columns) of the decoded DICOM.
        source: ``"pads"`` maps FPOGX/FPOGY with the pad formula; ``"original"`` uses the dataset's
            X_ORIGINAL/Y_ORIGINAL pixel indices (what the published code drew).

    Returns:
        NativeFixations with pixel-centre coordinates (column i spans [i - 0.5, i + 0.5]).
    """
    h, w = native_shape
    if source == "pads":
        ex, ey = screen_to_image(fix.fpogx, fix.fpogy, pads, native_shape)
        on = (ex >= 0) & (ex < w) & (ey >= 0) & (ey < h)
        xs, ys = ex - 0.5, ey - 0.5  # edge-based -> pixel-centre coordinates
    elif source == "original":
        xs, ys = np.asarray(fix.x_original, np.float64), np.asarray(fix.y_original, np.float64)
        # The published mapping marks off-image fixations by coordinates computed from -1, which
        # truncate to 0 (a real pixel) for images displayed enlarged: decide with its own test.
        on = published_on_image(fix.fpogx, fix.fpogy, pads)
        on &= (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    else:
        raise ValueError(f"unknown coordinate source {source!r}; valid: {COORDINATE_SOURCES}")
    return NativeFixations(xs[on], ys[on], np.asarray(fix.fpogd, np.float64)[on], int((~on).sum()))


def _axis_kernels(centres: np.ndarray, lo: int, n: int, size: int, sigma: float) -> np.ndarray:
    """(k, size) Gaussians along one axis, reflected at the image edges, zero on the padding."""
    grid = np.arange(size, dtype=np.float64)
    left, right = lo - 0.5, lo + n - 0.5  # image edges on the training grid
    c = centres[:, None]
    out = np.zeros((len(centres), size))
    # Mirror images across both edges reproduce gaussian_filter's mode="reflect"; farther
    # reflections carry < exp(-(n / sigma)^2 / 2) of the mass and are left out.
    for mu in (c, 2 * left - c, 2 * right - c):
        out += np.exp(-0.5 * ((grid[None, :] - mu) / sigma) ** 2)
    out[:, :lo] = 0.0
    out[:, lo + n :] = 0.0
    return out


def _gaussians(
    fix: NativeFixations, transform: Transform, size: int, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    if sigma <= 0:
        raise ValueError(f"gaze sigma must be positive, got {sigma}")
    u, v = transform.apply(fix.xs, fix.ys)
    s = sigma * transform.scale
    rh, rw = transform.resized_shape
    gx = _axis_kernels(u, transform.offset_x, rw, size, s)
    gy = _axis_kernels(v, transform.offset_y, rh, size, s)
    return gx, gy


def _max_normalise(m: np.ndarray) -> np.ndarray:
    peak = m.max(axis=(-2, -1), keepdims=True)
    return (m / np.where(peak > 0, peak, 1.0)).astype(np.float32)


def static_heatmap(
    fix: NativeFixations,
    transform: Transform,
    size: int,
    sigma: float = 150.0,
    weighting: Literal["count", "duration"] = "count",
) -> np.ndarray | None:
    """Sum of one Gaussian per fixation on the letterboxed grid, max-normalised to [0, 1].

    Args:
        fix: on-image fixations in native pixel-centre coordinates.
        transform: the image's letterbox Transform (same as its pixels went through).
        size: side of the square training grid.
        sigma: Gaussian sigma in native pixels (published code: 150).
        weighting: ``"count"`` adds 1 per fixation; ``"duration"`` weights by FPOGD.

    Returns:
        (size, size) float32 map, or None when no fixation lies on the image (the caller counts
        the image as excluded; an all-zero target would silently teach "look nowhere").
    """
    if weighting not in ("count", "duration"):
        raise ValueError(f"unknown gaze weighting {weighting!r}; valid: ('count', 'duration')")
    if len(fix) == 0:
        return None
    gx, gy = _gaussians(fix, transform, size, sigma)
    w = np.ones(len(fix)) if weighting == "count" else fix.durations
    # einsum's own loop, not BLAS: this product is tiny and multi-threaded BLAS spends more on
    # thread hand-offs than on arithmetic (3x slower measured on a busy 2-core machine).
    heat = np.einsum("ki,kj->ij", (gy * w[:, None]).astype(np.float32), gx.astype(np.float32))
    if not heat.max() > 0:
        return None  # e.g. every fixation has zero duration
    return _max_normalise(heat)


def temporal_heatmaps(
    fix: NativeFixations, transform: Transform, size: int, sigma: float = 150.0, max_maps: int = 16
) -> np.ndarray | None:
    """One max-normalised map per fixation, in viewing order, for the first ``max_maps`` fixations.

    The published static map is the sum of these (before normalisation).

    Returns:
        (min(len(fix), max_maps), size, size) float32 maps, or None when no fixation is on the image.
    """
    if max_maps < 1:
        raise ValueError(f"max_maps must be >= 1, got {max_maps}")
    if len(fix) == 0:
        return None
    first = NativeFixations(
        fix.xs[:max_maps], fix.ys[:max_maps], fix.durations[:max_maps], fix.off_image
    )
    gx, gy = _gaussians(first, transform, size, sigma)
    return _max_normalise(gy[:, :, None] * gx[:, None, :])
