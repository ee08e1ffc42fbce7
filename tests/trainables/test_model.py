"""The multi-task U-Net: shapes, the classify path, BatchNorm momentum, encoder weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.tiny import TINY_DECODER, TINY_ENCODER
from trainables.model import build_model


def test_model_forward_shapes_and_batchnorm_momentum():
    model = build_model(TINY_ENCODER, None, TINY_DECODER)
    mask, logits = model(torch.rand(2, 1, 32, 32))
    assert mask.shape == (2, 1, 32, 32) and logits.shape == (2, 3)
    x = torch.rand(2, 1, 32, 32)
    model.eval()  # no dropout: classify() is the aux head of the full forward
    assert torch.allclose(model.classify(x), model(x)[1])
    momenta = {
        m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    }
    assert momenta == {0.1}  # smp's EfficientNet ships 0.01, too slow for eval-mode BN to be usable


def test_unavailable_encoder_weights_give_an_actionable_error(tmp_path):
    from trainables.model import EncoderWeightsError

    with pytest.raises(EncoderWeightsError, match="not found: .*missing.pth"):
        build_model(TINY_ENCODER, str(tmp_path / "missing.pth"), TINY_DECODER)
    # The weights hub made unreachable for this process alone (offline hub, empty caches, a proxy
    # that refuses), whether or not this machine has a network: the way out is spelled out.
    code = (
        "from trainables.model import build_model, EncoderWeightsError\n"
        "try:\n"
        f"    build_model({TINY_ENCODER!r}, 'imagenet', {TINY_DECODER!r})\n"
        "except EncoderWeightsError as err:\n"
        "    print('REFUSED', err)\n"
    )
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "HTTPS_PROXY": dead, "HTTP_PROXY": dead,
           "https_proxy": dead, "http_proxy": dead, "NO_PROXY": "", "no_proxy": ""}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert "REFUSED" in run.stdout and "--encoder-weights none" in run.stdout, (
        run.stdout + run.stderr
    )


def test_local_encoder_weights_file_is_loaded(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(1)
    ref = smp.Unet(
        TINY_ENCODER,
        encoder_weights=None,
        in_channels=3,
        encoder_depth=3,
        decoder_channels=TINY_DECODER,
        classes=1,
    )
    torch.save(ref.encoder.state_dict(), tmp_path / "enc.pth")
    model = build_model(TINY_ENCODER, str(tmp_path / "enc.pth"), TINY_DECODER)
    first = next(model.unet.encoder.parameters())
    assert first.shape[1] == 1  # RGB kernels summed into one grey channel
    assert torch.allclose(first[:, 0], next(ref.encoder.parameters()).sum(1))
