"""The arm registry: which loss terms each arm trains with.

An arm is a model set (how the loss besides classification is formed) with a heatmap generator. The
paper's model sets are crossed with every generator registered with ``training=True``
(``trainables.generators``); further arms pair a model set with one generator explicitly
(``register_arm``). A new set, generator or arm is one entry.

| arm            | loss besides classification                                     | source        |
|----------------|-----------------------------------------------------------------|---------------|
| no-seg         | none (encoder + head only)                                      | Table 1 row 2 |
| unet           | BCEWithLogits(decoder logits, gaze map)                         | Table 1 row 1 |
| set1-<gen>     | BCE(generator map, gaze map)                                    | Table 2       |
| set2-<gen>     | BCEWithLogits(decoder logits, generator map (detached))        | Table 3       |
| set3-<gen>     | r * BCEWithLogits(decoder, gaze) + (1 - r) * BCE(gen map, gaze) | Table 4       |
| rrr            | squared input gradient of the log-probabilities outside the gaze | Ross 2017    |
| rrr-share      | share of that gradient's energy outside the gaze (scale-free)   | ours          |
| gbp-share      | share of the GBP map's energy outside the gaze                  | ours          |
| set1-gradcam   | BCE(Grad-CAM map, gaze map)                                     | GAIN-like     |
| set1-gradcam-mid | the same at the encoder's stride-8 stage                      | ours          |
| density-share  | that gradient's energy weighted by (1 - gaze) ** p (no threshold) | ours        |
| gaze-mask      | none; training inputs hidden outside the gaze (noise or blur)   | baseline      |
| cutout         | none; as much hidden as gaze-mask, at a random place (control)  | baseline      |

total = gamma * L_cls + (1 - gamma) * L_seg (``trainables.losses.combine``).

A model set may also change its TRAINING inputs (``train_input``, applied by the loop after the
augmentation and before the forward; ``trainables.masking``): gaze-mask and cutout do. Validation,
test and every map are computed on the untouched images.

Torch-free at import (losses are imported on first use), so the CLI lists and checks arms fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trainables.generators import paper_generators, training_generators
from trainables.registry import Registry, lazy_module

if TYPE_CHECKING:
    import torch

    from trainables.config import TrialConfig

L = lazy_module("trainables.losses")
M = lazy_module("trainables.masking")
MapNeed = Literal["none", "graph", "detached"]
DEFAULT_DISPLAY_GENERATOR = "gbp"  # the map shown for arms that train with no generator
ArmGroup = Literal["paper", "extension"]


@dataclass
class StepOutputs:
    """What one forward pass produced; fields an arm does not need stay None."""

    class_logits: torch.Tensor
    mask_logits: torch.Tensor | None = None  # decoder output (B,1,H,W), logits
    generator_map: torch.Tensor | None = None  # to_heatmap(generator map) in [0, 1], (B,1,H,W)
    raw_map: torch.Tensor | None = None  # the generator's raw map (B,C,H,W), before to_heatmap


LossFn = Callable[[StepOutputs, "torch.Tensor", "torch.Tensor", "TrialConfig"], dict]
# (x, gaze, the loop's batch generator, cfg) -> the training input the forward sees
InputTransform = Callable[
    ["torch.Tensor", "torch.Tensor", "torch.Generator", "TrialConfig"], "torch.Tensor"
]


@dataclass(frozen=True)
class ModelSet:
    name: str
    loss: LossFn  # (outputs, labels, gaze (B,1,H,W), cfg) -> terms, with "total"
    uses_decoder: bool  # the decoder runs (and is trained) in the training step
    needs_map: MapNeed  # generator map: none, differentiable (create_graph), or a detached target
    hyperparams: tuple[str, ...]  # which TrialConfig fields change this set's loss (searchable)
    paper: bool  # one of the paper's model sets (crossed with the training generators)
    # Training batches only, before the forward (gaze-mask, cutout); None: the batch as it comes.
    train_input: InputTransform | None = None


@dataclass(frozen=True)
class Arm:
    """One arm of the study: a model set with a generator ("none" for sets that use none)."""

    name: str
    model_set: str
    generator: str
    uses_decoder: bool
    needs_map: MapNeed
    hyperparams: tuple[str, ...]
    group: ArmGroup  # "paper": the paper's eight arms; "extension": arms added beyond the paper

    @property
    def display_generator(self) -> str:
        """The generator whose map shows this arm's explanation: its own, or GBP (the paper's
        generator) for an arm that trains with none (no-seg, unet)."""
        return self.generator if self.generator != "none" else DEFAULT_DISPLAY_GENERATOR

    def loss(self, out: StepOutputs, labels, gaze, cfg: TrialConfig) -> dict:
        return MODEL_SETS.get(self.model_set).loss(out, labels, gaze, cfg)

    def train_input(self, x, gaze, gen, cfg: TrialConfig):
        """The training batch's input as this arm trains on it: its model set's ``train_input``
        (which may draw from ``gen``, the loop's batch generator), or ``x`` itself, untouched and
        with no draw, for every set without one."""
        transform = MODEL_SETS.get(self.model_set).train_input
        return x if transform is None else transform(x, gaze, gen, cfg)


MODEL_SETS: Registry[ModelSet] = Registry("model set")
_EXTRA_ARMS: Registry[tuple[str, str]] = Registry("arm")  # name -> (model set, generator)


def register_model_set(
    name: str,
    *,
    uses_decoder: bool,
    needs_map: MapNeed,
    hyperparams: tuple[str, ...],
    paper: bool = True,
    train_input: InputTransform | None = None,
):
    """Register a loss function as a model set; a paper set with a generator map becomes one arm
    per training generator, ``<set>-<generator>``. ``train_input`` changes the set's training
    inputs (never its evaluation inputs)."""

    def deco(fn: LossFn) -> LossFn:
        ms = ModelSet(name, fn, uses_decoder, needs_map, hyperparams, paper, train_input)
        MODEL_SETS.add(name, ms)
        return fn

    return deco


def register_arm(name: str, *, model_set: str, generator: str) -> None:
    """Register one arm beyond the paper's: a model set paired with one named generator."""
    _EXTRA_ARMS.add(name, (model_set, generator))


@register_model_set("no-seg", uses_decoder=False, needs_map="none", hyperparams=("lr",))
def _no_seg(out, labels, gaze, cfg):
    cls = L.classification_loss(out.class_logits, labels)
    return {"cls": cls, "total": cls}


@register_model_set("unet", uses_decoder=True, needs_map="none", hyperparams=("lr", "gamma"))
def _unet(out, labels, gaze, cfg):
    cls = L.classification_loss(out.class_logits, labels)
    seg = L.bce_logits(out.mask_logits, gaze)
    return {"cls": cls, "seg_decoder": seg, "total": L.combine(cls, seg, cfg.gamma)}


@register_model_set("set1", uses_decoder=False, needs_map="graph", hyperparams=("lr", "gamma"))
def _set1(out, labels, gaze, cfg):
    cls = L.classification_loss(out.class_logits, labels)
    seg = L.bce_prob(out.generator_map, gaze)
    return {"cls": cls, "seg_generator": seg, "total": L.combine(cls, seg, cfg.gamma)}


@register_model_set("set2", uses_decoder=True, needs_map="detached", hyperparams=("lr", "gamma"))
def _set2(out, labels, gaze, cfg):
    cls = L.classification_loss(out.class_logits, labels)
    seg = L.bce_logits(out.mask_logits, out.generator_map.detach())  # a target, not trained
    return {"cls": cls, "seg_decoder_vs_map": seg, "total": L.combine(cls, seg, cfg.gamma)}


@register_model_set(
    "set3", uses_decoder=True, needs_map="graph", hyperparams=("lr", "gamma", "seg_ratio")
)
def _set3(out, labels, gaze, cfg):
    cls = L.classification_loss(out.class_logits, labels)
    seg_dec = L.bce_logits(out.mask_logits, gaze)
    seg_gen = L.bce_prob(out.generator_map, gaze)
    seg = cfg.seg_ratio * seg_dec + (1.0 - cfg.seg_ratio) * seg_gen
    return {
        "cls": cls,
        "seg_decoder": seg_dec,
        "seg_generator": seg_gen,
        "total": L.combine(cls, seg, cfg.gamma),
    }


@register_model_set(
    "rrr", uses_decoder=False, needs_map="graph", hyperparams=("lr", "rrr_lambda"), paper=False
)
def _rrr(out, labels, gaze, cfg):
    # Ross et al. 2017: cross-entropy + lambda * ||A * d(sum log p)/dx||^2, A = outside the gaze; the raw input
    # gradient, not a normalised heatmap, is what the classifier's decision actually depends on.
    cls = L.classification_loss(out.class_logits, labels)
    penalty = L.outside_gradient_penalty(out.raw_map, gaze, cfg.gaze_mask_threshold)
    return {"cls": cls, "rrr": penalty, "total": cls + cfg.rrr_lambda * penalty}


@register_model_set(
    "outside-share", uses_decoder=False, needs_map="graph", hyperparams=("lr", "share_lambda"),
    paper=False,
)  # fmt: skip
def _outside_share(out, labels, gaze, cfg):
    # A scale-free RRR: the share of the explanation's energy outside the gaze, in [0, 1]. Unlike
    # the raw penalty it cannot be lowered by flattening the model everywhere, only by moving its
    # sensitivity into the gaze.
    cls = L.classification_loss(out.class_logits, labels)
    share = L.outside_gradient_share(out.raw_map, gaze, cfg.gaze_mask_threshold)
    return {"cls": cls, "outside_share": share, "total": cls + cfg.share_lambda * share}


@register_model_set(
    "density-share", uses_decoder=False, needs_map="graph",
    hyperparams=("lr", "share_lambda", "density_power"), paper=False,
)  # fmt: skip
def _density_share(out, labels, gaze, cfg):
    # outside-share without a threshold: a pixel the radiologist glanced at once (low gaze
    # density) still costs nearly as much as one never looked at (losses.gaze_weighted_share).
    cls = L.classification_loss(out.class_logits, labels)
    share = L.gaze_weighted_share(out.raw_map, gaze, cfg.density_power)
    return {"cls": cls, "density_share": share, "total": cls + cfg.share_lambda * share}


def _mask_outside_gaze(x, gaze, gen, cfg):
    return M.gaze_mask(x, gaze, gen, cfg)  # wrapped: naming M.gaze_mask here would import torch


def _cutout(x, gaze, gen, cfg):
    return M.cutout(x, gaze, gen, cfg)


# The input-masking baselines: no-seg's loss (classification only); what differs is what the
# model sees while it trains (TrialConfig.mask_*).
for _name, _hide in (("gaze-mask", _mask_outside_gaze), ("cutout", _cutout)):
    register_model_set(
        _name, uses_decoder=False, needs_map="none", paper=False,
        hyperparams=("lr", "mask_strength", "mask_dilation"), train_input=_hide,
    )(_no_seg)  # fmt: skip


register_arm("rrr", model_set="rrr", generator="logprob-gradient")
register_arm("rrr-share", model_set="outside-share", generator="logprob-gradient")
register_arm("gbp-share", model_set="outside-share", generator="gbp")
register_arm("set1-gradcam", model_set="set1", generator="gradcam")
register_arm("set1-gradcam-mid", model_set="set1", generator="gradcam-mid")
register_arm("density-share", model_set="density-share", generator="logprob-gradient")
register_arm("gaze-mask", model_set="gaze-mask", generator="none")
register_arm("cutout", model_set="cutout", generator="none")


def _build_arms() -> dict[str, Arm]:
    arms: dict[str, Arm] = {}

    def add(name: str, ms: ModelSet, gen: str, group: ArmGroup) -> None:
        arms[name] = Arm(name, ms.name, gen, ms.uses_decoder, ms.needs_map, ms.hyperparams, group)

    for entry in MODEL_SETS:
        ms = entry.obj
        if not ms.paper:
            continue
        if ms.needs_map == "none":
            add(ms.name, ms, "none", "paper")
        else:
            for gen in training_generators():
                # a new training generator's arms exist but do not join the paper's default eight
                add(
                    f"{ms.name}-{gen}",
                    ms,
                    gen,
                    "paper" if gen in paper_generators() else "extension",
                )
    for entry in _EXTRA_ARMS:
        model_set, gen = entry.obj
        add(entry.name, MODEL_SETS.get(model_set), gen, "extension")
    return arms


def list_arms(group: ArmGroup | None = None) -> list[str]:
    """Arm names: the paper's eight in its table order, then the extensions (or one group)."""
    arms = sorted(_build_arms().values(), key=lambda a: a.group != "paper")  # stable: paper first
    return [a.name for a in arms if group is None or a.group == group]


def paper_arms() -> list[str]:
    """The paper's eight arms (what a study runs by default)."""
    return list_arms("paper")


def get_arm(name: str) -> Arm:
    """Look an arm up by name.

    Raises:
        KeyError: unknown name; the message lists the valid ones.
    """
    arms = _build_arms()
    if name not in arms:
        raise KeyError(f"unknown arm '{name}'; valid arms: {', '.join(arms)}")
    return arms[name]


def loss_hyperparams() -> tuple[str, ...]:
    """Every TrialConfig field that some model set's loss reads (``ModelSet.hyperparams``), in
    registration order."""
    return tuple(dict.fromkeys(h for entry in MODEL_SETS for h in entry.obj.hyperparams))


def unused_hyperparams(name: str) -> tuple[str, ...]:
    """The loss hyperparameters an arm never reads (no-seg: gamma, seg_ratio, ...): left out of
    its run's params and shown blank wherever its hyperparameters are listed.

    Raises:
        KeyError: unknown arm.
    """
    used = get_arm(name).hyperparams
    return tuple(h for h in loss_hyperparams() if h not in used)


def uses_hyperparam(arm: str, name: str) -> bool:
    """Whether ``arm``'s loss reads ``name``; True for an arm this registry does not know (an
    older record's arm: nothing to say it is unused)."""
    try:
        return name not in unused_hyperparams(arm)
    except KeyError:
        return True
