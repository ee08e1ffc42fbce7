"""REFLACX gaze maps against an independent transcription of the authors' recipe."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from trainables.data.dicom import letterbox, letterbox_transform
from trainables.data.reflacx_gaze import (
    ReflacxFixations,
    fixation_pixels,
    gaze_distribution,
    gaze_target,
    mean_of_readers,
    native_gaze_map,
    reader_distributions,
)


def _authors_map(fix: ReflacxFixations, shape: tuple[int, int]) -> np.ndarray:
    """create_heatmap, literally: per fixation a normalised 2-D Gaussian (sigma = pixels per
    degree x 1 degree) evaluated at the integer pixels of the rounded shown region only, times
    the duration; summed, divided by the sum."""
    img = np.zeros(shape)
    for k in range(len(fix)):
        x0, y0, x1, y1 = (
            round(float(v[k]))
            for v in (fix.shown_xmin, fix.shown_ymin, fix.shown_xmax, fix.shown_ymax)
        )
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        rows, cols = np.mgrid[y0:y1, x0:x1]
        sx, sy = fix.ppd_x[k], fix.ppd_y[k]
        dens = np.exp(-0.5 * (((cols - fix.x[k]) / sx) ** 2 + ((rows - fix.y[k]) / sy) ** 2))
        img[y0:y1, x0:x1] += dens / (2 * np.pi * sx * sy) * (fix.end[k] - fix.start[k])
    return img / img.sum()


def _realistic(shape: tuple[int, int], n: int, seed: int) -> ReflacxFixations:
    """Fixations as REFLACX has them: sigma 40-300 px, zoomed / panned shown regions (some the
    whole image), positions near and beyond region edges, a few off the image."""
    rng = np.random.default_rng(seed)
    h, w = shape
    zoom = rng.choice([1.0, 1.0, 1.5, 2.0, 3.0], n)
    vw, vh = w / zoom, h / zoom
    x0 = np.round(rng.uniform(0, w - vw + 1e-9))
    y0 = np.round(rng.uniform(0, h - vh + 1e-9))
    x1, y1 = np.minimum(w, np.round(x0 + vw)), np.minimum(h, np.round(y0 + vh))
    x = rng.uniform(x0, x1)
    y = rng.uniform(y0, y1)
    edge = rng.random(n) < 0.4  # near an edge of the shown region, or just past it
    x[edge] = np.where(rng.random(edge.sum()) < 0.5, x0[edge], x1[edge]) + rng.normal(
        0, 15, edge.sum()
    )
    x[:2] = [-120.0, w + 60.0]  # glances off the image
    ppd = rng.uniform(40, 300, n) / np.sqrt(zoom)
    start = np.cumsum(rng.uniform(0.1, 0.5, n))
    return ReflacxFixations(
        start,
        start + rng.uniform(0.08, 0.9, n),
        np.round(x),
        np.round(y),
        np.round(ppd),
        np.round(ppd * rng.uniform(0.95, 1.05, n)),
        x0,
        y0,
        x1,
        y1,
    )


def test_pdf_and_rounding_match_the_authors_scipy_call():
    # One fixation, half-integer shown region: the authors round with Python's round (half to
    # even) and slice [ymin:ymax, xmin:xmax) with multivariate_normal([y, x], [sy^2, sx^2]).pdf.
    shape = (40, 50)
    fix = ReflacxFixations(
        *(np.array([v], float) for v in (1.0, 1.5, 20.0, 17.0, 6.0, 4.0, 10.5, 3.5, 44.5, 31.5))
    )
    rows, cols = np.mgrid[
        4:32, 10:44
    ]  # round(10.5)=10, round(3.5)=4, round(44.5)=44, round(31.5)=32
    want = np.zeros(shape)
    want[4:32, 10:44] = multivariate_normal([17.0, 20.0], [16.0, 36.0]).pdf(
        np.stack([rows, cols], axis=-1)
    )
    got = native_gaze_map(fix, shape)
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("shape", [(1000, 820), (760, 1200)])
def test_native_map_matches_the_recipe_on_realistic_fixations(shape):
    fix = _realistic(shape, 40, seed=shape[0])
    want = _authors_map(fix, shape)
    got = native_gaze_map(fix, shape)
    assert got.shape == shape and got.sum() == pytest.approx(1.0)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.99
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-14)  # same numbers, not just shape


@pytest.mark.parametrize("shape", [(1000, 820), (760, 1200)])
def test_training_map_is_the_letterboxed_native_map(shape):
    fix = _realistic(shape, 40, seed=7 + shape[1])
    t = letterbox_transform(shape, 64)
    boxed = letterbox(_authors_map(fix, shape).astype(np.float32), 64)[0].astype(np.float64)
    boxed /= boxed.sum()
    got = gaze_distribution(fix, t, 64)
    assert got.shape == (64, 64) and got.sum() == pytest.approx(1.0)
    assert np.corrcoef(got.ravel(), boxed.ravel())[0, 1] >= 0.999
    np.testing.assert_allclose(got, boxed, atol=1e-4 * boxed.max())  # same windows as the image
    rh, rw = t.resized_shape  # the letterbox padding stays empty
    inside = np.zeros((64, 64), bool)
    inside[t.offset_y : t.offset_y + rh, t.offset_x : t.offset_x + rw] = True
    assert not got[~inside].any()
    target = gaze_target(fix, t, 64)
    assert target.dtype == np.float32 and target.max() == 1.0
    np.testing.assert_allclose(target, got / got.max(), rtol=1e-6)


def test_nothing_outside_the_shown_region():
    shape = (300, 400)
    ones = np.ones(1)
    fix = ReflacxFixations(
        0 * ones, ones, 250 * ones, 150 * ones, 80 * ones, 80 * ones,
        100 * ones, 0 * ones, 300 * ones, 300 * ones,
    )  # fmt: skip
    native = native_gaze_map(fix, shape)
    assert native[:, :100].sum() == 0 and native[:, 300:].sum() == 0 and native[:, 299].sum() > 0
    t = letterbox_transform(shape, 40)  # 10 native columns per training column, no padding x
    grid = gaze_distribution(fix, t, 40)
    assert grid[:, :10].sum() == 0 and grid[:, 30:].sum() == 0 and grid[:, 10].sum() > 0


def test_duration_weights_and_degenerate_inputs():
    shape = (200, 200)
    base = {
        "x": np.array([50.0, 150.0]), "y": np.array([100.0, 100.0]), "ppd_x": np.full(2, 10.0),
        "ppd_y": np.full(2, 10.0), "shown_xmin": np.zeros(2), "shown_ymin": np.zeros(2),
        "shown_xmax": np.full(2, 200.0), "shown_ymax": np.full(2, 200.0),
    }  # fmt: skip
    fix = ReflacxFixations(start=np.zeros(2), end=np.array([1.0, 3.0]), **base)
    m = native_gaze_map(fix, shape)
    assert m[100, 150] / m[100, 50] == pytest.approx(3.0)  # three times as long
    still = ReflacxFixations(start=np.ones(2), end=np.ones(2), **base)
    t = letterbox_transform(shape, 32)
    assert native_gaze_map(still, shape) is None and gaze_distribution(still, t, 32) is None
    empty = ReflacxFixations(*(np.zeros(0) for _ in range(10)))
    assert gaze_target(empty, t, 32) is None


def test_mean_of_readers_weighs_each_reader_once():
    shape = (120, 100)
    t = letterbox_transform(shape, 32)
    a = _realistic(shape, 5, seed=1)
    b = _realistic(shape, 60, seed=2)  # a long reading does not outweigh a short one
    maps = reader_distributions([a, None, b], t, 32)
    assert maps[1] is None
    mean = mean_of_readers(maps)
    np.testing.assert_allclose(mean, (maps[0] + maps[2]) / 2)
    assert mean.sum() == pytest.approx(1.0)
    assert mean_of_readers([None, None]) is None


def test_fixation_pixels_follow_the_letterbox():
    shape = (400, 200)  # portrait: padded left and right
    t = letterbox_transform(shape, 40)
    xs = np.array([0.0, 199.0, 100.0, -5.0, 250.0])
    ys = np.array([0.0, 399.0, 200.0, 10.0, 10.0])
    fix = ReflacxFixations(
        np.zeros(5), np.ones(5), xs, ys, *(np.ones(5),) * 2, *(np.zeros(5),) * 2,
        np.full(5, 200.0), np.full(5, 400.0),
    )  # fmt: skip
    got = fixation_pixels(fix, t)
    assert got.shape == (3, 2)  # the two off the image are dropped
    u, v = t.apply(xs[:3], ys[:3])
    np.testing.assert_array_equal(got, np.stack([np.round(v), np.round(u)], axis=1))
    assert got[:, 1].min() >= t.offset_x and got[:, 1].max() < t.offset_x + t.resized_shape[1]
