"""Differentiable heatmap generators (GBP, deconvNet, gradient, Grad-CAM) and map -> heatmap.

A generator computes a raw map of the input for a target class from ``model.classify(x)`` (class
logits). With ``create_graph=True`` the map stays in the autograd graph, so a loss on it trains the
weights (model sets 1 and 3); with ``create_graph=False`` it is a detached target (model set 2,
evaluation panels). GBP and deconvNet need the model's activations patched first
(:func:`trainables.activations.patch_activations`); unpatched, they equal the plain gradient.

Add a generator: write ``fn(model, x, target, *, create_graph) -> raw map`` and decorate it with
``@register_generator("name")``; tests run every registered name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from trainables.activations import RuleActivation, backward_rule
from trainables.fast_conv import conv_input_grads_only, fast_conv_enabled

BnMode = Literal["frozen", "batch"]
HeatmapMode = Literal["abs", "positive"]
BN_MODES: tuple[str, ...] = ("frozen", "batch")


class Generator(Protocol):
    def __call__(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
    ) -> torch.Tensor: ...


_GENERATORS: dict[str, Generator] = {}


def register_generator(name: str) -> Callable[[Generator], Generator]:
    """Decorator: register ``fn(model, x, target, *, create_graph) -> (B, C, H, W)`` as ``name``.

    ``x`` already requires grad; ``target`` is a (B,) long tensor of class ids.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorate(fn: Generator) -> Generator:
        if name in _GENERATORS:
            raise ValueError(f"generator {name!r} is already registered")
        _GENERATORS[name] = fn
        return fn

    return decorate


def get_generator(name: str) -> Generator:
    """The generator registered as ``name``.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
    """
    try:
        return _GENERATORS[name]
    except KeyError:
        raise KeyError(
            f"unknown generator {name!r}; registered generators: {', '.join(list_generators())}"
        ) from None


def list_generators() -> list[str]:
    """Registered generator names, sorted."""
    return sorted(_GENERATORS)


