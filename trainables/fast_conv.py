"""conv2d with an explicit, batched double backward, for the saliency pass only.

Training a loss on a gradient map differentiates the conv backward again. Stock PyTorch does that
with ``_convolution_double_backward``, which for grouped and depthwise convolutions loops over the
groups and runs oddly shaped kernels (a saliency step measured 21-35x a plain step on an H200).
Here the input gradient of a conv is its own autograd Function, :class:`ConvInputGrad`, whose
backward is one forward conv and one weight-gradient kernel, each over the whole batch and all
groups at once. Results equal the stock path to rounding.

Routing: :func:`fast_conv_enabled` is a ``TorchFunctionMode`` that sends every ``torch.conv2d`` /
``F.conv2d`` call made inside it to :func:`fast_conv2d`. A mode, rather than swapping modules,
catches every caller (``nn.Conv2d``, smp's ``Conv2dStaticSamePadding`` and timm's ``Conv2dSame``,
which call ``F.conv2d`` themselves, functional code), leaves the model untouched, and is scoped to
the saliency forward, so the ordinary training forward keeps the stock kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Pair = tuple[int, int]


class Geometry(NamedTuple):
    """A conv2d's stride, numeric padding, dilation (int pairs) and groups."""

    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int


# Set by conv_input_grads_only(): the backward then skips weight and bias gradients. Like
# autograd's own kernels skip outputs the graph task does not need, which a custom Function
# cannot see (ctx.needs_input_grad is fixed at forward time).
_INPUT_GRADS_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "conv_input_grads_only", default=False
)


def _pair(value: int | Sequence[int], name: str) -> Pair:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise ValueError(f"conv2d {name} must be an int or a pair, got {value!r}")
    return values  # type: ignore[return-value]


def _input_grad(grad_out: torch.Tensor, weight: torch.Tensor, input_shape: Sequence[int], g: Geometry) -> torch.Tensor:  # fmt: skip
    # The input size is passed explicitly: with stride > 1 several input sizes give the same output
    # size (the output_padding of the transposed conv). The input itself is not read, so a
    # zero-stride placeholder stands in for it, as torch.nn.grad.conv2d_input does.
    placeholder = grad_out.new_empty(1).expand(tuple(input_shape))
    return torch.ops.aten.convolution_backward(
        grad_out, placeholder, weight, None, list(g.stride), list(g.padding), list(g.dilation),
        False, [0, 0], g.groups, (True, False, False),
    )[0]  # fmt: skip


