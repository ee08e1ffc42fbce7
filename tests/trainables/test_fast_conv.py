"""fast_conv: stock conv2d values and derivatives, without per-group double-backward loops."""

from __future__ import annotations

import collections

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders._efficientnet import Conv2dStaticSamePadding
from timm.layers import create_conv2d
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tests.tiny import StageOutputs
from trainables.activations import patch_activations
from trainables.fast_conv import (
    ConvInputGrad,
    Geometry,
    conv_input_grads_only,
    fast_conv2d,
    fast_conv_enabled,
)
from trainables.generators import list_generators
from trainables.saliency import PassConfig, generator_map, to_heatmap

pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# (in_ch, out_ch, kernel, input size, stride, padding, dilation, groups, bias)
GEOMETRIES = [
    (2, 3, 3, 7, 1, 1, 1, 1, True),
    (4, 4, 3, 9, 2, 1, 1, 4, False),  # depthwise, stride 2, odd size (output_padding 0)
    (4, 4, 3, 8, 2, 1, 1, 4, True),  # depthwise, stride 2, even size (output_padding 1)
    (4, 6, 3, 9, 2, (2, 1), 2, 2, True),  # grouped, dilated, asymmetric padding
    (3, 6, (3, 1), 8, (2, 1), 0, (1, 2), 3, False),
    (2, 2, 4, 7, 1, "same", 1, 2, True),  # even kernel: torch pads one extra at bottom/right
    (2, 2, 3, 7, 1, "valid", 2, 1, True),
]


