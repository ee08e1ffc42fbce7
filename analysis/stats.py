"""Paired comparisons of two arms' test predictions: bootstrap and DeLong (pure functions).

The paper bootstrapped 55-60 test samples 30 times; here every comparison resamples the whole test
set >= 1,000 times with the SAME image indices for both arms (the pairing is what makes the
difference's interval narrow when two models err on the same images), and per-class AUCs are also
compared with DeLong's test for correlated ROC curves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from trainables.metrics import (
    bootstrap_indices,
    per_class_auc,
    percentile_summary,
    resampled_aucs,
)
from trainables.record.files import labels_and_probs
from trainables.task import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Estimate:
    """A bootstrap summary: median and percentile interval."""

    median: float
    low: float
    high: float


@dataclass(frozen=True)
class ArmBootstrap:
    """One arm's AUCs on the full test set and over the shared bootstrap resamples.

    ``samples`` is (resamples, len(task.auc_keys)); row i of every arm built from the same
    ``indices`` is the same resample, which is what :func:`paired_difference` relies on.
    """

    point: dict[str, float]
    estimates: dict[str, Estimate]
    samples: np.ndarray
    skipped: int


@dataclass(frozen=True)
class Difference:
    """Arm minus baseline for one AUC key."""

    estimate: Estimate
    p_value: float


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated AUCs on the same images."""

    auc_a: float
    auc_b: float
    z: float
    p_value: float


def align_arms(
    predictions: Mapping[str, pd.DataFrame], task: Task
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Pair arms on image key.

    Args:
        predictions: arm -> ``predictions/test.csv`` frame of ``task`` (key, labels, probs).
        task: the study's classes.

    Returns:
        ``(keys, labels, arm -> probs (N, K))`` in sorted key order; labels are class ids (N,)
        or (N, K) 0/1 (``labels_and_probs``).

    Raises:
        ValueError: arms differ in their test keys (arms of one study share a split) or in a label.
    """
    if not predictions:
        raise ValueError("no arms to align")
    arms = list(predictions)
    ref = predictions[arms[0]].sort_values("key").reset_index(drop=True)
    ref_labels, _ = labels_and_probs(ref, task)
    probs: dict[str, np.ndarray] = {}
    for arm in arms:
        frame = predictions[arm].sort_values("key").reset_index(drop=True)
        differ = len(set(frame["key"]) ^ set(ref["key"]))
        if differ:
            raise ValueError(
                f"test keys of {arm!r} and {arms[0]!r} differ in {differ} images "
                f"({len(frame)} vs {len(ref)} rows); arms of one study must share the test split"
            )
        labels, probs[arm] = labels_and_probs(frame, task)
        bad = labels != ref_labels
        if bad.any():
            rows = int(bad.reshape(len(labels), -1).any(1).sum())
            raise ValueError(f"labels of {arm!r} and {arms[0]!r} differ on {rows} images")
    return ref["key"].to_numpy(dtype=str), ref_labels, probs


def arm_bootstrap(
    labels: np.ndarray, probs: np.ndarray, indices: np.ndarray, task: Task, alpha: float = 0.05
) -> ArmBootstrap:
    """AUC point values and percentile intervals of one arm over the given resamples."""
    aucs, valid = resampled_aucs(labels, probs, indices, task)
    kept = aucs[valid]
    return ArmBootstrap(
        point=per_class_auc(labels, probs, task),
        estimates={
            k: Estimate(*percentile_summary(kept[:, j], alpha)) for j, k in enumerate(task.auc_keys)
        },
        samples=aucs,
        skipped=int((~valid).sum()),
    )


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of H0: difference = 0, from the resampled differences.

    ``2 * min(#{d <= 0}, #{d >= 0})``, with the (count + 1) / (B + 1) correction so a difference
    never seen to cross zero in B resamples gives p = 2 / (B + 1), not 0.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (tail + 1) / (d.size + 1)))


def paired_difference(
    arm: ArmBootstrap, baseline: ArmBootstrap, alpha: float = 0.05
) -> dict[str, Difference]:
    """Arm minus baseline per AUC key over the shared resamples (both from one ``indices``)."""
    if arm.samples.shape != baseline.samples.shape:
        raise ValueError("arms were bootstrapped over different resamples")
    diff = arm.samples - baseline.samples
    return {
        k: Difference(
            Estimate(*percentile_summary(diff[:, j], alpha)), bootstrap_p_value(diff[:, j])
        )
        for j, k in enumerate(arm.point)  # the task's auc_keys, in order
    }


def paired_bootstrap(
    labels: np.ndarray,
    probs_arm: np.ndarray,
    probs_baseline: np.ndarray,
    task: Task,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[ArmBootstrap, ArmBootstrap, dict[str, Difference]]:
    """Bootstrap both arms over the same seeded resamples of the test images and compare them
    (95% intervals).

    Returns:
        ``(arm, baseline, arm - baseline per AUC key)``.
    """
    indices = bootstrap_indices(len(labels), resamples=resamples, seed=seed)
    a = arm_bootstrap(labels, probs_arm, indices, task)
    b = arm_bootstrap(labels, probs_baseline, indices, task)
    return a, b, paired_difference(a, b)


def delong_test(positive: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongResult:
    """DeLong's test for two paired ROC AUCs, by the fast mid-rank algorithm of Sun & Xu (2014).

    DeLong, DeLong & Clarke-Pearson (1988): each AUC is a Mann-Whitney statistic; its structural
    components V10 (per positive) and V01 (per negative) give the covariance of the two AUCs, and
    ``z = (A - B) / sqrt(var(A) + var(B) - 2 cov(A, B))``. Sun & Xu get the components from
    mid-ranks in O(N log N) instead of the O(m n) pair loop.

    Args:
        positive: (N,) bool, the one-vs-rest labels.
        scores_a, scores_b: (N,) scores of the two models on the same images.

    Returns:
        AUCs, z and the two-sided normal p-value; p = 1 when both AUCs and their variance vanish
        identically (e.g. two perfect models), nan when only the variance does.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)])
    if scores.shape[1] != positive.shape[0]:
        raise ValueError(f"scores {scores.shape[1:]} and labels {positive.shape} differ in length")
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs >= 2 positives and negatives, got {m} and {n}")
    pos, neg = scores[:, positive], scores[:, ~positive]
    tx, ty = rankdata(pos, axis=1), rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives it beats
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives that beat it
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var <= 1e-15:
        p = 1.0 if abs(diff) < 1e-15 else float("nan")
        return DeLongResult(float(aucs[0]), float(aucs[1]), float("nan"), p)
    z = diff / np.sqrt(var)
    return DeLongResult(float(aucs[0]), float(aucs[1]), float(z), float(2 * norm.sf(abs(z))))


