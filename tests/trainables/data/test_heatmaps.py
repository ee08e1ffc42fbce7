"""Gaze heatmaps against the published algorithm (counts + scipy gaussian_filter + resize)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from trainables.data.dicom import letterbox, letterbox_transform
from trainables.data.egd import read_egd
from trainables.data.heatmaps import (
    Fixations,
    NativeFixations,
    Pads,
    native_fixations,
    published_on_image,
    published_xy_original,
    screen_to_image,
    static_heatmap,
    temporal_heatmaps,
)


def _published(
    xs: np.ndarray,
    ys: np.ndarray,
    shape: tuple[int, int],
    size: int,
    sigma: float = 150.0,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Karargyris et al.'s static map: +1 per fixation at the native pixel, blur, then resize."""
    counts = np.zeros(shape)
    np.add.at(counts, (ys.astype(int), xs.astype(int)), 1.0 if weights is None else weights)
    return letterbox(gaussian_filter(counts, sigma=sigma), size)[0]


def _fix(xs, ys, durations=None) -> NativeFixations:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    d = np.ones(len(xs)) if durations is None else np.asarray(durations, float)
    return NativeFixations(xs, ys, d, 0)


@pytest.mark.parametrize("shape", [(520, 400), (360, 610)])
@pytest.mark.parametrize("weighting", ["count", "duration"])
def test_static_map_matches_published_algorithm(shape, weighting):
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    xs, ys = rng.integers(0, w, 30), rng.integers(0, h, 30)
    xs[:2], ys[:2] = [0, w - 1], [h - 1, 3]  # fixations at the edges exercise the reflection
    dur = rng.uniform(0.1, 1.0, 30)
    ref = _published(xs, ys, shape, 96, weights=dur if weighting == "duration" else None)
    ours = static_heatmap(
        _fix(xs, ys, dur), letterbox_transform(shape, 96), 96, weighting=weighting
    )
    assert ours.dtype == np.float32 and ours.shape == (96, 96)
    assert ours.max() == pytest.approx(1.0) and ours.min() >= 0
    assert np.corrcoef(ref.ravel(), ours.ravel())[0, 1] >= 0.99


def test_padding_stays_zero_and_sigma_scales_with_resize():
    t = letterbox_transform((400, 200), 64)
    m = static_heatmap(_fix([100], [200]), t, 64, sigma=20.0)
    assert m[:, : t.offset_x].max() == 0 and m[:, t.offset_x + t.resized_shape[1] :].max() == 0
    # 20 native px at scale 0.16 -> sigma 3.2 training px: the row profile is that Gaussian.
    row = m[round(float(t.apply(np.array([100]), np.array([200]))[1][0]))]
    u0 = t.apply(np.array([100.0]), np.array([0.0]))[0][0]
    cols = np.arange(64)
    inside = (cols >= t.offset_x) & (cols < t.offset_x + t.resized_shape[1])
    expected = np.exp(-0.5 * ((cols - u0) / (20.0 * t.scale)) ** 2)
    np.testing.assert_allclose(
        row[inside] / row.max(), expected[inside] / expected.max(), atol=0.02
    )


def test_duration_weighting_scales_each_fixation_by_its_duration():
    t = letterbox_transform((320, 320), 64)  # scale 0.2: these fixations land on pixel centres
    fix = _fix([102, 202], [152, 152], durations=[0.2, 1.0])
    u, v = t.apply(np.array([102.0, 202.0]), np.array([152.0, 152.0]))
    np.testing.assert_allclose([*u, *v], [20, 40, 30, 30], atol=1e-9)
    r, c = v.astype(int), u.astype(int)
    by_count = static_heatmap(fix, t, 64, sigma=15)[r, c]
    by_duration = static_heatmap(fix, t, 64, sigma=15, weighting="duration")[r, c]
    assert by_count[0] == pytest.approx(by_count[1], rel=1e-3)
    assert by_duration[1] == pytest.approx(1.0, abs=1e-3)
    assert by_duration[0] / by_duration[1] == pytest.approx(0.2, rel=0.02)


def test_no_fixation_on_the_image_returns_none():
    t = letterbox_transform((100, 100), 32)
    assert static_heatmap(_fix([], []), t, 32) is None
    assert temporal_heatmaps(_fix([], []), t, 32) is None
    with pytest.raises(ValueError, match="weighting"):
        static_heatmap(_fix([1], [1]), t, 32, weighting="loud")  # type: ignore[arg-type]


