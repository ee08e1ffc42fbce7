"""The arm registry: which loss terms each arm trains with.

An arm is a model set (how the segmentation loss is formed) crossed with a heatmap generator. Model sets
are small loss functions registered with ``@register_model_set``; arms are generated from them and from
``TRAINING_GENERATORS``, so a new set or a new generator is one entry:

| arm          | loss besides classification                                   | paper         |
|--------------|---------------------------------------------------------------|---------------|
| no-seg       | none (encoder + head only)                                    | Table 1 row 2 |
| unet         | BCEWithLogits(decoder logits, gaze map)                       | Table 1 row 1 |
| set1-<gen>   | BCE(generator map, gaze map)                                  | Table 2       |
| set2-<gen>   | BCEWithLogits(decoder logits, generator map (detached))      | Table 3       |
| set3-<gen>   | r * BCEWithLogits(decoder, gaze) + (1 - r) * BCE(gen map, gaze) | Table 4     |

total = gamma * L_cls + (1 - gamma) * L_seg (``trainables.losses.combine``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from trainables.config import TrialConfig
from trainables.losses import bce_logits, bce_prob, classification_loss, combine

TRAINING_GENERATORS: tuple[str, ...] = ("gbp", "deconv")  # generators crossed with the sets that use one
MapNeed = Literal["none", "graph", "detached"]


@dataclass
class StepOutputs:
    """What one forward pass produced; fields an arm does not need stay None."""

    class_logits: torch.Tensor
    mask_logits: torch.Tensor | None = None  # decoder output (B,1,H,W), logits
    generator_map: torch.Tensor | None = None  # to_heatmap(generator map) in [0, 1], (B,1,H,W)


LossFn = Callable[[StepOutputs, torch.Tensor, torch.Tensor, TrialConfig], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelSet:
    name: str
    loss: LossFn  # (outputs, labels, gaze (B,1,H,W), cfg) -> terms, with "total"
    uses_decoder: bool  # the decoder runs (and is trained) in the training step
    needs_map: MapNeed  # generator map: none, differentiable (create_graph), or a detached target
    hyperparams: tuple[str, ...]  # which of lr / gamma / seg_ratio change this set's loss


@dataclass(frozen=True)
class Arm:
    """One arm of the study: a model set with a generator ("none" for sets that use none)."""

    name: str
    model_set: str
    generator: str
    uses_decoder: bool
    needs_map: MapNeed
    hyperparams: tuple[str, ...]

    def loss(self, out: StepOutputs, labels: torch.Tensor, gaze: torch.Tensor, cfg: TrialConfig):
        return _MODEL_SETS[self.model_set].loss(out, labels, gaze, cfg)


_MODEL_SETS: dict[str, ModelSet] = {}


def register_model_set(name: str, *, uses_decoder: bool, needs_map: MapNeed, hyperparams: tuple[str, ...]):
    """Register a loss function as a model set; sets with a generator map become one arm per generator."""

    def deco(fn: LossFn) -> LossFn:
        if name in _MODEL_SETS:
            raise ValueError(f"model set '{name}' registered twice")
        _MODEL_SETS[name] = ModelSet(name, fn, uses_decoder, needs_map, hyperparams)
        return fn

    return deco


@register_model_set("no-seg", uses_decoder=False, needs_map="none", hyperparams=("lr",))
def _no_seg(out, labels, gaze, cfg):
    cls = classification_loss(out.class_logits, labels)
    return {"cls": cls, "total": cls}


@register_model_set("unet", uses_decoder=True, needs_map="none", hyperparams=("lr", "gamma"))
def _unet(out, labels, gaze, cfg):
    cls = classification_loss(out.class_logits, labels)
    seg = bce_logits(out.mask_logits, gaze)
    return {"cls": cls, "seg_decoder": seg, "total": combine(cls, seg, cfg.gamma)}


@register_model_set("set1", uses_decoder=False, needs_map="graph", hyperparams=("lr", "gamma"))
def _set1(out, labels, gaze, cfg):
    cls = classification_loss(out.class_logits, labels)
    seg = bce_prob(out.generator_map, gaze)
    return {"cls": cls, "seg_generator": seg, "total": combine(cls, seg, cfg.gamma)}


@register_model_set("set2", uses_decoder=True, needs_map="detached", hyperparams=("lr", "gamma"))
def _set2(out, labels, gaze, cfg):
    cls = classification_loss(out.class_logits, labels)
    seg = bce_logits(out.mask_logits, out.generator_map.detach())  # the map is a target, not trained
    return {"cls": cls, "seg_decoder_vs_map": seg, "total": combine(cls, seg, cfg.gamma)}


@register_model_set("set3", uses_decoder=True, needs_map="graph", hyperparams=("lr", "gamma", "seg_ratio"))
def _set3(out, labels, gaze, cfg):
    cls = classification_loss(out.class_logits, labels)
    seg_dec = bce_logits(out.mask_logits, gaze)
    seg_gen = bce_prob(out.generator_map, gaze)
    seg = cfg.seg_ratio * seg_dec + (1.0 - cfg.seg_ratio) * seg_gen
    return {"cls": cls, "seg_decoder": seg_dec, "seg_generator": seg_gen,
            "total": combine(cls, seg, cfg.gamma)}


def _build_arms() -> dict[str, Arm]:
    arms: dict[str, Arm] = {}
    for ms in _MODEL_SETS.values():
        gens = ("none",) if ms.needs_map == "none" else TRAINING_GENERATORS
        for gen in gens:
            name = ms.name if gen == "none" else f"{ms.name}-{gen}"
            arms[name] = Arm(name, ms.name, gen, ms.uses_decoder, ms.needs_map, ms.hyperparams)
    return arms


def list_arms() -> list[str]:
    """All arm names, in the paper's table order."""
    return list(_build_arms())


def get_arm(name: str) -> Arm:
    """Look an arm up by name.

    Raises:
        KeyError: unknown name; the message lists the valid ones.
    """
    arms = _build_arms()
    if name not in arms:
        raise KeyError(f"unknown arm '{name}'; valid arms: {', '.join(arms)}")
    return arms[name]
