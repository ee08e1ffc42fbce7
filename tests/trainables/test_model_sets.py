"""Each arm's loss on a tiny batch: the right terms are present, and a step reduces the loss."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tiny import TINY_DECODER, TINY_ENCODER, tiny_config
from trainables.device_data import DeviceData
from trainables.fit import step_terms
from trainables.generators import training_generators
from trainables.losses import bce_logits, bce_prob
from trainables.model import build_model
from trainables.model_sets import get_arm, list_arms, paper_arms

PROJECT_DIR = Path(__file__).resolve().parents[2]

EXPECTED_TERMS = {
    "no-seg": {"cls"},
    "unet": {"cls", "seg_decoder"},
    "set1": {"cls", "seg_generator"},
    "set2": {"cls", "seg_decoder_vs_map"},
    "set3": {"cls", "seg_decoder", "seg_generator"},
    "rrr": {"cls", "rrr"},
    "outside-share": {"cls", "outside_share"},
    "density-share": {"cls", "density_share"},
    "gaze-mask": {"cls"},
    "cutout": {"cls"},
}


def test_registry_lists_the_papers_eight_arms_first():
    # The paper's table order, with each paper set crossed with the training generators.
    assert paper_arms() == [
        "no-seg",
        "unet",
        *(f"set{k}-{g}" for k in (1, 2, 3) for g in training_generators()),
    ]
    assert training_generators() == ("gbp", "deconv")
    assert list_arms()[:8] == paper_arms()
    assert set(list_arms("extension")) >= {"rrr", "set1-gradcam", "gaze-mask", "cutout"}
    assert all(get_arm(a).group == "extension" for a in list_arms("extension"))
    with pytest.raises(KeyError, match="valid arms: no-seg, unet"):
        get_arm("set4-gbp")


def test_registries_import_without_torch():
    """Listing and checking arms is torch-free (the CLI does it at parse time)."""
    code = (
        "import sys; from trainables.model_sets import list_arms, get_arm; "
        "list_arms(); get_arm('set3-gbp'); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_DIR)


def _deterministic_train_mode(model):
    """Train mode (batch statistics: a fixed batch gives a fixed loss) without dropout noise."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    return model


def _batch(tiny_data, n=8):
    dd = DeviceData(tiny_data, torch.device("cpu"))
    return dd.batch(dd.indices("train")[:n])


@pytest.mark.parametrize("arm_name", list_arms())
def test_arm_terms_and_a_step_reduces_the_loss(arm_name, tiny_data):
    torch.manual_seed(0)
    cfg = tiny_config(arm=arm_name, gamma=0.5, seg_ratio=0.5)
    arm = get_arm(arm_name)
    model = _deterministic_train_mode(build_model(TINY_ENCODER, None, TINY_DECODER))
    x, gaze, y = _batch(tiny_data)
    x = arm.train_input(x, gaze, torch.Generator().manual_seed(0), cfg)  # as the loop does
    terms = step_terms(model, arm, cfg, x, gaze, y)
    assert set(terms) - {"total"} == EXPECTED_TERMS[arm.model_set]
    parts = [v for k, v in terms.items() if k != "total"]
    assert all(torch.isfinite(p) and p > 0 for p in parts)
    # Small steps along the gradient must reduce the loss (second-order terms have large gradients).
    opt = torch.optim.SGD(model.parameters(), lr=0.002)
    before = float(terms["total"].detach())
    for _ in range(3):
        opt.zero_grad()
        step_terms(model, arm, cfg, x, gaze, y)["total"].backward()
        opt.step()
    after = float(step_terms(model, arm, cfg, x, gaze, y)["total"].detach())
    assert after < before, (arm_name, before, after)


def test_set3_mixes_its_two_segmentation_terms_with_seg_ratio(tiny_data):
    model = _deterministic_train_mode(build_model(TINY_ENCODER, None, TINY_DECODER))
    x, gaze, y = _batch(tiny_data)
    arm = get_arm("set3-gbp")
    totals = {}
    for r in (0.0, 1.0):
        torch.manual_seed(0)
        t = step_terms(model, arm, tiny_config(arm="set3-gbp", seg_ratio=r, gamma=0.3), x, gaze, y)
        totals[r] = t
        seg = r * t["seg_decoder"] + (1 - r) * t["seg_generator"]
        assert torch.allclose(t["total"], 0.3 * t["cls"] + 0.7 * seg)
    assert not torch.allclose(totals[0.0]["total"], totals[1.0]["total"])


def test_set1_generator_term_trains_the_encoder_not_the_decoder(tiny_data):
    model = build_model(TINY_ENCODER, None, TINY_DECODER).train()
    x, gaze, y = _batch(tiny_data)
    terms = step_terms(model, get_arm("set1-gbp"), tiny_config(arm="set1-gbp"), x, gaze, y)
    terms["seg_generator"].backward()
    enc = [p.grad for p in model.unet.encoder.parameters() if p.grad is not None]
    assert enc and any(g.abs().sum() > 0 for g in enc)  # second-order gradient reaches the weights
    assert all(p.grad is None for p in model.unet.decoder.parameters())


def test_set2_generator_map_is_a_detached_target(tiny_data):
    model = build_model(TINY_ENCODER, None, TINY_DECODER).train()
    x, gaze, y = _batch(tiny_data)
    terms = step_terms(model, get_arm("set2-gbp"), tiny_config(arm="set2-gbp"), x, gaze, y)
    terms["seg_decoder_vs_map"].backward()
    # only the decoder path carries gradient: the encoder gets some through the decoder skip features,
    # but the classification head gets none (the map target is detached)
    assert all(
        p.grad is None or p.grad.abs().sum() == 0
        for p in model.unet.classification_head.parameters()
    )


def test_probability_maps_never_go_through_bce_with_logits():
    target = torch.rand(2, 1, 8, 8)
    perfect = target.clone()
    # BCE on probabilities is minimised by the target itself (up to its entropy); logits-BCE is not
    assert bce_prob(perfect, target) < bce_prob((perfect + 0.2).clamp(0, 1), target)
    assert bce_logits(torch.logit(perfect.clamp(1e-4, 1 - 1e-4)), target) < bce_logits(
        perfect, target
    )


def test_trial_config_is_frozen_and_serialisable():
    cfg = tiny_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert cfg.to_dict()["decoder_channels"] == TINY_DECODER
