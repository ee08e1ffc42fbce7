"""Pure metric functions: classification AUCs, their bootstrap, and map-vs-gaze saliency agreement.

Shared by the fit loop (per-epoch validation, end-of-trial test metrics) and ``analysis/`` (tables),
so a number in MLflow and a number in a table come from the same code. No torch, no MLflow here.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from trainables.record import SALIENCY_KEYS  # noqa: F401  (re-exported)
from trainables.task import Task

log = logging.getLogger(__name__)


FIXATION_QUANTILE = 0.9
"""Default fixation mask: pixels whose gaze density is in its top decile (see saliency_metrics)."""

KL_EPS = float(np.finfo(np.float64).eps)
"""Regulariser of the KL divergence (MATLAB's eps, as in the MIT benchmark's KLdiv.m)."""

_CHUNK = 256  # resamples per vectorised block: bounds memory at _CHUNK * N floats per array


def _check_predictions(labels: np.ndarray, probs: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(N, K) 0/1 labels and (N, K) float64 scores, checked against the task."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (labels.shape[0], task.n):
        raise ValueError(f"expected probs (N, {task.n}) for {labels.shape[0]} labels, got {probs.shape}")  # fmt: skip
    if task.exclusive and (labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= task.n))):  # fmt: skip
        raise ValueError(f"labels must be class ids 0..{task.n - 1}, got {np.unique(labels)}")
    if not task.exclusive and (labels.ndim != 2 or not np.isin(labels, (0, 1)).all()):
        raise ValueError(f"multi-label labels must be 0/1 of shape (N, {task.n}), got {labels.shape}")  # fmt: skip
    if not np.isfinite(probs).all():
        raise ValueError(f"probs contain {int((~np.isfinite(probs)).sum())} non-finite values")
    return task.multi_hot(labels), probs


def per_class_auc(labels: np.ndarray, probs: np.ndarray, task: Task) -> dict[str, float]:
    """One-vs-rest ROC AUC per class and their mean.

    Args:
        labels: class ids (N,) of an exclusive task, or 0/1 (N, K) of a multi-label one.
        probs: (N, K) class probabilities (any monotone score works; AUC is rank-based).
        task: the classes (their order is the columns').

    Returns:
        ``task.auc_keys`` -> AUC. A class whose labels take a single value (absent, or every
        image) has no AUC: ``nan``. The mean is over the finite class AUCs, ``nan`` if none.
    """
    hot, probs = _check_predictions(labels, probs, task)
    out: dict[str, float] = {}
    for c, key in enumerate(task.auc_keys[:-1]):
        positive = hot[:, c] == 1
        if positive.all() or not positive.any():
            out[key] = float("nan")
        else:
            out[key] = float(roc_auc_score(positive, probs[:, c]))
    finite = [v for v in out.values() if np.isfinite(v)]
    out["auc_mean"] = float(np.mean(finite)) if finite else float("nan")
    return out


def rank_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC by the Mann-Whitney statistic with mid-ranks (ties count one half).

    Vectorised over resamples, which sklearn's ``roc_auc_score`` is not (it would be called
    3 x resamples x arms times). Rows whose labels take a single value give ``nan``.

    Args:
        positive: (..., N) booleans.
        scores: (..., N) scores, same shape.
    """
    positive = np.asarray(positive, dtype=bool)
    ranks = rankdata(scores, axis=-1)
    n_pos = positive.sum(axis=-1)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def resampled_aucs(
    labels: np.ndarray, probs: np.ndarray, indices: np.ndarray, task: Task
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (``task.auc_keys`` order) of each bootstrap resample given by the rows of ``indices``.

    A resample is valid when every class that has an AUC on the full data keeps both a positive
    and a negative image; classes without an AUC on the full data stay ``nan`` and are left out
    of the mean, as in :func:`per_class_auc`.

    Args:
        labels: (N,) class ids or (N, K) 0/1 (see :func:`per_class_auc`).
        probs: (N, K) probabilities.
        indices: (B, N') integer row indices into labels/probs (one resample per row).
        task: the classes.

    Returns:
        ``(aucs, valid)``: aucs (B, K + 1) float64 with invalid rows all ``nan``; valid (B,) bool.
    """
    full = per_class_auc(labels, probs, task)
    hot, probs = _check_predictions(labels, probs, task)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 2:
        raise ValueError(f"indices must be (B, N), got shape {indices.shape}")
    has_auc = np.array([np.isfinite(full[k]) for k in task.auc_keys[:-1]])
    aucs = np.full((indices.shape[0], task.n + 1), np.nan)
    for start in range(0, indices.shape[0], _CHUNK):
        idx = indices[start : start + _CHUNK]
        for c in np.flatnonzero(has_auc):
            aucs[start : start + len(idx), c] = rank_auc(hot[idx, c] == 1, probs[idx, c])
    class_aucs = aucs[:, :-1][:, has_auc]
    valid = np.isfinite(class_aucs).all(axis=1) & has_auc.any()
    if has_auc.any():
        aucs[:, -1] = class_aucs.mean(axis=1)
    aucs[~valid] = np.nan
    return aucs, valid


def bootstrap_indices(n: int, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices drawn with replacement; the same seed gives the same resamples."""
    if n < 1 or resamples < 1:
        raise ValueError(f"need n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_summary(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """(median, alpha/2 percentile, 1 - alpha/2 percentile) of the finite samples; nans if none."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (float("nan"),) * 3
    lo, med, hi = np.percentile(finite, [100 * alpha / 2, 50, 100 * (1 - alpha / 2)])
    return float(med), float(lo), float(hi)


def bootstrap_auc_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    task: Task,
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float, float]]:
    """Percentile-bootstrap (median, low, high) of each AUC, resampling images with replacement.

    Resamples in which a class loses all its positives or negatives are skipped; how many is
    logged (a warning when any are). The interval is over the kept resamples.

    Returns:
        ``task.auc_keys`` -> ``(median, alpha/2 percentile, 1 - alpha/2 percentile)``; all ``nan``
        for a class without an AUC on the full data, or when every resample was skipped.
    """
    indices = bootstrap_indices(np.asarray(labels).shape[0], resamples=resamples, seed=seed)
    aucs, valid = resampled_aucs(labels, probs, indices, task)
    skipped = int((~valid).sum())
    if skipped:
        log.warning("bootstrap: skipped %d of %d resamples lacking a class", skipped, resamples)
    return {key: percentile_summary(aucs[valid, j], alpha) for j, key in enumerate(task.auc_keys)}


def _check_map(name: str, value: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map, got shape {value.shape}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(value)).sum())} non-finite values")
    return value