def class_score(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's target-class logit from ``model.classify(x)``."""
    classify = getattr(model, "classify", None)
    if classify is None:
        raise TypeError(
            f"{type(model).__name__} has no classify(x) method returning class logits (B, K)"
        )
    logits = classify(x)
    return logits.gather(1, target.view(-1, 1)).sum()


def _input_gradient(
    rule: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    if rule != "normal" and not any(isinstance(m, RuleActivation) for m in model.modules()):
        # Without them the rule has nothing to act on and the map would silently be the plain
        # gradient (what captum's GBP gives on SiLU networks).
        raise ValueError(
            f"{type(model).__name__} has no RuleActivation modules: call "
            f"trainables.activations.patch_activations(model) before using a {rule!r} generator"
        )
    score = class_score(model, x, target)
    with backward_rule(rule), conv_input_grads_only():
        (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    return grad


@register_generator("gbp")
def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Guided backprop: the input gradient with positive input and gradient at each rectifier."""
    return _input_gradient("guided", model, x, target, create_graph)


@register_generator("deconv")
def deconvnet(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """deconvNet: the input gradient with only the positive gradient passing each rectifier."""
    return _input_gradient("deconv", model, x, target, create_graph)


@register_generator("gradient")
def input_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Plain input gradient (saliency map of Simonyan et al.)."""
    return _input_gradient("normal", model, x, target, create_graph)


def _classification_head(model: nn.Module) -> nn.Module:
    head = getattr(model, "classification_head", None)
    if isinstance(head, nn.Module):
        return head
    for name, module in model.named_modules():
        if name.split(".")[-1] == "classification_head":
            return module
    raise TypeError(
        f"gradcam needs a submodule named 'classification_head' whose input is the last feature "
        f"map; {type(model).__name__} has none"
    )


@register_generator("gradcam")
def gradcam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Grad-CAM on the last encoder feature map (the classification head's input), upsampled.

    ``relu(sum_k mean_hw(d score / d A_k) * A_k)``, bilinearly resized to the input: (B, 1, H, W).
    Differentiable: its graph only reaches back through the head, so it is cheap.
    """
    captured: list[torch.Tensor] = []
    handle = _classification_head(model).register_forward_pre_hook(
        lambda _module, args: captured.append(args[0])
    )
    try:
        score = class_score(model, x, target)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"gradcam expected the classification head to run once, it ran {len(captured)} times"
        )
    features = captured[0]
    with backward_rule("normal"):
        (grads,) = torch.autograd.grad(score, features, create_graph=create_graph)
    cam = F.relu((grads.mean((2, 3), keepdim=True) * features).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


@contextlib.contextmanager
def no_stochastic_layers(model: nn.Module) -> Iterator[None]:
    """Dropout and stochastic depth off for a saliency pass (every module but BatchNorm in eval mode).

    A map explains the model's score; dropout noise in it would make set 2's targets and the
    evaluation panels random. BatchNorm is left to :func:`batchnorm_mode`. Modes restored on exit.
    """
    saved = [(m, m.training) for m in model.modules()
             if not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        for m, _ in saved:
            m.training = False
        yield
    finally:
        for m, training in saved:
            m.training = training


@contextlib.contextmanager
def batchnorm_mode(model: nn.Module, mode: BnMode) -> Iterator[None]:
    """BatchNorm behaviour for a saliency pass; running statistics are never updated by it.

    - ``frozen``: every BatchNorm uses its running statistics (eval mode for the BN modules only,
      not their children), so an image's map does not depend on the rest of the batch.
    - ``batch``: BatchNorm modules keep the model's mode (training -> batch statistics) but do not
      update their running statistics or ``num_batches_tracked`` (the training forward already did).

    Covers every ``_BatchNorm`` subclass (BatchNorm1/2/3d, SyncBatchNorm, timm's BatchNormAct2d).
    Modes are restored on exit. Other train-mode randomness (dropout, efficientnet's stochastic
    depth) stays on. Note: ``frozen`` on a randomly initialised efficientnet-b0, whose running
    statistics start at (0, 1) and move slowly (smp's encoder BN momentum is 0.01), gives maps of
    ~1e-16 until training has moved the statistics; ``batch`` does not have this problem.

    Raises:
        ValueError: unknown mode, or ``frozen`` with a BatchNorm that keeps no running statistics.
    """
    if mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {mode!r}; valid modes: {', '.join(BN_MODES)}")
    norms = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    saved = [(module, module.training, module.track_running_stats) for _, module in norms]
    try:
        for name, module in norms:
            if mode == "frozen":
                if module.running_mean is None:
                    raise ValueError(
                        f"bn_mode='frozen' needs running statistics, but BatchNorm {name!r} of "
                        f"{type(model).__name__} has track_running_stats=False"
                    )
                # Set the flag, not .eval(): timm's BatchNormAct2d has drop/act children.
                module.training = False
            else:
                # In training mode, a BN with this flag off uses batch statistics and passes no
                # running buffers to F.batch_norm, so nothing is updated.
                module.track_running_stats = False
        yield
    finally:
        for module, training, track in saved:
            module.training = training
            module.track_running_stats = track


def _target_index(target: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    batch = x.shape[0]
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=x.device)
    target = torch.as_tensor(target, device=x.device).long().reshape(-1)
    if target.numel() != batch:
        raise ValueError(f"target has {target.numel()} class ids for a batch of {batch} images")
    return target


def generator_map(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    *,
    create_graph: bool,
    bn_mode: BnMode = "frozen",
    fast_conv: bool = True,
) -> torch.Tensor:
    """Raw map of input ``x`` for class ``target`` from generator ``name``.

    Args:
        name: a registered generator (``list_generators()``).
        model: has ``classify(x) -> (B, K)`` class logits; patched activations for gbp / deconv.
        x: (B, C, H, W) input. If it requires grad the map is also differentiable w.r.t. it;
            otherwise a detached copy is used.
        target: (B,) class ids, or one int for the whole batch.
        create_graph: keep the map in the graph (a loss on it trains the weights). False returns a
            detached map.
        bn_mode: BatchNorm statistics during the saliency pass, see :func:`batchnorm_mode`.
        fast_conv: use the batched conv double backward (:mod:`trainables.fast_conv`); only
            matters with create_graph=True, same values as the stock path.

    Returns:
        (B, C, H, W) raw map (signed gradients; Grad-CAM is (B, 1, H, W), non-negative). Turn it
        into a heatmap with :func:`to_heatmap`.

    Raises:
        KeyError: unknown generator. ValueError: bad bn_mode or target size.
    """
    generate = get_generator(name)
    x_req = x if x.requires_grad else x.detach().requires_grad_()
    index = _target_index(target, x)
    fast = fast_conv_enabled() if fast_conv and create_graph else contextlib.nullcontext()
    with torch.enable_grad(), no_stochastic_layers(model), batchnorm_mode(model, bn_mode), fast:
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
