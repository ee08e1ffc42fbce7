"""The gaze-mask and cutout baselines: what they hide, where, with which draws, and that only the
training inputs are ever masked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tests.tiny import CPU1, egd_task, tiny_config
from trainables.device_data import DeviceData
from trainables.evaluate import predict
from trainables.fit import fit, train
from trainables.masking import (
    MaskSpec,
    cutout_like_gaze_mask,
    looked_at,
    mask_outside_gaze,
    random_boxes,
)
from trainables.metrics import per_class_auc
from trainables.model import build_model
from trainables.model_sets import get_arm

QUIET = lambda *_: None


def _batch(tiny_data, n=8):
    dd = DeviceData(tiny_data, torch.device("cpu"))
    return dd.batch(dd.indices("train")[:n])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode", ["noise", "blur"])
def test_gaze_mask_leaves_the_gaze_bit_identical_and_changes_the_rest(tiny_data, mode):
    x, gaze, _ = _batch(tiny_data)
    spec = MaskSpec(mode=mode, threshold=0.05)
    out = mask_outside_gaze(x, gaze, spec, _gen())
    inside = gaze >= 0.05
    assert 0.05 < inside.float().mean() < 0.95  # both regions exist in this batch
    assert torch.equal(out[inside], x[inside])
    assert (out[~inside] != x[~inside]).float().mean() > 0.9
    assert out.min() >= 0 and out.max() <= 1
    # Strength blends: 0 leaves the image as it is, 0.5 goes half way to the full replacement.
    assert torch.equal(mask_outside_gaze(x, gaze, MaskSpec(mode, 0.0, 0.0, 0.05), _gen()), x)
    half = mask_outside_gaze(x, gaze, MaskSpec(mode, 0.5, 0.0, 0.05), _gen())
    torch.testing.assert_close(half[~inside], (0.5 * (x + out))[~inside])


def test_noise_hides_the_content_and_blur_keeps_only_low_frequencies():
    # A smooth ramp plus a pixel checkerboard, nowhere looked at: the blur keeps the ramp and
    # removes the checkerboard; the noise keeps neither.
    rows = torch.linspace(0, 1, 32)[:, None].expand(32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 2.0 - 1.0
    x = (0.3 + 0.3 * rows + 0.1 * checker).expand(2, 1, 32, 32)
    nowhere = torch.zeros_like(x)

    def corr(a, b):
        return float(np.corrcoef(a.flatten().numpy(), b.expand_as(a).flatten().numpy())[0, 1])

    blur = mask_outside_gaze(x, nowhere, MaskSpec("blur"), _gen())
    noise = mask_outside_gaze(x, nowhere, MaskSpec("noise"), _gen())
    assert corr(blur, rows) > 0.95 and abs(corr(blur, checker)) < 0.05
    assert abs(corr(noise, rows)) < 0.1 and abs(corr(noise, checker)) < 0.1
    # The noise keeps each image's brightness and contrast.
    assert abs(float(noise.mean() - x.mean())) < 0.02
    assert abs(float(noise.std() - x.std())) < 0.03


def test_dilation_grows_the_region_left_untouched(tiny_data):
    x, gaze, _ = _batch(tiny_data)
    plain, grown = looked_at(gaze, 0.05), looked_at(gaze, 0.05, dilation=0.1)  # 3 px at 32 px
    assert (grown >= plain).all() and grown.sum() > plain.sum()
    # A pixel 3 px (Chebyshev) from the gaze is kept, one 4 px away is not.
    g = torch.zeros(1, 1, 32, 32)
    g[0, 0, 16, 16] = 1.0
    kept = looked_at(g, 0.5, dilation=0.1)[0, 0]
    assert kept[19, 19] and kept[13, 16] and not kept[20, 16] and kept.sum() == 49
    out = mask_outside_gaze(x, gaze, MaskSpec(dilation=0.1, threshold=0.05), _gen())
    assert torch.equal(out[grown], x[grown])


def test_cutout_hides_as_many_pixels_as_gaze_mask_at_places_the_gaze_does_not_choose(tiny_data):
    x, gaze, _ = _batch(tiny_data)
    spec = MaskSpec(threshold=0.05)
    areas = (~looked_at(gaze, 0.05)).flatten(1).sum(1)
    boxes = random_boxes(areas, (32, 32), _gen())
    hidden = boxes.flatten(1).sum(1)
    assert (hidden - areas).abs().max() <= 32  # rounding one side of the box, at most
    assert torch.equal(hidden > 0, areas > 0) and (areas > 100).sum() >= 3
    # Each box is one rectangle.
    for b in boxes[:, 0]:
        rows, cols = b.any(1).nonzero()[:, 0], b.any(0).nonzero()[:, 0]
        assert b.sum() == len(rows) * len(cols)
    # Gaze maps with the same hidden counts in other places (mirrored) give the same boxes.
    mirrored = gaze.flip(-1).flip(-2)
    assert torch.equal(random_boxes(areas, (32, 32), _gen()), boxes)
    a = cutout_like_gaze_mask(x, gaze, spec, _gen())
    b = cutout_like_gaze_mask(x, mirrored, spec, _gen())
    assert torch.equal(a, b)
    # ... and the boxes move with the draws, not with the gaze.
    assert not torch.equal(random_boxes(areas, (32, 32), _gen(1)), boxes)
    # Nothing to hide: nothing hidden. Everything to hide: everything hidden.
    assert random_boxes(torch.tensor([0, 1024]), (32, 32), _gen()).flatten(1).sum(1).tolist() == [
        0,
        1024,
    ]


@pytest.mark.parametrize("arm_name", ["gaze-mask", "cutout"])
def test_each_call_draws_the_same_amount_whatever_the_gaze(tiny_data, arm_name):
    # Resumes replay the batch generator: the masks must not make its use depend on the data.
    x, gaze, _ = _batch(tiny_data)
    arm, cfg = get_arm(arm_name), tiny_config(arm=arm_name)
    states = []
    for g in (gaze, torch.zeros_like(gaze), torch.ones_like(gaze)):
        gen = _gen()
        arm.train_input(x, g, gen, cfg)
        states.append(gen.get_state())
    assert all(torch.equal(states[0], s) for s in states[1:])
    assert not torch.equal(states[0], _gen().get_state())  # it did draw


def test_arms_without_a_transform_see_the_batch_itself_and_draw_nothing(tiny_data):
    x, gaze, _ = _batch(tiny_data)
    for name in ("no-seg", "unet", "set1-gbp", "rrr-share", "density-share"):
        gen = _gen()
        assert get_arm(name).train_input(x, gaze, gen, tiny_config(arm=name)) is x
        assert torch.equal(gen.get_state(), _gen().get_state())


def _load_model(out_dir):
    state = torch.load(out_dir / "model" / "model.pt", weights_only=True)
    cfg = state["config"]
    model = build_model(cfg["encoder"], None, tuple(cfg["decoder_channels"]))
    model.load_state_dict(state["state_dict"])
    return model


@pytest.mark.parametrize("arm_name", ["gaze-mask", "cutout"])
def test_only_training_inputs_are_masked(tiny_data, tmp_path, arm_name):
    """Trained with masked inputs (the weights differ from no-seg's, same loss and seed), yet its
    validation and test numbers are those of the untouched images through the trained model."""
    cfg = tiny_config(arm=arm_name, epochs=1, panels=0, bootstrap_resamples=20)
    res = fit(cfg, tiny_data, tmp_path / arm_name, placement=CPU1, log=QUIET)
    plain = fit(tiny_config(arm="no-seg", epochs=1, panels=0, bootstrap_resamples=20),
                tiny_data, tmp_path / "no-seg", placement=CPU1, log=QUIET)  # fmt: skip
    model, reference = _load_model(tmp_path / arm_name), _load_model(tmp_path / "no-seg")
    weights = zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in weights), "the masks did not reach training"
    assert plain.history[0]["train/loss"] != res.history[0]["train/loss"]
    dd = DeviceData(tiny_data, torch.device("cpu"))
    probs, labels, loss = predict(model, dd, "val", cfg.eval_batch_size)
    epoch = json.loads((tmp_path / arm_name / "summary.json").read_text())["history"][0]
    assert epoch["val/loss"] == loss  # one epoch: the weights written are that epoch's
    assert epoch["val/auc_mean"] == per_class_auc(labels, probs, egd_task())["auc_mean"]
    test_probs, _, _ = predict(model, dd, "test", cfg.eval_batch_size)
    pred = pd.read_csv(tmp_path / arm_name / "predictions" / "test.csv")
    keys = [tiny_data.keys[i] for i in tiny_data.indices("test")]
    written = pred.set_index("key").loc[keys, list(egd_task().prob_columns)].to_numpy()
    np.testing.assert_array_equal(written, test_probs)


def test_cutout_resumes_exactly(tiny_data, tmp_path):
    cfg = tiny_config(arm="cutout", epochs=2, panels=0, bootstrap_resamples=20)
    full = []
    for event in train(cfg, tiny_data, tmp_path / "full", placement=CPU1, log=QUIET):
        if event.epoch == 1:
            shutil.copytree(event.checkpoint, tmp_path / "c1")
        full.append(event)
    resumed = list(train(cfg, tiny_data, tmp_path / "resumed", placement=CPU1, resume_from=(tmp_path / "c1", "c1"), log=QUIET))  # fmt: skip
    assert [e.metrics["train/loss"] for e in resumed] == [full[1].metrics["train/loss"]]
    assert resumed[-1].final == full[-1].final
