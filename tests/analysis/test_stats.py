"""Paired bootstrap and DeLong against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from analysis.stats import (
    align_arms,
    bootstrap_p_value,
    delong_per_class,
    delong_test,
    paired_bootstrap,
)
from tests.tiny import egd_task

EGD = egd_task()
PROBS = EGD.prob_columns


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _delong_brute_force(positive, a, b):
    """DeLong (1988) from its definition: O(m n) structural components V10, V01 per model."""
    out = []
    for s in (a, b):
        x, y = s[positive], s[~positive]
        v10 = np.array([np.mean([_psi(xi, yj) for yj in y]) for xi in x])
        v01 = np.array([np.mean([_psi(xi, yj) for xi in x]) for yj in y])
        out.append((v10, v01))
    m, n = positive.sum(), (~positive).sum()
    auc = [v10.mean() for v10, _ in out]
    s10 = np.cov(np.stack([o[0] for o in out]))
    s01 = np.cov(np.stack([o[1] for o in out]))
    var = (s10 / m + s01 / n) @ np.array([1, -1]) @ np.array([1, -1])
    z = (auc[0] - auc[1]) / np.sqrt(var)
    return auc, z


def test_delong_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    positive = rng.random(40) < 0.4
    a = np.round(rng.random(40) + 0.6 * positive, 1)  # rounding makes ties
    b = np.round(rng.random(40) + 0.2 * positive, 1)
    got = delong_test(positive, a, b)
    (auc_a, auc_b), z = _delong_brute_force(positive, a, b)
    assert got.auc_a == pytest.approx(auc_a) and got.auc_b == pytest.approx(auc_b)
    assert got.auc_a == pytest.approx(roc_auc_score(positive, a))
    assert got.z == pytest.approx(z)
    assert got.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_delong_hand_worked():
    # Images 0-1 positive, 2-4 negative. A = (3, 4 | 1, 2, 5), B = (2, 5 | 1, 3, 1.5).
    # V10 (share of negatives a positive beats): A (2/3, 2/3), B (2/3, 1) -> AUCs 2/3 and 5/6.
    # V01 (share of positives beating a negative): A (1, 1, 0), B (1, 1/2, 1).
    # S10 (ddof 1): var A 0, var B 1/18, cov 0; S01: var A 1/3, var B 1/12, cov -1/12.
    # var(A - B) = (0 + 1/18 - 0) / 2 + (1/3 + 1/12 + 2/12) / 3 = 1/36 + 7/36 = 2/9.
    # z = (2/3 - 5/6) / sqrt(2/9) = -1 / (2 sqrt 2).
    positive = np.array([1, 1, 0, 0, 0], bool)
    a = np.array([3.0, 4.0, 1.0, 2.0, 5.0])
    b = np.array([2.0, 5.0, 1.0, 3.0, 1.5])
    got = delong_test(positive, a, b)
    assert got.auc_a == pytest.approx(2 / 3) and got.auc_b == pytest.approx(5 / 6)
    assert got.z == pytest.approx(-1 / (2 * np.sqrt(2)))
    assert got.p_value == pytest.approx(2 * stats.norm.cdf(-1 / (2 * np.sqrt(2))))


def test_delong_identical_models_gives_p_one():
    positive = np.array([1, 1, 1, 0, 0, 0], bool)
    s = np.array([0.9, 0.8, 0.3, 0.4, 0.2, 0.1])
    assert delong_test(positive, s, s).p_value == 1.0


def _arms(n=120, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    strong = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[labels]
    weak = rng.normal(size=(n, 3)) + 0.3 * np.eye(3)[labels]
    softmax = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return labels, softmax(strong), softmax(weak)


def test_paired_bootstrap_difference_ci_agrees_with_scipy():
    labels, strong, weak = _arms()
    a, b, diff = paired_bootstrap(labels, strong, weak, EGD, resamples=2000, seed=0)
    assert a.skipped == b.skipped == 0
    assert diff["auc_mean"].p_value == pytest.approx(2 / 2001)  # never crosses zero

    def pairwise_auc(positive, scores):  # O(n^2) over all pairs, ties one half: no ranks
        diff = scores[..., :, None] - scores[..., None, :]
        pairs = positive[..., :, None] & ~positive[..., None, :]
        wins = np.where(pairs, (diff > 0) + 0.5 * (diff == 0), 0.0).sum(axis=(-2, -1))
        return wins / pairs.sum(axis=(-2, -1))

    def mean_auc_diff(idx, axis=-1):  # scipy resamples image indices
        idx = idx.astype(int)
        mean = lambda p: np.mean(
            [pairwise_auc(labels[idx] == c, p[idx, c]) for c in range(3)], axis=0
        )
        return mean(strong) - mean(weak)

    assert mean_auc_diff(np.arange(len(labels))) == pytest.approx(
        np.mean([roc_auc_score(labels == c, strong[:, c]) - roc_auc_score(labels == c, weak[:, c])
                 for c in range(3)])
    )  # fmt: skip
    ref = stats.bootstrap(
        (np.arange(len(labels)),), mean_auc_diff, vectorized=True, batch=50,
        n_resamples=1000, method="percentile", rng=np.random.default_rng(3),
    ).confidence_interval  # fmt: skip
    # Monte Carlo tolerance: independent runs of 2,000 and 1,000 resamples; each percentile's
    # Monte Carlo sd is ~0.004 here (CI ~0.15 wide), so 0.02 is > 4 sd of their difference.
    assert diff["auc_mean"].estimate.low == pytest.approx(ref.low, abs=0.02)
    assert diff["auc_mean"].estimate.high == pytest.approx(ref.high, abs=0.02)


def test_paired_bootstrap_shares_resamples():
    labels, strong, _ = _arms()
    a, b, diff = paired_bootstrap(labels, strong, strong.copy(), EGD, resamples=300, seed=1)
    np.testing.assert_array_equal(a.samples, b.samples)  # same indices -> identical resamples
    assert diff["auc_mean"].estimate.median == 0.0 and diff["auc_mean"].p_value == 1.0


def test_bootstrap_p_value_two_sided():
    assert bootstrap_p_value(np.array([0.1] * 99)) == pytest.approx(2 / 100)
    assert bootstrap_p_value(np.array([-1.0] * 50 + [1.0] * 50)) == 1.0
    assert bootstrap_p_value(np.array([-1.0] * 10 + [1.0] * 89)) == pytest.approx(22 / 100)


def test_delong_per_class_is_per_one_vs_rest_column():
    labels, strong, weak = _arms(60)
    got = delong_per_class(labels, strong, weak, EGD)
    for c, key in enumerate(("auc_normal", "auc_chf", "auc_pneumonia")):
        assert got[key].auc_a == pytest.approx(roc_auc_score(labels == c, strong[:, c]))
        assert got[key].p_value < 0.05


def test_align_arms_pairs_on_key_and_names_mismatch():
    frame = pd.DataFrame(
        {
            "key": ["b", "a", "c"],
            "split": "test",
            "label": [1, 0, 2],
            "label_name": ["CHF", "Normal", "pneumonia"],
        }
        | {p: [0.2, 0.3, 0.5] for p in PROBS}
    )
    keys, labels, probs = align_arms({"x": frame, "y": frame.iloc[::-1]}, EGD)
    assert keys.tolist() == ["a", "b", "c"] and labels.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(probs["x"], probs["y"])
    other = frame.assign(key=["b", "a", "d"])
    with pytest.raises(ValueError, match="differ in 2 images"):
        align_arms({"x": frame, "y": other}, EGD)
    with pytest.raises(ValueError, match="labels .* differ on 1"):
        align_arms({"x": frame, "y": frame.assign(label=[1, 0, 0])}, EGD)
