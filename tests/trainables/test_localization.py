"""Pointing game and energy inside the radiologists' ellipses, on hand-built maps."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.data.dicom import letterbox, letterbox_transform
from trainables.localization import (
    LOCALIZATION_KEYS,
    boxes_to_grid,
    ellipse_mask,
    energy_inside,
    localization,
    pointing_hit,
)


def test_ellipse_mask_by_hand():
    # Box (2, 2)-(6, 4): centre (4, 3), semi-axes 2 and 1. Pixel centres inside or on it: row 3
    # columns 2..6, and (4, 2), (4, 4) at the ends of the short axis.
    mask = ellipse_mask(np.array([[2, 2, 6, 4]]), (8, 10))
    want = np.zeros((8, 10), bool)
    want[3, 2:7] = True
    want[2, 4] = want[4, 4] = True
    np.testing.assert_array_equal(mask, want)
    tiny = ellipse_mask(np.array([[5.1, 1.2, 5.3, 1.4]]), (8, 10))  # smaller than a pixel
    assert tiny.sum() == 1 and tiny[1, 5]
    both = ellipse_mask(np.array([[2, 2, 6, 4], [5.1, 1.2, 5.3, 1.4]]), (8, 10))
    np.testing.assert_array_equal(both, mask | tiny)
    assert not ellipse_mask(np.zeros((0, 4)), (8, 10)).any()


def test_pointing_game():
    mask = ellipse_mask(np.array([[2, 2, 6, 4]]), (8, 10))
    peak_in, peak_out = np.zeros((8, 10)), np.zeros((8, 10))
    peak_in[3, 5], peak_out[7, 9] = 1.0, 1.0
    assert pointing_hit(peak_in, mask) == 1.0 and pointing_hit(peak_out, mask) == 0.0
    flat = np.ones((8, 10))  # no maximum to point with: chance, the ellipse's area share
    assert pointing_hit(flat, mask) == pytest.approx(mask.mean())
    two = peak_in + peak_out  # two maxima, one inside
    assert pointing_hit(two, mask) == 0.5
    assert np.isnan(pointing_hit(peak_in, np.zeros_like(mask)))


def test_energy_inside():
    mask = ellipse_mask(np.array([[2, 2, 6, 4]]), (8, 10))
    assert energy_inside(np.ones((8, 10)), mask) == pytest.approx(7 / 80)  # uniform = area
    assert energy_inside(mask.astype(float), mask) == 1.0
    half = mask * 3.0
    half[0, 0] = 21.0  # as much mass outside (21) as inside (7 x 3)
    assert energy_inside(half, mask) == pytest.approx(0.5)
    assert np.isnan(energy_inside(np.zeros((8, 10)), mask))
    with pytest.raises(ValueError, match="non-negative"):
        energy_inside(-np.ones((8, 10)), mask)
    with pytest.raises(ValueError, match="shape"):
        energy_inside(np.ones((8, 9)), mask)


@pytest.mark.parametrize("shape", [(900, 700), (600, 1000)])
def test_ellipses_follow_the_letterbox(shape):
    boxes = np.array([[100.0, 200.0, 400.0, 420.0], [500.0, 50.0, 690.0, 300.0]])
    boxes = np.minimum(boxes, [shape[1] - 1, shape[0] - 1] * 2)
    t = letterbox_transform(shape, 64)
    grid = boxes_to_grid(boxes, t)
    u, v = t.apply(boxes[:, 0], boxes[:, 1])
    np.testing.assert_allclose(grid[:, :2], np.stack([u, v], axis=1))
    native = ellipse_mask(boxes, shape).astype(np.float32)
    resized = letterbox(native, 64)[0] > 0.5  # the native raster through the image's letterbox
    ours = ellipse_mask(grid, (64, 64))
    iou = (ours & resized).sum() / (ours | resized).sum()
    assert iou > 0.85
    peak = np.zeros((64, 64))
    r, c = np.argwhere(resized)[len(np.argwhere(resized)) // 2]
    peak[r, c] = 1.0  # a map peaked inside the letterboxed ellipse points into ours
    assert pointing_hit(peak, ours) == 1.0


def test_localization_per_image():
    mask = ellipse_mask(np.array([[2, 2, 6, 4]]), (8, 10))
    peak = np.zeros((8, 10))
    peak[3, 4] = 1.0
    got = localization([peak, np.ones((8, 10)), peak], [mask, mask, np.zeros_like(mask)])
    assert set(got) == set(LOCALIZATION_KEYS)
    np.testing.assert_allclose(got["pointing"][:2], [1.0, 7 / 80])
    np.testing.assert_allclose(got["energy"][:2], [1.0, 7 / 80])
    np.testing.assert_allclose(got["area"][:2], [7 / 80, 7 / 80])
    assert all(np.isnan(got[k][2]) for k in LOCALIZATION_KEYS)  # no ellipse on that image
    with pytest.raises(ValueError, match="masks"):
        localization([peak], [mask, mask])
