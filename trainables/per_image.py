"""Bootstrap summaries of per-image values: means with percentile intervals, paired differences.

For the per-image numbers of :mod:`trainables.agreement` and :mod:`trainables.localization` (one
value per image and metric, ``nan`` where undefined). Images are resampled with replacement
(``metrics.bootstrap_indices``); every metric and both sides of a difference use the same
resamples for the same ``n``, ``resamples`` and ``seed``, so intervals and paired differences come
from one set of draws. Numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from trainables.metrics import bootstrap_indices, percentile_summary

RESAMPLES = 1000


@dataclass(frozen=True)
class Summary:
    """A per-image mean and its percentile-bootstrap interval."""

    mean: float  # over the images with a finite value
    low: float  # alpha/2 percentile of the resampled means
    high: float  # 1 - alpha/2 percentile
    n: int  # images with a finite value


@dataclass(frozen=True, eq=False)
class Difference:
    """Mean of a - b over the images where both are finite, with its paired-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int
    samples: np.ndarray = field(repr=False)  # (resamples,) resampled mean differences (p-values)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples,) nan-mean of each resample of the images; nan where a resample has none."""
    idx = bootstrap_indices(len(values), resamples=resamples, seed=seed)
    picked = values[idx]
    finite = np.isfinite(picked)
    count = finite.sum(axis=1)
    total = np.where(finite, picked, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _vector(name: str, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name}: expected a non-empty (images,) array, got shape {v.shape}")
    return v


def summarise(
    values: Mapping[str, np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Summary]:
    """Mean and percentile interval of each metric's per-image values.

    Args:
        values: metric -> (N,) per-image values (``nan``: undefined for that image, left out).
        resamples: bootstrap resamples of the N images.
        seed: seeds the resamples (the same for every metric).
        alpha: 0.05 gives the 95% interval (2.5th, 97.5th percentiles).

    Returns:
        metric -> Summary; all ``nan`` (n = 0) for a metric without a finite value.
    """
    out = {}
    for key, raw in values.items():
        v = _vector(key, raw)
        finite = np.isfinite(v)
        if not finite.any():
            out[key] = Summary(float("nan"), float("nan"), float("nan"), 0)
            continue
        _, low, high = percentile_summary(_resampled_means(v, resamples, seed), alpha)
        out[key] = Summary(float(v[finite].mean()), low, high, int(finite.sum()))
    return out


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> Difference:
    """a - b per image (e.g. an arm's pointing game minus unet's), over the same resamples.

    Images where either value is not finite are left out of every resample's mean. The pairing
    is what makes the interval narrow when both maps do well or badly on the same images.
    """
    a, b = _vector("a", a), _vector("b", b)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    d = np.where(np.isfinite(a) & np.isfinite(b), a - b, np.nan)
    samples = _resampled_means(d, resamples, seed)
    n = int(np.isfinite(d).sum())
    _, low, high = percentile_summary(samples, alpha)
    mean = float(np.nanmean(d)) if n else float("nan")
    return Difference(mean, low, high, n, samples)