def test_off_image_fixations_are_dropped_and_counted():
    pads = Pads(0, 0, 420, 420)  # a 1080 x 1080 display area for a 500 x 500 image
    fx = np.array([0.5, 0.1, 0.5, 0.5, 0.7])  # 0.1 * 1920 = 192 < 420: left of the image
    fy = np.array([0.5, 0.5, -0.01, 1.2, 0.2])  # above / below the screen
    fix = Fixations(fx, fy, np.full(5, 0.3), np.zeros(5), np.zeros(5))
    nf = native_fixations(fix, pads, (500, 500), source="pads")
    assert nf.off_image == 3 and len(nf) == 2
    # (FPOGX * 1920 - 420) * 500 / 1080 at the centre = 250 (edge coords) -> pixel centre 249.5
    np.testing.assert_allclose(nf.xs[0], 249.5)
    # X/Y_ORIGINAL as the published mapping writes them: off-image fixations of this enlarged
    # display (500 px shown on 1080) truncate to (0, 0), a real pixel; they must still be dropped.
    xo, yo = published_xy_original(fx, fy, pads, (500, 500))
    assert (xo[1:4] == 0).all() and (yo[1:4] == 0).all()
    orig = Fixations(fx, fy, np.full(5, 0.3), xo.astype(float), yo.astype(float))
    kept = native_fixations(orig, pads, (500, 500), source="original")
    assert kept.off_image == 3 and len(kept) == 2
    np.testing.assert_array_equal(
        kept.xs, np.trunc((np.array([0.5, 0.7]) * 1920 - 420) * 500 / 1080)
    )
    # A coordinate off the pixel grid is dropped too, whatever the screen test says.
    bad = Fixations(fx, fy, np.full(5, 0.3), np.array([10, -3, 0, 0, 520.0]), yo.astype(float))
    assert native_fixations(bad, pads, (500, 500), source="original").off_image == 4
    # A larger-than-display image (MIMIC's case) gets negative sentinels, as the published code.
    big_x, big_y = published_xy_original(fx, fy, pads, (2500, 2500))
    assert (big_x[1:4] < 0).all() and (big_y[1:4] < 0).all()
    with pytest.raises(ValueError, match="coordinate source"):
        native_fixations(orig, pads, (500, 500), source="eyes")  # type: ignore[arg-type]


def test_pad_formula_agrees_with_x_original_in_the_twin(synthetic_root):
    # The twin's X_ORIGINAL/Y_ORIGINAL are the published mapping of FPOGX/FPOGY (even-rounded
    # size, truncation): on the image they agree with the pad formula; both sources give one map.
    import pydicom

    rec = read_egd(synthetic_root).records[0]
    ds = pydicom.dcmread(rec.dicom_path, stop_before_pixels=True)
    shape = (int(ds.Rows), int(ds.Columns))
    xo, yo = published_xy_original(rec.fixations.fpogx, rec.fixations.fpogy, rec.pads, shape)
    np.testing.assert_array_equal(xo, rec.fixations.x_original)
    np.testing.assert_array_equal(yo, rec.fixations.y_original)
    x, _ = screen_to_image(rec.fixations.fpogx, rec.fixations.fpogy, rec.pads, shape)
    on = published_on_image(rec.fixations.fpogx, rec.fixations.fpogy, rec.pads)
    assert 0 < (~on).sum() and on.sum() > 10
    assert np.abs(x[on] - rec.fixations.x_original[on]).max() < 3  # even rounding + truncation
    t = letterbox_transform(shape, 64)
    a = static_heatmap(native_fixations(rec.fixations, rec.pads, shape, "pads"), t, 64)
    b = static_heatmap(native_fixations(rec.fixations, rec.pads, shape, "original"), t, 64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_temporal_maps_one_per_fixation_in_order_capped():
    shape, size = (400, 300), 64
    rng = np.random.default_rng(3)
    xs, ys = rng.uniform(60, 240, 12), rng.uniform(60, 340, 12)
    t = letterbox_transform(shape, size)
    maps = temporal_heatmaps(_fix(xs, ys), t, size, sigma=25, max_maps=8)
    assert maps.shape == (8, size, size) and maps.dtype == np.float32
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, rtol=1e-6)
    u, v = t.apply(xs[:8], ys[:8])
    for k in range(8):  # map k peaks at fixation k
        r, c = np.unravel_index(maps[k].argmax(), maps[k].shape)
        assert abs(c - u[k]) <= 1 and abs(r - v[k]) <= 1
    every = temporal_heatmaps(_fix(xs, ys), t, size, sigma=25, max_maps=100)
    assert len(every) == 12
    # The static map is the normalised sum of the temporal maps (up to each temporal map's own
    # normalisation by its sampled peak, which sits up to half a pixel off the true centre).
    static = static_heatmap(_fix(xs, ys), t, size, sigma=25)
    np.testing.assert_allclose(every.sum(0) / every.sum(0).max(), static, atol=5e-3)
