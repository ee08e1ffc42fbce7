"""Metric functions against independent oracles (sklearn, scipy) and hand-worked cases."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from tests.tiny import egd_task
from trainables.metrics import (
    bootstrap_auc_ci,
    default_fixation_mask,
    per_class_auc,
    rank_auc,
    resampled_aucs,
    saliency_metrics,
)
from trainables.task import Task

EGD = egd_task()
AUC_KEYS = EGD.auc_keys
MULTI = Task(classes=("effusion", "edema", "nodule"), exclusive=False)


def _predictions(n: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    logits = rng.normal(size=(n, 3)) + signal * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_per_class_auc_matches_sklearn():
    labels, probs = _predictions(90, seed=1)
    got = per_class_auc(labels, probs, EGD)
    want = [roc_auc_score(labels == c, probs[:, c]) for c in range(3)]
    assert [got[k] for k in AUC_KEYS[:3]] == pytest.approx(want, abs=1e-12)
    assert got["auc_mean"] == pytest.approx(np.mean(want), abs=1e-12)
    ovr = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert got["auc_mean"] == pytest.approx(ovr, abs=1e-12)


def test_per_class_auc_missing_class_is_nan_and_left_out_of_mean():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    got = per_class_auc(labels, probs, EGD)
    assert np.isnan(got["auc_pneumonia"])
    assert got["auc_normal"] == 1.0 and got["auc_chf"] == 1.0
    assert got["auc_mean"] == 1.0


def test_per_class_auc_rejects_bad_shapes():
    with pytest.raises(ValueError, match="probs"):
        per_class_auc(np.zeros(3, int), np.zeros((3, 2)), EGD)
    with pytest.raises(ValueError, match="class ids"):
        per_class_auc(np.array([0, 3]), np.zeros((2, 3)), EGD)
    with pytest.raises(ValueError, match="multi-label"):
        per_class_auc(np.array([0, 2]), np.zeros((2, 3)), MULTI)
    with pytest.raises(ValueError, match="multi-label"):
        per_class_auc(np.array([[0, 2, 1], [1, 0, 0]]), np.zeros((2, 3)), MULTI)


def test_multi_label_auc_scores_each_finding_on_its_own_column():
    """An image may carry several findings: each column is its own binary problem."""
    rng = np.random.default_rng(4)
    labels = (rng.random((120, 3)) < [0.3, 0.5, 0.2]).astype(int)
    probs = np.clip(labels * 0.6 + rng.random((120, 3)) * 0.8, 0, 1)
    got = per_class_auc(labels, probs, MULTI)
    want = [roc_auc_score(labels[:, c], probs[:, c]) for c in range(3)]
    assert [got[k] for k in MULTI.auc_keys[:3]] == pytest.approx(want, abs=1e-12)
    assert got["auc_mean"] == pytest.approx(np.mean(want), abs=1e-12)
    # rows sum to anything: a multi-label probability is not a softmax
    assert not np.allclose(probs.sum(1), 1)


def test_multi_label_finding_on_every_image_has_no_auc():
    labels = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    probs = np.array([[0.9, 0.2, 0.8], [0.1, 0.7, 0.3], [0.5, 0.1, 0.2], [0.4, 0.9, 0.9]])
    got = per_class_auc(labels, probs, MULTI)
    assert np.isnan(got[MULTI.auc_keys[0]])  # positive everywhere: no negatives to rank
    assert got[MULTI.auc_keys[1]] == 1.0 and got[MULTI.auc_keys[2]] == 1.0
    assert got["auc_mean"] == 1.0


def test_multi_label_bootstrap_agrees_with_per_column_percentiles():
    rng = np.random.default_rng(9)
    labels = (rng.random((80, 3)) < 0.4).astype(int)
    probs = labels * 0.5 + rng.random((80, 3))
    ci = bootstrap_auc_ci(labels, probs, MULTI, resamples=400, seed=1)
    idx = np.random.default_rng(1).integers(0, 80, size=(400, 80))
    aucs, valid = resampled_aucs(labels, probs, idx, MULTI)
    for c, key in enumerate(MULTI.auc_keys[:3]):
        kept = aucs[valid, c]
        median, low, high = ci[key]
        assert low <= median <= high
        assert kept.min() <= low and high <= kept.max()
        assert median == pytest.approx(per_class_auc(labels, probs, MULTI)[key], abs=0.03)


def test_rank_auc_with_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    positive = rng.random((5, 40)) < 0.4
    scores = rng.integers(0, 4, size=(5, 40)).astype(float)  # many ties
    want = [roc_auc_score(p, s) for p, s in zip(positive, scores)]
    np.testing.assert_allclose(rank_auc(positive, scores), want, atol=1e-12)


def test_resampled_aucs_flags_resamples_lacking_a_class():
    labels, probs = _predictions(6, seed=0)
    indices = np.array([[0, 1, 2, 3, 4, 5], [0, 0, 0, 3, 3, 3]])  # second row: only class 0
    aucs, valid = resampled_aucs(labels, probs, indices, EGD)
    assert valid.tolist() == [True, False]
    np.testing.assert_allclose(aucs[0], [per_class_auc(labels, probs, EGD)[k] for k in AUC_KEYS])
    assert np.isnan(aucs[1]).all()


def _pairwise_auc(positive: np.ndarray, scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Brute-force O(n^2) AUC over all positive/negative pairs (ties one half): an oracle that
    shares no code with the rank formula, vectorised so scipy's bootstrap runs in seconds."""
    positive = np.moveaxis(positive, axis, -1).astype(bool)
    scores = np.moveaxis(scores, axis, -1)
    diff = scores[..., :, None] - scores[..., None, :]
    pairs = positive[..., :, None] & ~positive[..., None, :]
    wins = np.where(pairs, (diff > 0) + 0.5 * (diff == 0), 0.0).sum(axis=(-2, -1))
    return wins / pairs.sum(axis=(-2, -1))


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    labels, probs = _predictions(150, seed=3, signal=1.2)
    ours = bootstrap_auc_ci(labels, probs, EGD, resamples=2000, seed=0)
    for c, key in enumerate(AUC_KEYS[:3]):
        oracle = _pairwise_auc(labels == c, probs[:, c])
        assert oracle == pytest.approx(roc_auc_score(labels == c, probs[:, c]), abs=1e-12)
        ref = stats.bootstrap(
            (labels == c, probs[:, c]),
            _pairwise_auc,
            paired=True,
            vectorized=True,
            n_resamples=2000,
            batch=100,
            method="percentile",
            rng=np.random.default_rng(1),
        ).confidence_interval
        median, low, high = ours[key]
        # Two independent Monte Carlo runs of 2,000 resamples: percentiles agree to ~0.01.
        assert low == pytest.approx(ref.low, abs=0.015)
        assert high == pytest.approx(ref.high, abs=0.015)
        assert low < median < high
        assert median == pytest.approx(per_class_auc(labels, probs, EGD)[key], abs=0.01)