def _weight_grad(
    grad_out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, g: Geometry, bias: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Weight (and bias) gradient of conv2d, one aten kernel, as the stock backward computes it."""
    _, d_weight, d_bias = torch.ops.aten.convolution_backward(
        grad_out, input, weight, [weight.shape[0]] if bias else None, list(g.stride),
        list(g.padding), list(g.dilation), False, [0, 0], g.groups, (False, True, bias),
    )  # fmt: skip
    return d_weight, d_bias


class ConvInputGrad(torch.autograd.Function):
    """``grad_input`` of conv2d as a function of ``(grad_out, weight)``, with a batched backward.

    ``apply(grad_out, weight, input_shape, geometry)``. The map a saliency generator returns is a
    chain of these; their backward is what a loss on the map runs.
    """

    @staticmethod
    def forward(grad_out, weight, input_shape, geometry):
        return _input_grad(grad_out, weight, input_shape, geometry)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        grad_out, weight, _, geometry = inputs
        ctx.save_for_backward(grad_out, weight)
        ctx.geometry = geometry

    @staticmethod
    def backward(ctx, h: torch.Tensor):
        # grad_input is bilinear in (grad_out, weight): <h, grad_input> is the conv of h with the
        # weight, paired with grad_out. So d/d grad_out = conv2d(h, W) (the forward conv) and
        # d/dW = the weight gradient with h as the input and grad_out as the output gradient.
        grad_out, weight = ctx.saved_tensors
        g = ctx.geometry
        d_grad_out = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_out = F.conv2d(h, weight, None, *g)
        if ctx.needs_input_grad[1]:
            d_weight, _ = _weight_grad(grad_out, h, weight, g)
        return d_grad_out, d_weight, None, None


class Conv2dFn(torch.autograd.Function):
    """conv2d whose input gradient is a :class:`ConvInputGrad` (differentiable, batched).

    ``apply(input, weight, bias, geometry)`` with int-pair geometry and numeric padding. The weight
    gradient uses aten's ``convolution_backward`` (its own double backward is stock; the saliency
    loss never differentiates a weight gradient).
    """

    @staticmethod
    def forward(input, weight, bias, geometry):
        return F.conv2d(input, weight, bias, *geometry)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        input, weight, bias, geometry = inputs
        ctx.save_for_backward(input, weight)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        input, weight = ctx.saved_tensors
        g = ctx.geometry
        d_input = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_input = ConvInputGrad.apply(grad_out, weight, tuple(input.shape), g)
        if not _INPUT_GRADS_ONLY.get() and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_weight, d_bias = _weight_grad(
                grad_out, input, weight, g, bias=ctx.has_bias and ctx.needs_input_grad[2]
            )
        return d_input, d_weight, d_bias, None


def _same_padding(
    input: torch.Tensor, weight: torch.Tensor, dilation: Pair
) -> tuple[torch.Tensor, Pair]:
    """Turn padding="same" into numbers; pad the input first when the padding is asymmetric."""
    totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[-2:])]
    lefts = [t // 2 for t in totals]
    if all(t % 2 == 0 for t in totals):
        return input, (lefts[0], lefts[1])
    # Like torch, put the odd extra pixel at the bottom / right.
    pads = [lefts[1], totals[1] - lefts[1], lefts[0], totals[0] - lefts[0]]
    return F.pad(input, pads), (0, 0)


def _autocast_dtype(input: torch.Tensor) -> torch.dtype | None:
    device_type = input.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def fast_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` with the same arguments and values, through :class:`Conv2dFn` (its signature
    is F.conv2d's, which it stands in for: hence seven parameters).

    Falls back to ``F.conv2d`` when nothing needs a gradient or the input is not a 4-D batch.
    Under autocast, input, weight and bias are cast to the autocast dtype first (as autocast does
    for conv2d), so the saved tensors and the gradients agree in dtype.
    """
    tensors = [t for t in (input, weight, bias) if t is not None]
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors) or input.dim() != 4:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    stride_, dilation_ = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding_ = (0, 0)
        elif padding == "same":
            if stride_ != (1, 1):
                raise ValueError("conv2d padding='same' is not supported for strided convolutions")
            input, padding_ = _same_padding(input, weight, dilation_)
        else:
            raise ValueError(f"conv2d padding must be 'valid', 'same' or numbers, got {padding!r}")
    else:
        padding_ = _pair(padding, "padding")
    geometry = Geometry(stride_, padding_, dilation_, groups)
    dtype = _autocast_dtype(input)
    if dtype is None:
        return Conv2dFn.apply(input, weight, bias, geometry)
    input, weight = input.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    with torch.autocast(input.device.type, enabled=False):
        return Conv2dFn.apply(input, weight, bias, geometry)


class _FastConvMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # F.conv2d is torch.conv2d; nn.Conv2d and the same-padding convs of smp / timm call it.
        if func is torch.conv2d:
            return fast_conv2d(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def fast_conv_enabled() -> Iterator[None]:
    """Route every ``torch.conv2d`` / ``F.conv2d`` in this block (this thread) to fast_conv2d.

    Wrap the saliency forward in it; the backward can run anywhere.
    """
    with _FastConvMode():
        yield


@contextlib.contextmanager
def conv_input_grads_only() -> Iterator[None]:
    """Skip weight and bias gradients in the Conv2dFn backward run inside this block.

    For a ``torch.autograd.grad(score, x)`` whose inputs include no conv weight: stock conv
    kernels skip gradients the call does not ask for, but a custom Function cannot tell, and
    computing them would add a weight-gradient kernel per layer to every saliency pass.
    Multithreaded backward is turned off so the backward runs on this thread and sees the flag.
    """
    token = _INPUT_GRADS_ONLY.set(True)
    try:
        with torch.autograd.set_multithreading_enabled(False):
            yield
    finally:
        _INPUT_GRADS_ONLY.reset(token)