def default_fixation_mask(gaze: np.ndarray, quantile: float = FIXATION_QUANTILE) -> np.ndarray:
    """Pixels where the gaze density is at or above its ``quantile`` and positive.

    Our gaze maps are blurred fixation densities, not fixation points; the top decile of the density
    stands in for the fixated pixels that NSS and AUC-Judd are defined on. ``> 0`` keeps a mostly
    empty map from marking every zero pixel as fixated.
    """
    gaze = _check_map("gaze", gaze)
    return (gaze >= np.quantile(gaze, quantile)) & (gaze > 0)


def _zscore(x: np.ndarray) -> np.ndarray | None:
    std = x.std()
    return None if std == 0 else (x - x.mean()) / std


def _auc_judd(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """AUC-Judd as in the MIT benchmark's AUC_Judd.m (without its random jitter).

    Thresholds are the saliency values at the fixations (descending); at the k-th, the true positive
    rate is k / Nfix and the false positive rate (pixels above the threshold that are not fixations)
    / (Npix - Nfix); the area is the trapezoid rule from (0, 0) to (1, 1). Tied fixation values form
    one threshold (MIT breaks ties with 1e-7 noise instead, which makes the score random).
    """
    s = (saliency - saliency.min()) / np.ptp(saliency) if np.ptp(saliency) > 0 else saliency * 0
    fix_values = s[fixations]
    n_fix, n_pix = fix_values.size, s.size
    if n_fix == 0 or n_fix == n_pix:
        return float("nan")
    thresholds = np.unique(fix_values)[::-1]
    sorted_all = np.sort(s.ravel())
    above_all = n_pix - np.searchsorted(sorted_all, thresholds, side="left")
    sorted_fix = np.sort(fix_values)
    above_fix = n_fix - np.searchsorted(sorted_fix, thresholds, side="left")
    tp = np.concatenate([[0.0], above_fix / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above_all - above_fix) / (n_pix - n_fix), [1.0]])
    return float(np.trapezoid(tp, fp))


def saliency_metrics(
    saliency: np.ndarray, gaze: np.ndarray, fixation_mask: np.ndarray | None = None
) -> dict[str, float]:
    """Agreement of a saliency map with a gaze map (MIT / Tuebingen saliency-benchmark definitions).

    Args:
        saliency: (H, W) non-negative model map (generator or decoder output).
        gaze: (H, W) non-negative gaze density (the static eye-gaze heatmap).
        fixation_mask: (H, W) bool fixated pixels for NSS and AUC-Judd; ``None`` uses
            :func:`default_fixation_mask` (top decile of the gaze density).

    Returns:
        ``cc``: Pearson correlation of the two maps (``nan`` if either is constant).
        ``kl``: KL(gaze || saliency) with both normalised to sum 1,
        ``sum g * log(eps + g / (s + eps))`` (``nan`` if either sums to 0); lower is better.
        ``nss``: mean of the z-scored saliency over the fixated pixels (``nan`` if constant or no
        fixations). ``auc_judd``: see :func:`_auc_judd` (``nan`` if no fixations or all pixels).

    Raises:
        ValueError: shapes differ, a map is not 2-D, has non-finite or negative values.
    """
    saliency = _check_map("saliency", saliency)
    gaze = _check_map("gaze", gaze, saliency.shape)
    for name, value in (("saliency", saliency), ("gaze", gaze)):
        if value.min() < 0:
            raise ValueError(f"{name} must be non-negative (min {value.min():.3g})")
    if fixation_mask is None:
        fixations = default_fixation_mask(gaze)
    else:
        fixations = np.asarray(fixation_mask, dtype=bool)
        if fixations.shape != saliency.shape:
            raise ValueError(
                f"fixation_mask has shape {fixations.shape}, expected {saliency.shape}"
            )

    zs, zg = _zscore(saliency), _zscore(gaze)
    cc = float("nan") if zs is None or zg is None else float((zs * zg).mean())

    if saliency.sum() == 0 or gaze.sum() == 0:
        kl = float("nan")
    else:
        p_s, p_g = saliency / saliency.sum(), gaze / gaze.sum()
        kl = float((p_g * np.log(KL_EPS + p_g / (p_s + KL_EPS))).sum())

    nss = float("nan") if zs is None or not fixations.any() else float(zs[fixations].mean())
    return {"cc": cc, "kl": kl, "nss": nss, "auc_judd": _auc_judd(saliency, fixations)}
