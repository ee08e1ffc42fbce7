"""BatchNorm and dropout in a saliency pass: a map is a function of its own image only.

A BatchNorm layer in training mode normalises each image with statistics of the whole batch, so the
gradient of image i's score w.r.t. x_i would include every other image's score (cosine 0.17-0.36
with image i's own map, measured). In a saliency pass BatchNorm therefore never computes statistics
from the batch it differentiates: ``bn_mode="batch"`` uses the statistics the training forward
computed (recorded by :func:`record_batch_stats`), as constants; ``"frozen"`` uses the running
statistics (evaluation). Dropout and stochastic depth are off (:func:`no_stochastic_layers`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

BnMode = Literal["frozen", "batch"]
BN_MODES: tuple[str, ...] = ("frozen", "batch")


def class_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.classify(x)``: the (B, K) class logits every generator explains."""
    classify = getattr(model, "classify", None)
    if classify is None:
        raise TypeError(
            f"{type(model).__name__} has no classify(x) method returning class logits (B, K)"
        )
    return classify(x)


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
            class_logits(model, x)
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