def test_bootstrap_is_seeded_and_counts_skipped_resamples(caplog):
    labels, probs = _predictions(7, seed=2)
    with caplog.at_level(logging.WARNING, logger="trainables.metrics"):
        first = bootstrap_auc_ci(labels, probs, EGD, resamples=300, seed=5)
    assert "skipped" in caplog.text and "of 300 resamples" in caplog.text
    assert first == bootstrap_auc_ci(labels, probs, EGD, resamples=300, seed=5)
    assert first != bootstrap_auc_ci(labels, probs, EGD, resamples=300, seed=6)
    assert all(np.isfinite(v).all() for v in first.values())


def test_saliency_cc_and_kl_against_scipy():
    rng = np.random.default_rng(0)
    gaze = rng.random((16, 16)) + 0.1
    saliency = 0.5 * gaze + rng.random((16, 16))
    got = saliency_metrics(saliency, gaze)
    assert got["cc"] == pytest.approx(stats.pearsonr(saliency.ravel(), gaze.ravel())[0], abs=1e-12)
    # No zeros, so the eps regulariser changes the KL by ~1e-15 only.
    want_kl = stats.entropy(gaze.ravel(), saliency.ravel())
    assert got["kl"] == pytest.approx(want_kl, abs=1e-9)
    same = saliency_metrics(gaze, gaze)
    assert same["cc"] == pytest.approx(1.0) and same["kl"] == pytest.approx(0.0, abs=1e-12)


def test_saliency_nss_and_auc_judd_hand_worked():
    saliency = np.array([[0.9, 0.1, 0.5], [0.3, 0.7, 0.2]])
    gaze = np.ones_like(saliency)
    fixations = np.array([[True, False, False], [True, False, False]])
    got = saliency_metrics(saliency, gaze, fixations)
    z = (saliency - saliency.mean()) / saliency.std()
    assert got["nss"] == pytest.approx((z[0, 0] + z[1, 0]) / 2)
    # Thresholds 0.9 then 0.3: ROC points (0,0), (0,.5), (.5,1), (1,1) -> area 0.875; the plain
    # ROC AUC (sklearn) is 6/8 = 0.75, AUC-Judd interpolates between fixation thresholds.
    assert got["auc_judd"] == pytest.approx(0.875)
    assert roc_auc_score(fixations.ravel(), saliency.ravel()) == pytest.approx(0.75)
    assert np.isnan(got["cc"])  # constant gaze


def test_auc_judd_matches_literal_mit_loop():
    rng = np.random.default_rng(4)
    saliency = rng.random((12, 12))
    fixations = rng.random((12, 12)) < 0.15
    s = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    thresholds = np.sort(s[fixations])[::-1]
    n_fix, n_pix = fixations.sum(), s.size
    tp, fp = [0.0], [0.0]
    for i, t in enumerate(thresholds, start=1):  # transcription of AUC_Judd.m's loop
        tp.append(i / n_fix)
        fp.append(((s >= t).sum() - i) / (n_pix - n_fix))
    tp.append(1.0)
    fp.append(1.0)
    want = np.trapezoid(tp, fp)
    assert saliency_metrics(saliency, np.ones_like(s), fixations)["auc_judd"] == pytest.approx(want)


def test_default_fixation_mask_is_top_decile_of_positive_gaze():
    gaze = np.zeros((10, 10))
    gaze[:2, :5] = np.arange(10).reshape(2, 5) + 1.0
    mask = default_fixation_mask(gaze)
    assert mask.sum() == 10 and mask[:2, :5].all()
    sparse = np.zeros((10, 10))
    sparse[0, 0] = 1.0  # 90th percentile is 0: zeros must not count as fixated
    assert default_fixation_mask(sparse).sum() == 1


def test_saliency_metrics_reject_bad_maps():
    with pytest.raises(ValueError, match="shape"):
        saliency_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        saliency_metrics(np.full((4, 4), np.nan), np.ones((4, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        saliency_metrics(-np.ones((4, 4)), np.ones((4, 4)))
