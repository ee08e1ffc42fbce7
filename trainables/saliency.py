"""The machinery behind the heatmap generators: input gradients under a backward rule, Grad-CAM,
``generator_map`` and THE heatmap definition.

The named generators themselves are registered in :mod:`trainables.generators`. A generator computes
a raw map of the input for a target class from ``model.classify(x)`` (class logits). With
``create_graph=True`` the map stays in the autograd graph, so a loss on it trains the weights (model
sets 1 and 3); with ``create_graph=False`` it is a detached target (model set 2, evaluation panels).
GBP and deconvNet need the model's activations patched first
(:func:`trainables.activations.patch_activations`); unpatched, they equal the plain gradient.

Per-image maps: BatchNorm never takes statistics from the batch it differentiates
(:mod:`trainables.saliency_batchnorm`), so image i's map is the gradient of its own score alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from trainables.activations import RuleActivation, backward_rule
from trainables.fast_conv import conv_input_grads_only, fast_conv_enabled
from trainables.saliency_batchnorm import (  # noqa: F401 (re-exported: the saliency API)
    BN_MODES,
    BatchStats,
    BnMode,
    batch_stats,
    batchnorm_mode,
    no_stochastic_layers,
    record_batch_stats,
)
from trainables.saliency_batchnorm import (
    class_logits as _logits,
)

HeatmapMode = Literal["abs", "positive"]


class Generator(Protocol):
    def __call__(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
    ) -> torch.Tensor: ...


def class_score(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's target-class logit from ``model.classify(x)``."""
    return _logits(model, x).gather(1, target.view(-1, 1)).sum()


