"""The machinery behind the heatmap generators: input gradients under a backward rule, Grad-CAM,
the BatchNorm statistics of a saliency pass, ``generator_map`` and THE heatmap definition.

The named generators themselves are registered in :mod:`trainables.generators`. A generator computes
a raw map of the input for a target class from ``model.classify(x)`` (class logits). With
``create_graph=True`` the map stays in the autograd graph, so a loss on it trains the weights (model
sets 1 and 3); with ``create_graph=False`` it is a detached target (model set 2, evaluation panels).
GBP and deconvNet need the model's activations patched first
(:func:`trainables.activations.patch_activations`); unpatched, they equal the plain gradient.

Per-image maps: a BatchNorm layer in training mode normalises each image with statistics of the
whole batch, so the gradient of image i's score w.r.t. x_i would include every other image's score
(cosine 0.17-0.36 with image i's own map, measured). In a saliency pass BatchNorm therefore never
computes statistics from the batch it differentiates: ``bn_mode="batch"`` uses the statistics the
training forward computed (recorded by :func:`record_batch_stats`), as constants; ``"frozen"`` uses
the running statistics (evaluation). Either way image i's map is the gradient of its own score alone.
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


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    classify = getattr(model, "classify", None)
    if classify is None:
        raise TypeError(
            f"{type(model).__name__} has no classify(x) method returning class logits (B, K)"
        )
    return classify(x)


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


@contextlib.contextmanager
def no_stochastic_layers(model: nn.Module) -> Iterator[None]:
    """Dropout and stochastic depth off for a saliency pass (every module but BatchNorm in eval mode).

    A map explains the model's score; dropout noise in it would make set 2's targets and the
    evaluation panels random. BatchNorm is left to :func:`batchnorm_mode`. Modes restored on exit.
    """
    saved = [
        (m, m.training)
        for m in model.modules()
        if not isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        for m, _ in saved:
            m.training = False
        yield
    finally:
        for m, training in saved:
            m.training = training


BatchStats = dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]  # BN module -> (mean, var)


def _batchnorms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    # Every _BatchNorm subclass: BatchNorm1/2/3d, SyncBatchNorm, timm's BatchNormAct2d.
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


@contextlib.contextmanager
def record_batch_stats(model: nn.Module) -> Iterator[BatchStats]:
    """Record, during the forward run inside this block, the batch statistics of every BatchNorm
    that runs in training mode: ``{module: (mean, biased var)}`` per channel, detached.

    These are the values a training-mode BatchNorm normalises with; ``bn_mode="batch"`` reuses them
    as constants in the saliency pass. Modules in eval mode use their running statistics anyway and
    are not recorded.

    Raises:
        RuntimeError: a BatchNorm ran twice in the block (its statistics would be ambiguous).
    """
    stats: BatchStats = {}

    def hook(module: nn.Module, args: tuple) -> None:
        if not module.training:
            return
        if module in stats:
            raise RuntimeError(
                f"{type(module).__name__} ran twice while recording batch statistics; record one "
                "forward pass only"
            )
        x = args[0].detach()
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)  # what F.batch_norm normalises by
        stats[module] = (mean, var)

    handles = [m.register_forward_pre_hook(hook) for _, m in _batchnorms(model)]
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()


def batch_stats(model: nn.Module, x: torch.Tensor) -> BatchStats:
    """The batch statistics a training forward of ``model.classify(x)`` would use, from a forward
    without gradients, dropout or stochastic depth (so they are reproducible) that leaves the
    running statistics untouched."""
    norms = [m for _, m in _batchnorms(model)]
    saved = [(m, m.track_running_stats) for m in norms]
    try:
        for m in norms:
            # In training mode a BN with this flag off uses batch statistics and passes no running
            # buffers to F.batch_norm, so nothing is updated.
            m.track_running_stats = False
        with torch.no_grad(), no_stochastic_layers(model), record_batch_stats(model) as stats:
            _logits(model, x)
    finally:
        for m, track in saved:
            m.track_running_stats = track
    return stats


@contextlib.contextmanager
def batchnorm_mode(
    model: nn.Module, mode: BnMode, stats: BatchStats | None = None
) -> Iterator[None]:
    """BatchNorm for a saliency pass: never a function of the batch being differentiated.

    Inside the block every BatchNorm normalises each image with constant statistics, so an image's
    map depends on that image alone, and no running statistic is updated:

    - ``frozen``: the running statistics (what evaluation uses).
    - ``batch``: for modules in training mode, the batch statistics of the training forward
      (``stats``, from :func:`record_batch_stats` or :func:`batch_stats`) used as constants; modules
      already in eval mode keep their running statistics.

    Implemented by running the modules in eval mode with their statistic buffers swapped for the
    chosen constants (works for every ``_BatchNorm`` subclass, timm's BatchNormAct2d included: we set
    the flag, not ``.eval()``, so their children keep their modes). Restored on exit. Dropout and
    stochastic depth are :func:`no_stochastic_layers`'s job.

    Raises:
        ValueError: unknown mode; ``frozen`` with a BatchNorm that keeps no running statistics;
            ``batch`` without statistics for a training-mode BatchNorm.
    """
    if mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {mode!r}; valid modes: {', '.join(BN_MODES)}")
    norms = _batchnorms(model)
    saved = [(m, m.training, m.running_mean, m.running_var) for _, m in norms]
    guards = []
    try:
        for name, m in norms:
            if mode == "batch" and m.training:
                if stats is None or m not in stats:
                    # Not run by the training forward (e.g. an unused head): an error if it runs.
                    guards.append(m.register_forward_pre_hook(_missing_stats(name)))
                    m.training = False
                    continue
                mean, var = stats[m]
                ref = m.running_mean if m.running_mean is not None else m.weight
                if ref is not None:  # keep the buffers' dtype (batch statistics under autocast)
                    mean, var = mean.to(ref.dtype), var.to(ref.dtype)
                m.running_mean, m.running_var = mean, var  # buffers: plain assignment swaps them
            elif m.running_mean is None:
                raise ValueError(
                    f"bn_mode='frozen' needs running statistics, but BatchNorm {name!r} of "
                    f"{type(model).__name__} has track_running_stats=False"
                )
            m.training = False
        yield
    finally:
        for h in guards:
            h.remove()
        for m, training, mean, var in saved:
            m.training = training
            m.running_mean, m.running_var = mean, var


def _missing_stats(name: str) -> Callable[..., None]:
    def refuse(module: nn.Module, args: tuple) -> None:
        raise ValueError(
            f"bn_mode='batch' needs the training forward's statistics of BatchNorm {name!r} "
            "(record them with record_batch_stats, or use batch_stats)"
        )

    return refuse


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
    bn_stats: BatchStats | None = None,
    fast_conv: bool = True,
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
        bn_mode: BatchNorm statistics during the saliency pass, see :func:`batchnorm_mode`.
        bn_stats: for ``bn_mode="batch"``, the statistics of the training forward
            (:func:`record_batch_stats`); None computes them from ``x`` (one extra forward).
        fast_conv: use the batched conv double backward (:mod:`trainables.fast_conv`); only
            matters with create_graph=True, same values as the stock path.

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
    if bn_mode == "batch" and bn_stats is None:
        bn_stats = batch_stats(model, x.detach())
    fast = fast_conv_enabled() if fast_conv and create_graph else contextlib.nullcontext()
    with (
        torch.enable_grad(),
        no_stochastic_layers(model),
        batchnorm_mode(model, bn_mode, bn_stats),
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
