"""Selection signals that never read test labels: what they read, what they see, and the rule."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tests.tiny import CPU1, egd_task, tiny_config
from trainables.blind_selection import (
    GAZE_AGREEMENT,
    MASKED_AUC,
    SELECTION_SCORE,
    Choice,
    choose_configuration,
    combined,
    combined_score,
    gaze_agreement,
    masked_auc,
    validation_signals,
)
from trainables.data.cached import CachedData
from trainables.data.toy import make_toy_cached
from trainables.device_data import DeviceData
from trainables.evaluate import outside_energy_shares, predict
from trainables.fit import fit
from trainables.metrics import per_class_auc
from trainables.model import build_model
from trainables.saliency import generator_map

QUIET = lambda *_: None
SIZE = 32


def _tagged(where: str, n: int = 60, seed: int = 0) -> CachedData:
    """Noise images whose class is written ONLY in a tag, in train and val (the test images carry
    none), all under one central gaze blob: three corner tags (top-left, top-right, bottom-left),
    outside the gaze, for ``where="corner"``; three tags around the centre, inside it, for
    ``"centre"``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    split = np.zeros(n, np.int8)
    split[int(0.6 * n) : int(0.8 * n)] = 1
    split[int(0.8 * n) :] = 2
    images = 0.3 + 0.05 * rng.standard_normal((n, SIZE, SIZE))
    at = {"corner": ((1, 1), (1, 26), (26, 1)), "centre": ((10, 8), (10, 19), (19, 13))}[where]
    for i, label in enumerate(labels):
        if split[i] != 2:
            r, c = at[label]
            images[i, r : r + 5, c : c + 5] = 0.9
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / (2 * 0.15**2))
    gaze = np.repeat((blob / blob.max())[None], n, 0)
    inside = gaze[0] >= 0.01
    for r, c in at:  # where the tags sit relative to the gaze, as the docstring says
        assert inside[r : r + 5, c : c + 5].all() == (where == "centre")
        assert inside[r : r + 5, c : c + 5].any() == (where == "centre")
    return CachedData(
        images=(np.clip(images, 0, 1) * 255).round().astype(np.uint8),
        gaze=gaze.astype(np.float16),
        labels=labels.astype(np.int64),
        keys=[f"img{i:04d}" for i in range(n)],
        patients=[f"p{i:04d}" for i in range(n)],
        split=split,
    )


def _trained(data: CachedData, tmp_path, epochs: int):
    cfg = tiny_config(arm="no-seg", epochs=epochs, panels=0, bootstrap_resamples=20, augment=False)
    fit(cfg, data, tmp_path, placement=CPU1, log=QUIET)
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    model = build_model(cfg.encoder, None, cfg.decoder_channels)
    model.load_state_dict(state["state_dict"])
    return model.eval(), cfg


@pytest.fixture(scope="module")
def tag_models(tmp_path_factory):
    """{"corner" | "centre": (model, cfg, data)}: no-seg trained on each tagged set."""
    out = {}
    for where in ("corner", "centre"):
        data = _tagged(where)
        model, cfg = _trained(data, tmp_path_factory.mktemp(where), epochs=4)
        out[where] = (model, cfg, data)
    return out


@pytest.fixture(scope="module")
def shortcut_model(tag_models):
    return tag_models["corner"]


def _permuted(data: CachedData, split: str, seed: int = 1) -> CachedData:
    labels = data.labels.copy()
    idx = data.indices(split)
    labels[idx] = np.random.default_rng(seed).permutation(labels[idx])
    assert (labels != data.labels).any()
    return dataclasses.replace(data, labels=labels)


def test_a_model_that_reads_a_tag_outside_the_gaze_scores_low_inside_scores_high(tag_models):
    scores = {}
    for where, (model, cfg, data) in tag_models.items():
        dd = DeviceData(data, torch.device("cpu"))
        probs, labels, _ = predict(model, dd, "val", cfg.eval_batch_size)
        plain = per_class_auc(labels, probs, egd_task())["auc_mean"]
        assert plain > 0.9, (where, plain)  # both learned their tag
        scores[where] = {"plain": plain, **validation_signals(model, dd, cfg)}
    corner, centre = scores["corner"], scores["centre"]
    # Masking the outside away takes the corner model's tag (and its AUC), not the centre one's.
    assert corner[MASKED_AUC] < corner["plain"] - 0.2, corner
    assert centre[MASKED_AUC] > centre["plain"] - 0.1, centre
    # The corner model's sensitivity lies further outside the gaze, and the score ranks it last.
    assert corner[GAZE_AGREEMENT] < centre[GAZE_AGREEMENT], scores
    assert corner[SELECTION_SCORE] < centre[SELECTION_SCORE] - 0.2, scores
    model, cfg, data = tag_models["corner"]
    dd = DeviceData(data, torch.device("cpu"))
    assert combined(model, dd, "val", cfg) == corner[SELECTION_SCORE]
    assert masked_auc(model, dd, "val", cfg) == corner[MASKED_AUC]


