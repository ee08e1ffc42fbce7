"""Tiny in-memory datasets and configs for fast tests (no DICOMs: the data layer tests make their own)."""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.data.toy import make_toy_cached as make_tiny_cached  # noqa: F401

TINY_ENCODER = "efficientnet-b0"  # the paper's encoder (SiLU, depthwise convs), tiny decoder, 32 px
TINY_DECODER = (16, 8, 8)  # encoder_depth 3: a third of the blocks, same layer types


def tiny_config(**overrides) -> TrialConfig:
    base = {"encoder": TINY_ENCODER, "decoder_channels": TINY_DECODER, "image_size": 32, "batch_size": 8,
            "eval_batch_size": 32, "epochs": 2, "lr": 3e-3, "bootstrap_resamples": 200, "panels": 3,
            "device": "cpu", "num_threads": 1}
    base.update(overrides)
    return TrialConfig(**base)