def delong_per_class(
    labels: np.ndarray, probs_arm: np.ndarray, probs_baseline: np.ndarray, task: Task
) -> dict[str, DeLongResult | None]:
    """DeLong's test per class (one-vs-rest, or per finding of a multi-label task); None for a
    class with < 2 positives or negatives."""
    hot = task.multi_hot(labels).astype(bool)
    out: dict[str, DeLongResult | None] = {}
    for c, key in enumerate(task.auc_keys[:-1]):
        positive = hot[:, c]
        few = min(positive.sum(), (~positive).sum()) < 2
        out[key] = None if few else delong_test(positive, probs_arm[:, c], probs_baseline[:, c])
    skipped = [k for k, v in out.items() if v is None]
    if skipped:  # one line, however many findings a task has
        log.warning("DeLong skipped for %d of %d classes (< 2 positives or negatives in the test set): %s", len(skipped), task.n, ", ".join(skipped))  # fmt: skip
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values, in input order.

    The k-th smallest of m p-values becomes ``max_{j <= k} min(1, (m - j + 1) p_(j))``; it
    controls the family-wise error rate at no assumption about how the tests depend on each
    other. A nan (a test that could not be made) stays nan and is not counted in m.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (finite.size - rank) * float(p[i])))
        out[i] = running
    return out


def seed_draws(n_seeds: int, *, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_seeds) seed indices drawn with replacement, from a stream of its own (the
    image resamples of ``bootstrap_indices`` stay the same); all zeros for one seed."""
    if n_seeds == 1:
        return np.zeros((resamples, 1), dtype=np.int64)
    rng = np.random.default_rng([seed, _SEED_STREAM])
    return rng.integers(0, n_seeds, size=(resamples, n_seeds))


_SEED_STREAM = 1  # a second stream of the study's bootstrap seed: the seeds' draws


def seeded_difference(
    labels: np.ndarray,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    indices: np.ndarray,
    draws: np.ndarray,
    task: Task,
    alpha: float = 0.05,
) -> tuple[dict[str, float], dict[str, Difference]]:
    """Arm minus baseline per AUC key, over test images and seeds.

    Args:
        labels: test labels (class ids, or (N, K) 0/1).
        pairs: per seed, ``(arm probs, baseline probs)`` of the runs with that seed.
        indices: (B, N) image resamples (``bootstrap_indices``), the same for every seed.
        draws: (B, S) seed indices per resample (``seed_draws``).

    Returns:
        ``(point, difference)``: the whole-test-set difference averaged over the seeds, and per
        key the percentile interval and two-sided p of the resampled difference (each resample:
        its images, and the mean over its drawn seeds). One seed gives exactly
        :func:`paired_difference` over the same ``indices``.
    """
    per_seed, points = [], []
    for arm, base in pairs:
        a, _ = resampled_aucs(labels, arm, indices, task)
        b, _ = resampled_aucs(labels, base, indices, task)
        per_seed.append(a - b)
        full_a, full_b = per_class_auc(labels, arm, task), per_class_auc(labels, base, task)
        points.append([full_a[k] - full_b[k] for k in task.auc_keys])
    diffs = np.stack(per_seed)  # (S, B, K)
    rows = np.arange(indices.shape[0])[:, None]
    resampled = diffs[draws, rows, :].mean(axis=1)  # (B, K)
    point = dict(zip(task.auc_keys, np.mean(points, axis=0).tolist(), strict=True))
    out = {
        k: Difference(
            Estimate(*percentile_summary(resampled[:, j], alpha)),
            bootstrap_p_value(resampled[:, j]),
        )
        for j, k in enumerate(task.auc_keys)
    }
    return point, out