def test_the_signals_read_validation_only(shortcut_model):
    model, cfg, data = shortcut_model
    before = validation_signals(model, DeviceData(data, torch.device("cpu")), cfg)
    after = validation_signals(model, DeviceData(_permuted(data, "test"), torch.device("cpu")), cfg)
    assert before == after and all(math.isfinite(v) for v in before.values())
    assert set(before) == {MASKED_AUC, GAZE_AGREEMENT, SELECTION_SCORE}
    assert before[SELECTION_SCORE] == combined_score(before[MASKED_AUC], before[GAZE_AGREEMENT])
    # Not vacuous: the masked AUC does read the validation labels (the agreement reads none).
    val = validation_signals(model, DeviceData(_permuted(data, "val"), torch.device("cpu")), cfg)
    assert val[MASKED_AUC] != before[MASKED_AUC]
    assert val[GAZE_AGREEMENT] == before[GAZE_AGREEMENT]


def test_gaze_agreement_is_one_minus_the_mean_outside_share_per_image():
    torch.manual_seed(0)
    cfg = tiny_config(gaze_mask_threshold=0.3)  # the toy's gaze blobs reach most pixels at 0.01
    model = build_model(cfg.encoder, None, cfg.decoder_channels).eval()
    data = make_toy_cached(n=30, size=SIZE)
    dd = DeviceData(data, torch.device("cpu"))
    x, gaze, _ = dd.batch(dd.indices("val"))
    grad = generator_map("logprob-gradient", model, x, 0, create_graph=False)
    energy = grad.double().pow(2).flatten(1)
    outside = (gaze < 0.3).flatten(1).double()
    expected = ((outside * energy).sum(1) / energy.sum(1)).numpy()
    shares = outside_energy_shares(model, dd, "val", 0.3, batch_size=4)  # batching is irrelevant
    np.testing.assert_allclose(shares, expected, rtol=1e-4, atol=1e-6)
    assert gaze_agreement(model, dd, "val", cfg) == pytest.approx(1 - np.mean(expected), rel=1e-6)
    assert 0.0 < shares.min() and shares.max() < 1.0


def test_combined_score_spans_chance_to_the_masked_auc():
    assert combined_score(0.9, 1.0) == pytest.approx(0.9)
    assert combined_score(0.9, 0.0) == pytest.approx(0.5)
    assert combined_score(0.9, 0.5) == pytest.approx(0.7)
    assert combined_score(0.3, 1.0) == pytest.approx(0.3)  # worse than chance stays worse
    assert math.isnan(combined_score(math.nan, 0.5))


def test_the_rule_picks_the_best_and_states_its_ties():
    signals = {
        "b": {SELECTION_SCORE: 0.80, "val/auc_mean": 0.90},
        "a": {SELECTION_SCORE: 0.80, "val/auc_mean": 0.95},
        "c": {SELECTION_SCORE: 0.79, "val/auc_mean": 0.99},
        "d": {SELECTION_SCORE: math.nan, "val/auc_mean": 1.0},
        "e": {"val/auc_mean": 1.0},
    }
    choice = choose_configuration(signals)
    assert choice == Choice("a", 0.80, ("a", "b"), f"max {SELECTION_SCORE}; ties by name")
    # Ties by the tie-break signal, then by name, whatever the order of the mapping.
    assert choose_configuration(signals, tiebreak="val/auc_mean").chosen == "a"
    assert choose_configuration(dict(reversed(signals.items()))).chosen == "a"
    wide = choose_configuration(signals, tiebreak="val/auc_mean", tolerance=0.02)
    assert wide.chosen == "c" and wide.tied == ("a", "b", "c") and "within 0.02" in wide.rule
    assert choose_configuration(signals, key="val/auc_mean").tied == ("d", "e")
    with pytest.raises(ValueError, match="finite"):
        choose_configuration({"d": signals["d"]})
    with pytest.raises(ValueError, match="tolerance"):
        choose_configuration(signals, tolerance=-1)


def test_fit_logs_the_signals_every_epoch_only_when_asked_and_changes_nothing_else(tiny_data, tmp_path):  # fmt: skip
    """``TrialConfig.selection_signals``: off (the default), a trial's record is what it was;
    on, the three signals join each epoch's validation metrics and every other number is the same
    to the bit (they draw from no training RNG and leave the weights alone)."""
    cfg = tiny_config(arm="rrr-share", epochs=2)
    off = fit(cfg, tiny_data, tmp_path / "off", placement=CPU1, log=QUIET)
    on = fit(dataclasses.replace(cfg, selection_signals=True), tiny_data, tmp_path / "on", placement=CPU1, log=QUIET)  # fmt: skip
    assert not cfg.selection_signals
    for a, b in zip(off.history, on.history, strict=True):
        assert not set(a) & {MASKED_AUC, GAZE_AGREEMENT, SELECTION_SCORE}
        assert {MASKED_AUC, GAZE_AGREEMENT, SELECTION_SCORE} <= set(b)
        assert all(0.0 <= b[k] <= 1.0 for k in (MASKED_AUC, GAZE_AGREEMENT, SELECTION_SCORE))
        shared = {k: v for k, v in a.items() if not k.startswith("time/")}
        assert shared == {k: b[k] for k in shared}
    assert off.test == on.test
