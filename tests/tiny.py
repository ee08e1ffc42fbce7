"""Tiny configs for fast tests (data: ``trainables.data.toy``; the data layer tests make DICOMs)."""

from __future__ import annotations

import torch
from torch import nn

from trainables.config import Placement, TrialConfig

TINY_ENCODER = "efficientnet-b0"  # the paper's encoder (SiLU, depthwise convs), tiny decoder, 32 px
TINY_DECODER = (16, 8, 8)  # encoder_depth 3: a third of the blocks, same layer types


CPU1 = Placement(device="cpu", num_threads=1)  # where the tests' trials run: deterministic


def tiny_config(**overrides) -> TrialConfig:
    base = {
        "encoder": TINY_ENCODER,
        "decoder_channels": TINY_DECODER,
        "batch_size": 8,
        "eval_batch_size": 32,
        "epochs": 2,
        "lr": 3e-3,
        "bootstrap_resamples": 200,
        "panels": 3,
    }
    base.update(overrides)
    return TrialConfig(**base)


class StageOutputs(nn.Module):
    """Runs a Sequential and returns the output of each stage, as an smp encoder does."""

    def __init__(self, seq: nn.Sequential, ends: tuple[int, ...]) -> None:
        super().__init__()
        self.seq, self.ends = seq, ends

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in self.ends:
            for layer in self.seq[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs


def egd_task():
    """EGD-CXR's task (three exclusive classes): the default dataset's, what most tests use."""
    from trainables.data.datasets import task_of

    return task_of("egd-cxr")