def _conv_args(geometry, seed: int = 0):
    cin, cout, k, size, stride, padding, dilation, groups, bias = geometry
    kh, kw = (k, k) if isinstance(k, int) else k
    x = _rand(2, cin, size, size + 1, seed=seed).requires_grad_()
    w = _rand(cout, cin // groups, kh, kw, seed=seed + 1).requires_grad_()
    b = _rand(cout, seed=seed + 2).requires_grad_() if bias else None
    return (x, w, b), {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fast_conv2d_matches_f_conv2d(geometry) -> None:
    (x, w, b), kw = _conv_args(geometry)
    tensors = [t for t in (x, w, b) if t is not None]
    want = F.conv2d(x, w, b, **kw)
    got = fast_conv2d(x, w, b, **kw)
    assert "Conv2dFn" in type(got.grad_fn).__name__
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = _rand(*want.shape, seed=9)
    grads_want = torch.autograd.grad(want, tensors, g)
    grads_got = torch.autograd.grad(got, tensors, g)
    torch.testing.assert_close(grads_got, grads_want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES[1:5])
def test_fast_conv2d_gradgradcheck(geometry) -> None:
    (x, w, b), kw = _conv_args(geometry)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def conv(x: torch.Tensor, w: torch.Tensor, *bias: torch.Tensor) -> torch.Tensor:
        return fast_conv2d(x, w, bias[0] if bias else None, **kw)

    assert torch.autograd.gradcheck(conv, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(conv, inputs, fast_mode=True)


@pytest.mark.parametrize("geometry", GEOMETRIES[1:5])
def test_conv_input_grad_function(geometry) -> None:
    (x, w, _), kw = _conv_args(geometry)
    stride, padding, dilation = (
        tuple(v) if isinstance(v, tuple) else (v, v)
        for v in (kw["stride"], kw["padding"], kw["dilation"])
    )
    out = F.conv2d(x, w, None, **kw)
    grad_out = _rand(*out.shape, seed=3).requires_grad_()
    (want,) = torch.autograd.grad(out, x, grad_out)
    args = (tuple(x.shape), Geometry(stride, padding, dilation, kw["groups"]))
    got = ConvInputGrad.apply(grad_out, w, *args)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    def input_grad(grad_out: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ConvInputGrad.apply(grad_out, w, *args)

    assert torch.autograd.gradcheck(input_grad, (grad_out, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(input_grad, (grad_out, w), fast_mode=True)


class _Net(nn.Module):
    """Depthwise + grouped convs, stride 2, dilation, padding, BatchNorm; ReLU or SiLU."""

    def __init__(self, act: type[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            act(),
            nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8),
            nn.BatchNorm2d(8),
            act(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4),
            act(),
            nn.Conv2d(12, 12, 1),
            act(),
        )
        self.classification_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3)
        )
        self.encoder = StageOutputs(self.features, ends=(3, 6, 8, 10))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classification_head(self.encoder(x)[-1])


def _map_and_grads(model, x, target, name, fast, bn_mode="batch", dtype=torch.float64):
    model.zero_grad()
    torch.manual_seed(0)  # same dropout / stochastic-depth draws in both runs
    raw = generator_map(
        name, model, x, target, create_graph=True, how=PassConfig(bn_mode=bn_mode, fast_conv=fast)
    )
    heat = to_heatmap(raw)
    gaze = torch.linspace(0.05, 0.95, heat.numel(), dtype=dtype).reshape(heat.shape)
    F.binary_cross_entropy(heat.clamp(1e-6, 1 - 1e-6), gaze).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    return raw.detach(), grads


def _backward_node_names(tensor: torch.Tensor) -> set[str]:
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


@pytest.mark.parametrize("name", list_generators())
@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
def test_saliency_fast_equals_stock_float64(name: str, act: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = _Net(act).double().train()
    patch_activations(model)
    x = _rand(3, 1, 13, 13)
    target = torch.tensor([0, 1, 2])
    stock_map, stock_grads = _map_and_grads(model, x, target, name, fast=False)
    fast_map, fast_grads = _map_and_grads(model, x, target, name, fast=True)
    torch.testing.assert_close(fast_map, stock_map, rtol=1e-10, atol=1e-12)
    for got, want in zip(fast_grads, stock_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert sum(g.abs().sum() > 0 for g in fast_grads) >= 4
    if name != "gradcam":  # Grad-CAM's graph stops at the last feature map: no conv double backward
        fast = generator_map(name, model, x, target, create_graph=True)
        stock = generator_map(
            name, model, x, target, create_graph=True, how=PassConfig(fast_conv=False)
        )
        assert "ConvInputGradBackward" in _backward_node_names(fast)
        assert "ConvolutionBackwardBackward0" not in _backward_node_names(fast)
        assert "ConvolutionBackwardBackward0" in _backward_node_names(stock)


class _CountConvKernels(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "convolution" in str(func.overloadpacket):
            self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _map_loss_kernel_calls(groups: int, fast: bool) -> int:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=groups),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    net.classify = net.forward  # type: ignore[attr-defined]
    patch_activations(net)
    raw = generator_map(
        "gbp", net, torch.randn(2, 1, 8, 8), 0, create_graph=True, how=PassConfig(fast_conv=fast)
    )
    with _CountConvKernels() as counter:
        raw.square().sum().backward()
    return sum(counter.calls.values())


def test_double_backward_kernel_count_does_not_grow_with_groups() -> None:
    fast = {g: _map_loss_kernel_calls(g, fast=True) for g in (1, 4, 16)}
    stock = {g: _map_loss_kernel_calls(g, fast=False) for g in (1, 4, 16)}
    assert fast[1] == fast[4] == fast[16]
    assert stock[16] > stock[4] > stock[1]  # the stock per-group loop this module removes


def test_mode_routes_every_conv2d_caller() -> None:
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    callers = {
        "nn.Conv2d": nn.Conv2d(2, 4, 3, padding=1),
        "nn.Conv2d reflect": nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
        "smp Conv2dStaticSamePadding": Conv2dStaticSamePadding(2, 4, 3, stride=2, image_size=9),
        "timm same-padding conv": create_conv2d(2, 4, 3, stride=2, padding="same"),
        "F.conv2d": lambda t: F.conv2d(t, torch.ones(4, 2, 3, 3)),
        "torch.conv2d": lambda t: torch.conv2d(t, torch.ones(4, 1, 3, 3), groups=2),
    }
    for label, conv in callers.items():
        stock = conv(x)
        with fast_conv_enabled():
            fast = conv(x)
            with torch.no_grad():
                assert fast_conv2d(x, torch.ones(4, 2, 3, 3)).grad_fn is None
        assert "Conv2dFnBackward" in _backward_node_names(fast), label
        assert "Conv2dFnBackward" not in _backward_node_names(stock), label
        torch.testing.assert_close(fast, stock, msg=label)


def test_input_grads_only_skips_weight_gradient() -> None:
    (x, w, b), kw = _conv_args(GEOMETRIES[3])
    out = fast_conv2d(x, w, b, **kw)
    with conv_input_grads_only():
        dx, dw, db = torch.autograd.grad(out.sum(), (x, w, b), retain_graph=True, allow_unused=True)
    assert dw is None and db is None
    torch.testing.assert_close(dx, torch.autograd.grad(out.sum(), x)[0])


def test_autocast_bfloat16_matches_stock() -> None:
    torch.manual_seed(0)
    model = _Net(nn.SiLU).train()
    patch_activations(model)
    x = torch.randn(2, 1, 13, 13)
    results = []
    for fast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_map_and_grads(model, x, 0, "gbp", fast, dtype=torch.float32))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=2e-2, atol=1e-5)
    for got, want in zip(results[1][1], results[0][1], strict=True):
        # bfloat16 kernels sum in different orders: compare against each tensor's scale.
        torch.testing.assert_close(got, want, rtol=0, atol=1e-2 * float(want.abs().max()) + 1e-6)


def test_real_smp_efficientnet_b0_fast_equals_stock() -> None:
    torch.manual_seed(0)
    unet = smp.Unet(
        "efficientnet-b0", encoder_weights=None, in_channels=1, classes=1, aux_params={"classes": 3}
    )

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def classify(self, x: torch.Tensor) -> torch.Tensor:
            return self.unet.classification_head(self.unet.encoder(x)[-1])

    model = Classifier().train()
    patch_activations(model)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([1, 2])
    stock_map, stock_grads = _map_and_grads(model, x, target, "gbp", False, dtype=torch.float32)
    fast_map, fast_grads = _map_and_grads(model, x, target, "gbp", True, dtype=torch.float32)
    scale = stock_map.abs().max()
    torch.testing.assert_close(fast_map / scale, stock_map / scale, rtol=1e-4, atol=1e-5)
    nonzero = 0
    for got, want in zip(fast_grads, stock_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-9)
        nonzero += bool(want.abs().sum() > 0)
    assert nonzero > 50
