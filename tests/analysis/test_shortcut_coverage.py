"""Shortcut coverage by the gaze: which pixels are the shortcut, and how much of it the gaze covers,
on hand-made twins whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.shortcut_coverage import gaze_coverage, shortcut_pixels
from trainables.data.cached import CachedData

S = 16


def _twins():
    """Two images; image "b" carries a 2 x 8 line along its top edge, image "a" none. The
    shortcut twin stores its rows in the other order."""
    rng = np.random.default_rng(0)
    images = (rng.uniform(0.2, 0.6, (2, S, S)) * 255).round().astype(np.uint8)
    gaze = np.zeros((2, S, S), np.float16)
    gaze[:, 2:, :] = 0.005  # a faint tail under everything but the top two rows
    gaze[:, 1, :4] = 0.5  # ... and a glance on the start of the line
    gaze[:, 8:, 4:12] = 1.0
    common = {"labels": np.array([0, 1]), "patients": ["p", "q"], "split": np.array([0, 1])}
    clean = CachedData(images=images, gaze=gaze, keys=["a", "b"], **common)
    marked = images[::-1].copy()
    marked[0, :2, :8] = 250  # row 0 is image "b" in the shortcut twin
    shortcut = CachedData(images=marked, gaze=gaze[::-1].copy(), keys=["b", "a"], **common)
    return clean, shortcut


def test_the_shortcut_is_where_the_twins_differ():
    clean, shortcut = _twins()
    pixels = shortcut_pixels(clean, shortcut)
    expected = np.zeros((2, S, S), bool)
    expected[0, :2, :8] = True
    np.testing.assert_array_equal(pixels, expected)
    other = CachedData(
        images=clean.images, gaze=clean.gaze, labels=clean.labels, keys=["a", "c"],
        patients=clean.patients, split=clean.split,
    )  # fmt: skip
    with pytest.raises(ValueError, match="different images"):
        shortcut_pixels(other, shortcut)


def test_coverage_counts_the_shortcut_pixels_the_gaze_reaches():
    clean, shortcut = _twins()
    cov = gaze_coverage(shortcut.gaze, shortcut_pixels(clean, shortcut), (0.001, 0.01, 0.6))
    assert cov["images"] == 1 and cov["pixels"] == 16
    # 4 of the 16 line pixels sit under the glance (0.5); the rest see no gaze at all.
    assert cov["covered@0.001"] == cov["covered@0.01"] == pytest.approx(4 / 16)
    assert cov["covered@0.6"] == 0.0
    assert cov["density_weight"] == pytest.approx((4 * 0.5 + 12 * 1.0) / 16, rel=1e-3)
    # Distances to the nearest pixel with gaze >= 0.01: 0 under the glance (4 pixels), 1 just
    # above it (4), 1, 2, 3, 4 along row 1 past it, sqrt(2), sqrt(5), sqrt(10), sqrt(17) on row 0.
    assert cov["distance_px"] == pytest.approx(1.0)
