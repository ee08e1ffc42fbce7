"""The single-trial fit loop: determinism, exact resume, best-by-validation, outputs, divergence."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from tests.tiny import CPU1, egd_task, tiny_config
from trainables.checkpoint import CheckpointError
from trainables.data.toy import make_toy_cached
from trainables.fit import Diverged, EpochEnd, Finished, fit, train
from trainables.generators import probe_generators
from trainables.model_sets import get_arm, list_arms
from trainables.record import VAL_AUC_UNDEFINED

CLASSES, AUC_KEYS = egd_task().classes, egd_task().auc_keys
QUIET = lambda *_: None


def _val_history(res):
    return [(h["epoch"], h["train/loss"], h["val/auc_mean"]) for h in res.history]


def _events(cfg, data, out, keep=None, **kw):
    """Every event of ``train``; with ``keep``, each checkpoint copied to ``keep/c<epoch>``."""
    events = []
    for event in train(cfg, data, out, placement=CPU1, log=QUIET, **kw):
        if keep is not None and isinstance(event, EpochEnd):
            shutil.copytree(event.checkpoint, keep / f"c{event.epoch}")
        events.append(event)
    return events


def test_two_runs_give_identical_metrics(tiny_data, tmp_path):
    cfg = tiny_config(arm="set3-gbp", epochs=2)
    a = fit(cfg, tiny_data, tmp_path / "a", placement=CPU1, log=QUIET)
    b = fit(cfg, tiny_data, tmp_path / "b", placement=CPU1, log=QUIET)
    assert a.status == b.status == "ok"
    assert _val_history(a) == _val_history(b)
    assert a.test == b.test


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
def test_resume_continues_exactly_where_it_stopped(tiny_data, tmp_path, scheduler):
    cfg = tiny_config(arm="unet", epochs=3, scheduler=scheduler)
    full = _events(cfg, tiny_data, tmp_path / "full", keep=tmp_path)
    assert [type(e) for e in full] == [EpochEnd, EpochEnd, Finished]
    resumed = _events(cfg, tiny_data, tmp_path / "resumed", resume_from=(tmp_path / "c1", "c1"))
    assert [e.epoch for e in resumed] == [2, 3]  # epoch 1 from the checkpoint, 2-3 recomputed
    assert [e.metrics["val/auc_mean"] for e in resumed] == [e.metrics["val/auc_mean"] for e in full[1:]]  # fmt: skip
    assert [e.metrics["train/loss"] for e in resumed] == [e.metrics["train/loss"] for e in full[1:]]
    assert resumed[-1].final == full[-1].final
    # Every checkpoint is plain tensors and containers: it loads without unpickling code.
    state = torch.load(tmp_path / "c3" / "state.pt", weights_only=True)
    assert state["epoch"] == 3


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tiny_data, tmp_path):
    ckpt = tmp_path / "planted"
    ckpt.mkdir()
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 1, "model": _Payload(marker)}, ckpt / "state.pt")
    # The error names the checkpoint by where it lies in storage, not by a local copy of it.
    stored = "s3://bucket/study/search/trial_1/checkpoint_000001"
    with pytest.raises(CheckpointError, match=r"s3://bucket/.*checkpoint_000001/state\.pt.*(not plain|refus)"):  # fmt: skip
        _events(tiny_config(arm="unet", epochs=2), tiny_data, tmp_path / "out", resume_from=(ckpt, stored))  # fmt: skip
    assert not marker.exists()


def test_outputs_best_epoch_and_auc_match_sklearn(tiny_data, tmp_path):
    cfg = tiny_config(arm="set3-deconv", epochs=3, panels=3)
    events = _events(cfg, tiny_data, tmp_path)
    assert [e.epoch for e in events] == [1, 2, 3] and isinstance(events[-1], Finished)
    assert not any(k.startswith("test/") for e in events for k in e.metrics)  # test: once, final
    res = fit(cfg, tiny_data, tmp_path, placement=CPU1, log=QUIET)
    assert res.test == events[-1].final
    vals = [h["val/auc_mean"] for h in res.history]
    assert res.best_epoch == int(np.argmax(vals)) + 1  # first maximum wins
    assert res.test["best/val_auc_mean"] == max(vals)

    pred = pd.read_csv(tmp_path / "predictions" / "test.csv")
    test_idx = tiny_data.indices("test")
    assert list(pred.columns) == [
        "key",
        "split",
        "label",
        "label_name",
        "prob_normal",
        "prob_chf",
        "prob_pneumonia",
    ]
    assert sorted(pred["key"]) == sorted(tiny_data.keys[i] for i in test_idx)
    assert list(pred["key"]) == sorted(pred["key"])
    probs = pred[["prob_normal", "prob_chf", "prob_pneumonia"]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0)
    for c, name in enumerate(CLASSES):
        expected = roc_auc_score(pred["label"] == c, probs[:, c])
        assert res.test[f"test/auc_{name.lower()}"] == pytest.approx(expected)
        lo, hi = (
            res.test[f"test/auc_{name.lower()}_ci_low"],
            res.test[f"test/auc_{name.lower()}_ci_high"],
        )
        assert lo <= hi

    exp = pd.read_csv(tmp_path / "explain" / "test.csv")
    own = exp[exp["map"] != "probe"]
    assert set(own["map"]) == {"generator", "decoder"} and set(own["generator"]) == {"deconv"}
    assert len(own) == 2 * len(test_idx)
    # Every generator's map of every model ("probe"), to compare arms map for map.
    probe = exp[exp["map"] == "probe"]
    probes = probe_generators()
    assert set(probe["generator"]) == set(probes) and len(probe) == len(probes) * len(test_idx)
    assert math.isfinite(res.test["test/explain/generator_cc"])
    own_mean = own[own["map"] == "generator"]["cc"].mean()
    assert res.test["test/explain/probe_deconv_cc"] == pytest.approx(own_mean)  # the same map

    maps = np.load(tmp_path / "heatmaps" / "maps.npz")
    assert len(maps["keys"]) == 3 and sorted(maps["labels"]) == [0, 1, 2]  # one panel per class
    np.testing.assert_array_equal(maps["generator"], maps["deconv"])  # the arm's own map
    for name in ("image", "gaze", "gbp", "deconv", "gradcam", "decoder", "generator"):
        assert maps[name].shape == (3, 32, 32)
        assert np.nanmin(maps[name]) >= 0 and np.nanmax(maps[name]) <= 1 + 1e-6
    assert sorted(p.stem for p in (tmp_path / "heatmaps").glob("*.png")) == sorted(maps["keys"])
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)  # plain weights
    assert state["config"]["arm"] == "set3-deconv"


# no-seg and the set 1 arms (the first three of the registry without a decoder): their decoder
# stays at its random init, so a map of it is noise (issue 10, item 12).
@pytest.mark.parametrize("arm", [a for a in list_arms() if not get_arm(a).uses_decoder][:3])
def test_an_arm_that_trains_no_decoder_reports_no_decoder_map(tiny_data, tmp_path, arm):
    res = fit(tiny_config(arm=arm, epochs=1), tiny_data, tmp_path, placement=CPU1, log=QUIET)
    exp = pd.read_csv(tmp_path / "explain" / "test.csv")
    assert set(exp["map"]) == {"generator", "probe"}
    assert not any(k.startswith("test/explain/decoder") for k in res.test)
    assert np.isnan(np.load(tmp_path / "heatmaps" / "maps.npz")["decoder"]).all()


def _val_with_classes(data, classes):
    """``data`` with its validation labels drawn from ``classes`` only (the images unchanged)."""
    labels = data.labels.copy()
    val = data.indices("val")
    labels[val] = np.resize(classes, len(val))
    return dataclasses.replace(data, labels=labels)


def test_an_undefined_validation_auc_is_missing_not_half(tiny_data, tmp_path, caplog):
    data = _val_with_classes(tiny_data, [1])  # one class: no validation AUC at all
    with caplog.at_level(logging.WARNING, logger="trainables.fit"):
        events = _events(tiny_config(arm="unet", epochs=2), data, tmp_path)
    assert len(events) == 2 and isinstance(events[-1], Finished)
    for e in events:
        assert all(math.isnan(e.metrics[f"val/{k}"]) for k in AUC_KEYS)  # not 0.5
        assert e.metrics[VAL_AUC_UNDEFINED] == 3
    # No epoch can be the best by an undefined metric: no selection score, no best epoch; the
    # test split (intact) is still evaluated, with the last epoch's weights.
    final = events[-1].final
    assert math.isnan(final["best/val_auc_mean"]) and math.isnan(final["best/epoch"])
    assert math.isfinite(final["test/auc_mean"])
    assert "undefined" in caplog.text and "validation" in caplog.text


def test_a_class_missing_from_validation_leaves_only_its_auc_undefined(tiny_data, tmp_path):
    data = _val_with_classes(tiny_data, [0, 2])
    res = fit(tiny_config(arm="unet", epochs=2), data, tmp_path, placement=CPU1, log=QUIET)
    for h in res.history:
        assert math.isnan(h["val/auc_chf"]) and h[VAL_AUC_UNDEFINED] == 1
        assert h["val/auc_mean"] == pytest.approx(
            (h["val/auc_normal"] + h["val/auc_pneumonia"]) / 2
        )
    vals = [h["val/auc_mean"] for h in res.history]
    assert res.best_epoch == int(np.argmax(vals)) + 1 and res.best_val_auc_mean == max(vals)


def test_a_diverging_run_ends_with_one_diverged_event_and_no_score(tiny_data, tmp_path):
    cfg = tiny_config(arm="unet", epochs=3, lr=1e12, grad_clip_value=None, scheduler="none")
    events = _events(cfg, tiny_data, tmp_path)
    assert isinstance(events[-1], Diverged) and "non-finite" in events[-1].message
    assert all(isinstance(e, EpochEnd) for e in events[:-1])  # nothing follows the divergence
    res = fit(cfg, tiny_data, tmp_path / "again", placement=CPU1, log=QUIET)
    assert res.status == "diverged" and "non-finite" in res.message
    assert math.isnan(res.best_val_auc_mean) or res.best_epoch >= 1  # no made-up 0.0 score


def test_data_the_unet_cannot_halve_is_a_clear_error(tmp_path):
    # The trial trains at its data's size (one home: DataConfig); 36 px is not a multiple of the
    # stride 8 of a three-stage U-Net.
    with pytest.raises(
        ValueError, match="36 px, but a U-Net with 3 decoder stages needs a multiple of 8"
    ):
        fit(tiny_config(), make_toy_cached(n=24, size=36), tmp_path, placement=CPU1, log=QUIET)