def logprob_score(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch and the classes of the log-probabilities (Ross et al. 2017's score):
    of the softmax for exclusive classes, of each class's sigmoid for a multi-label model."""
    del target  # every class counts
    logits = _logits(model, x)
    if getattr(model, "exclusive", True):
        return torch.log_softmax(logits, dim=1).sum()
    return torch.nn.functional.logsigmoid(logits).sum()


def map_target(labels: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """The class a training map explains: the label (exclusive classes); for 0/1 labels (B, K)
    the present finding the model scores highest, or the highest-scored class when none is
    present (an image with no finding still has a map to train)."""
    if labels.ndim == 1:
        return labels
    scores = class_logits.detach().float()
    present = labels.bool() & labels.bool().any(1, keepdim=True)
    return torch.where(present | ~labels.bool().any(1, keepdim=True), scores, -torch.inf).argmax(1)


def input_gradient(
    rule: str,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    create_graph: bool,
    score: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """d score / d x with every RuleActivation following ``rule`` (normal / guided / deconv).

    ``score`` defaults to :func:`class_score` (each image's target-class logit).
    """
    if rule != "normal" and not any(isinstance(m, RuleActivation) for m in model.modules()):
        # Without them the rule has nothing to act on and the map would silently be the plain
        # gradient (what captum's GBP gives on SiLU networks).
        raise ValueError(
            f"{type(model).__name__} has no RuleActivation modules: call "
            f"trainables.activations.patch_activations(model) before using a {rule!r} generator"
        )
    value = (score or class_score)(model, x, target)
    with backward_rule(rule), conv_input_grads_only():
        (grad,) = torch.autograd.grad(value, x, create_graph=create_graph)
    return grad


def _submodule(model: nn.Module, name: str, why: str) -> nn.Module:
    """The shallowest submodule called ``name`` (``model.<name>`` or e.g. ``model.unet.<name>``)."""
    found = getattr(model, name, None)
    if isinstance(found, nn.Module):
        return found
    for path, module in model.named_modules():
        if path.split(".")[-1] == name:
            return module
    raise TypeError(f"{why}: {type(model).__name__} has no submodule named {name!r}")


def _classification_head(model: nn.Module) -> nn.Module:
    return _submodule(
        model, "classification_head", "gradcam needs the head whose input is the last feature map"
    )


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    create_graph: bool,
    stage: int | None = None,
) -> torch.Tensor:
    """Grad-CAM of a feature map, upsampled: ``relu(sum_k mean_hw(d score / d A_k) * A_k)``,
    bilinearly resized to the input, (B, 1, H, W).

    ``stage=None``: the last encoder feature map (the classification head's input; its graph only
    reaches back through the head, so it is cheap). ``stage=k``: the encoder's k-th output (smp
    encoders return one per stage; -3 is stride 8), finer but reaching back through later stages.
    """
    captured: list = []
    if stage is None:
        module, pick = _classification_head(model), None
        handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    else:
        module = _submodule(model, "encoder", f"gradcam at stage {stage} needs an smp encoder")
        handle = module.register_forward_hook(lambda _m, _args, out: captured.append(out))
        pick = stage
    try:
        score = class_score(model, x, target)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"gradcam expected {type(module).__name__} to run once, ran {len(captured)}"
        )
    features = captured[0] if pick is None else captured[0][pick]
    with backward_rule("normal"):
        (grads,) = torch.autograd.grad(score, features, create_graph=create_graph)
    cam = F.relu((grads.mean((2, 3), keepdim=True) * features).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _target_index(target: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    batch = x.shape[0]
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=x.device)
    target = torch.as_tensor(target, device=x.device).long().reshape(-1)
    if target.numel() != batch:
        raise ValueError(f"target has {target.numel()} class ids for a batch of {batch} images")
    return target


@dataclass(frozen=True)
class PassConfig:
    """How a saliency pass runs: BatchNorm statistics (see :func:`batchnorm_mode`) and the conv
    double backward.

    Attributes:
        bn_mode: "frozen" (running statistics) or "batch" (the training forward's, as constants).
        bn_stats: for ``bn_mode="batch"``, the statistics of the training forward
            (:func:`record_batch_stats`); None computes them from ``x`` (one extra forward).
        fast_conv: use the batched conv double backward (:mod:`trainables.fast_conv`); only
            matters with create_graph=True, same values as the stock path.
    """

    bn_mode: BnMode = "frozen"
    bn_stats: BatchStats | None = field(default=None, compare=False, repr=False)
    fast_conv: bool = True


FROZEN = PassConfig()


def generator_map(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    *,
    create_graph: bool,
    how: PassConfig = FROZEN,
) -> torch.Tensor:
    """Raw map of input ``x`` for class ``target`` from generator ``name``; each image's map is the
    gradient of its own score (see the module docstring).

    Args:
        name: a registered generator (``list_generators()``).
        model: has ``classify(x) -> (B, K)`` class logits; patched activations for gbp / deconv.
        x: (B, C, H, W) input. If it requires grad the map is also differentiable w.r.t. it;
            otherwise a detached copy is used.
        target: (B,) class ids, or one int for the whole batch.
        create_graph: keep the map in the graph (a loss on it trains the weights). False returns a
            detached map.
        how: BatchNorm statistics and the conv path of the pass (:class:`PassConfig`).

    Returns:
        (B, C, H, W) raw map (signed gradients; Grad-CAM is (B, 1, H, W), non-negative). Turn it
        into a heatmap with :func:`to_heatmap`.

    Raises:
        KeyError: unknown generator. ValueError: bad bn_mode or target size.
    """
    from trainables.generators import get_generator  # the registry imports this module lazily

    generate = get_generator(name)
    x_req = x if x.requires_grad else x.detach().requires_grad_()
    index = _target_index(target, x)
    stats = how.bn_stats
    if how.bn_mode == "batch" and stats is None:
        stats = batch_stats(model, x.detach())
    fast = fast_conv_enabled() if how.fast_conv and create_graph else contextlib.nullcontext()
    with (
        torch.enable_grad(),
        no_stochastic_layers(model),
        batchnorm_mode(model, how.bn_mode, stats),
        fast,
    ):
        raw = generate(model, x_req, index, create_graph=create_graph)
    return raw if create_graph else raw.detach()


def to_heatmap(
    raw: torch.Tensor,
    *,
    mode: HeatmapMode = "abs",
    smooth_sigma: float | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """THE definition of a generator heatmap: raw map (B, C, H, W) -> (B, 1, H, W) in [0, 1].

    1. Channels (C > 1): keep, per pixel, the channel value of largest magnitude (max-abs).
    2. ``abs``: magnitude; ``positive``: positive part (evidence for the class only).
    3. Optional Gaussian smoothing, sigma in pixels (kernel radius ``int(4 * sigma + 0.5)``,
       mirror padding: ``scipy.ndimage.gaussian_filter(mode="mirror")``), as one conv.
    4. Per image, divide by its maximum + ``eps`` (an all-zero map stays zero).

    Differentiable throughout. The result is a probability-like map: compare it with BCE on
    probabilities or a scale-free saliency loss, never with BCEWithLogits (it would be squashed
    twice).

    Raises:
        ValueError: not 4-D, unknown mode, or sigma too large for the image (radius >= side).
    """
    if raw.dim() != 4:
        raise ValueError(f"to_heatmap expects a (B, C, H, W) map, got shape {tuple(raw.shape)}")
    if raw.shape[1] > 1:
        raw = raw.gather(1, raw.abs().argmax(1, keepdim=True))
    if mode == "abs":
        heat = raw.abs()
    elif mode == "positive":
        heat = raw.clamp(min=0)
    else:
        raise ValueError(f"unknown heatmap mode {mode!r}; valid modes: abs, positive")
    if smooth_sigma:
        radius = int(4.0 * smooth_sigma + 0.5)
        if radius >= min(heat.shape[-2:]):
            raise ValueError(
                f"smooth_sigma={smooth_sigma} needs a kernel radius of {radius} px, larger than "
                f"the {tuple(heat.shape[-2:])} map"
            )
        if radius > 0:
            size = 2 * radius + 1
            heat = gaussian_blur(heat, [size, size], [float(smooth_sigma)] * 2)
    return heat / (heat.amax((2, 3), keepdim=True) + eps)
