"""Bootstrap summaries of per-image values and paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.metrics import bootstrap_indices
from trainables.per_image import paired_difference, summarise


def test_summary_is_the_percentile_bootstrap_of_the_mean():
    rng = np.random.default_rng(0)
    values = rng.random(50)
    values[[3, 7]] = np.nan  # undefined for two images: left out
    got = summarise({"cc": values, "flat": np.full(50, 0.25)}, resamples=500, seed=4)
    idx = bootstrap_indices(50, resamples=500, seed=4)
    means = np.nanmean(values[idx], axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    assert got["cc"].mean == pytest.approx(np.nanmean(values))
    assert (got["cc"].low, got["cc"].high) == pytest.approx((low, high))
    assert got["cc"].n == 48
    assert (got["flat"].mean, got["flat"].low, got["flat"].high) == pytest.approx((0.25,) * 3)
    empty = summarise({"x": np.full(4, np.nan)})["x"]
    assert empty.n == 0 and np.isnan(empty.mean)
    with pytest.raises(ValueError, match="images"):
        summarise({"x": np.zeros((2, 2))})


def test_paired_difference_uses_the_same_resamples():
    rng = np.random.default_rng(1)
    b = rng.random(80)  # images differ a lot ...
    a = b + 0.05 + rng.normal(0, 0.01, 80)  # ... but a beats b on each by about 0.05
    diff = paired_difference(a, b, resamples=1000, seed=2)
    assert diff.mean == pytest.approx(np.mean(a - b))
    assert diff.low > 0.04 and diff.high < 0.06 and diff.samples.shape == (1000,)
    unpaired = summarise({"a": a}, resamples=1000, seed=2)["a"]
    assert (diff.high - diff.low) < 0.2 * (unpaired.high - unpaired.low)
    idx = bootstrap_indices(80, resamples=1000, seed=2)  # the very resamples of summarise
    np.testing.assert_allclose(diff.samples, (a - b)[idx].mean(axis=1))
    exact = paired_difference(b + 0.1, b, resamples=200, seed=0)
    assert (exact.mean, exact.low, exact.high) == pytest.approx((0.1, 0.1, 0.1))


def test_paired_difference_leaves_out_images_missing_on_either_side():
    a, b = np.array([1.0, np.nan, 3.0, 4.0]), np.array([0.0, 1.0, np.nan, 2.0])
    diff = paired_difference(a, b, resamples=100, seed=0)
    assert diff.n == 2 and diff.mean == pytest.approx(1.5)
    with pytest.raises(ValueError, match="shape"):
        paired_difference(np.zeros(3), np.zeros(4))
