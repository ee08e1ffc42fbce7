"""Human ceiling and shuffled AUC against brute force and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.agreement import (
    AGREEMENT_KEYS,
    fixation_counts,
    human_ceiling,
    leave_one_reader_out,
    model_vs_readers,
    reader_agreement,
    shuffled_auc,
)
from trainables.data.dicom import letterbox_transform
from trainables.data.reflacx import read_reflacx, target_ellipses
from trainables.data.reflacx_gaze import fixation_pixels, mean_of_readers, reader_distributions
from trainables.data.synthetic.reflacx import write_reflacx_twin
from trainables.localization import boxes_to_grid, ellipse_mask, localization
from trainables.metrics import saliency_metrics
from trainables.per_image import paired_difference


def _brute_auc(saliency, fixated, others) -> float:
    """Every (positive, negative) fixation pair, a pixel repeated once per fixation: 1 if the
    positive scores higher, 1/2 on a tie."""
    pos = np.repeat(saliency.ravel(), np.asarray(fixated, int).ravel())
    neg = np.repeat(saliency.ravel(), np.asarray(others, int).ravel())
    wins = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    return float(np.mean(wins))


def _blob(shape, centre, sigma):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


def test_shuffled_auc_matches_brute_force_with_ties_and_counts():
    rng = np.random.default_rng(0)
    saliency = np.round(rng.random((20, 24)), 1)  # many ties
    fixated = rng.poisson(0.15, (20, 24))  # some pixels fixated twice
    others = rng.poisson(0.5, (20, 24))  # overlapping the positives
    assert fixated.max() > 1 and (fixated * others).any()
    want = _brute_auc(saliency, fixated, others)
    assert shuffled_auc(saliency, fixated, others) == pytest.approx(want, abs=1e-12)
    binary = _brute_auc(saliency, fixated > 0, others > 0)  # AUC_shuffled.m's binary maps
    assert shuffled_auc(saliency, fixated > 0, others > 0) == pytest.approx(binary, abs=1e-12)
    assert np.isnan(shuffled_auc(saliency, fixated, np.zeros_like(others)))


def test_every_negative_is_the_expectation_of_mits_random_splits():
    # AUC_shuffled.m: 100 splits, each a random subset of the negatives as large as the
    # positives; the score is the mean over splits. Its expectation is the AUC on all negatives.
    rng = np.random.default_rng(1)
    saliency = rng.random((30, 30))
    fixated = rng.random((30, 30)) < 0.05
    others = rng.random((30, 30)) < 0.4
    pos, neg = saliency[fixated], saliency[others]
    splits = []
    for _ in range(400):
        sub = rng.permutation(neg)[: min(pos.size, neg.size)]
        splits.append(np.mean((pos[:, None] > sub) + 0.5 * (pos[:, None] == sub)))
    assert shuffled_auc(saliency, fixated, others) == pytest.approx(np.mean(splits), abs=0.01)


def test_a_centre_bias_map_scores_chance_on_sauc_but_not_on_auc_judd():
    rng = np.random.default_rng(2)
    shape = (48, 48)
    centre = _blob(shape, (24, 24), 6)

    def centre_fixations(n):  # every image's readers look at the middle
        return np.clip(np.round(rng.normal(24, 5, (n, 2))), 0, 47).astype(int)

    fixated = fixation_counts(centre_fixations(300), shape)
    others = fixation_counts(centre_fixations(3000), shape)
    got = reader_agreement(centre, centre + 0.0, fixated, others)
    assert got["auc_judd"] > 0.8 and abs(got["sauc"] - 0.5) < 0.04


def test_identical_readers_agree_perfectly():
    shape = (16, 16)
    m = _blob(shape, (5, 9), 3)
    m /= m.sum()
    fix = fixation_counts(np.array([[5, 9], [6, 9]]), shape)
    others = fixation_counts(np.array([[12, 2], [13, 3]]), shape)
    got = leave_one_reader_out([m, m.copy()], [fix, fix], others)
    assert got["cc"] == pytest.approx(1.0) and got["kl"] == pytest.approx(0.0, abs=1e-9)
    assert got["sauc"] == 1.0 and got["auc_judd"] > 0.9
    single = leave_one_reader_out([m], [fix], others)
    assert all(np.isnan(v) for v in single.values())


def test_leave_one_out_is_each_reader_against_the_mean_of_the_others():
    rng = np.random.default_rng(3)
    shape = (12, 14)
    maps = [rng.random(shape) for _ in range(3)]
    fixated = [rng.poisson(0.15, shape) for _ in range(3)]
    others = rng.poisson(0.3, shape)
    want = []
    for r in range(3):
        rest = [maps[k] for k in range(3) if k != r]
        prediction = (rest[0] + rest[1]) / 2
        row = saliency_metrics(prediction, maps[r], fixation_mask=fixated[r] > 0)
        row["sauc"] = _brute_auc(prediction, fixated[r], others)
        want.append(row)
    got = leave_one_reader_out(maps, fixated, others)
    for k in AGREEMENT_KEYS:
        assert got[k] == pytest.approx(np.mean([w[k] for w in want]), rel=1e-9)


def test_ceiling_negatives_come_from_the_other_images_only():
    shape = (10, 10)
    top_left, bottom_right = np.array([[1, 1], [2, 1], [1, 2]]), np.array([[8, 8], [7, 8]])
    maps0 = [_blob(shape, (1, 1), 1.5), _blob(shape, (2, 1), 1.5)]
    maps1 = [_blob(shape, (8, 8), 1.5), _blob(shape, (7, 8), 1.5)]
    got = human_ceiling(
        [maps0, maps1, [_blob(shape, (5, 1), 1.5)]],
        [[top_left, top_left[:2]], [bottom_right, bottom_right], [np.array([[5, 1]])]],
    )
    assert set(got) == set(AGREEMENT_KEYS) and got["cc"].shape == (3,)
    # Each image's readers agree, and its negatives are the other images' fixations only (its
    # own, at the same pixels as the positives, would pull sAUC towards 0.5).
    assert got["sauc"][0] == 1.0 and got["sauc"][1] == 1.0
    assert got["cc"][0] > 0.5 and got["nss"][1] > 1.0
    assert np.isnan(got["cc"][2])  # one reader: no ceiling


def test_model_is_scored_like_the_ceiling():
    shape = (10, 10)
    a, b = _blob(shape, (3, 3), 2), _blob(shape, (6, 7), 2)
    pts = [np.array([[3, 3]]), np.array([[6, 7]])]
    got = model_vs_readers([a, a], [[a], [a, b]], [[pts[0]], pts])
    assert got["cc"][0] == pytest.approx(1.0)
    want = (1.0 + saliency_metrics(a, b)["cc"]) / 2  # mean over the two readers
    assert got["cc"][1] == pytest.approx(want)
    with pytest.raises(ValueError, match="model maps"):
        model_vs_readers([a], [[a], [a, b]], [[pts[0]], pts])
    with pytest.raises(ValueError, match="one grid"):
        human_ceiling([[a], [np.ones((5, 5))]], [[pts[0]], [pts[0]]])


def test_fixation_counts_count_repeats_and_drop_points_off_the_grid():
    counts = fixation_counts(np.array([[0, 0], [0, 0], [3, 4], [-1, 2], [2, 9]]), (4, 5))
    assert counts.sum() == 3 and counts[0, 0] == 2 and counts[3, 4] == 1


def test_on_the_twin_readers_beat_a_centre_prior(tmp_path):
    # End to end: twin -> reader -> per-reader maps at 64 px -> ceiling, model, localization.
    write_reflacx_twin(tmp_path, 16, seed=0, multi_reader_images=8)
    size = 64
    rows, cols = np.mgrid[:size, :size]
    centre = np.exp(-((rows - size / 2) ** 2 + (cols - size / 2) ** 2) / (2 * (size / 6) ** 2))
    maps, points, masks = [], [], []
    for rec in read_reflacx(tmp_path).records:
        t = letterbox_transform(rec.image_size, size)
        fixations = [r.fixations for r in rec.gaze_readings]
        maps.append(reader_distributions(fixations, t, size))
        points.append([fixation_pixels(f, t) for f in fixations])
        masks.append(ellipse_mask(boxes_to_grid(target_ellipses(rec), t), (size, size)))
    ceiling = human_ceiling(maps, points)
    prior = model_vs_readers([centre] * len(maps), maps, points)
    multi = np.isfinite(ceiling["sauc"])
    assert multi.sum() == 8
    assert np.mean(ceiling["sauc"][multi]) > np.mean(prior["sauc"][multi]) + 0.04
    assert abs(np.nanmean(prior["sauc"]) - 0.5) < 0.05  # a centre prior is no better than chance
    assert np.mean(ceiling["cc"][multi]) > np.mean(prior["cc"][multi])
    gaze = localization([mean_of_readers(m) for m in maps], masks)
    diff = paired_difference(gaze["energy"], localization([centre] * len(maps), masks)["energy"])
    assert diff.n > 0 and diff.low > 0  # the readers' gaze sits on what they outlined
