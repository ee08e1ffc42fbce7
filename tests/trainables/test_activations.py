"""RuleActivation rules against independent formulas and torch autograd; patching real models."""

from __future__ import annotations

import copy
import logging
import threading

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from timm.layers.activations import Swish
from timm.layers.activations_me import SwishMe
from torch import nn

from trainables.activations import (
    KINDS,
    RULES,
    RuleActivation,
    backward_rule,
    current_backward_rule,
    patch_activations,
    with_rule_activations,
)

TORCH_ACT = {"relu": torch.relu, "silu": F.silu}


pytestmark = pytest.mark.usefixtures("one_thread")


def _input(seed: int = 0) -> torch.Tensor:
    # Away from 0 so finite differences never straddle the ReLU kink.
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x + 0.1 * x.sign()).requires_grad_()


def _expected(kind: str, rule: str, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Rules spelled out with torch.where and torch's own derivative (autograd of F.silu / relu)."""
    x = x.detach()
    xr = x.clone().requires_grad_()
    (true_derivative,) = torch.autograd.grad(TORCH_ACT[kind](xr).sum(), xr)
    if rule == "normal":
        return g * true_derivative
    g_pos = torch.where(g > 0, g, torch.zeros_like(g))
    if rule == "guided":
        return torch.where(x > 0, g_pos * true_derivative, torch.zeros_like(g))
    return g_pos  # deconv: the positive gradient, whatever the input (ReLU and SiLU alike)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", RULES)
def test_rule_backward_matches_formula(kind: str, rule: str) -> None:
    x = _input()
    g = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = RuleActivation(kind)(x)
    assert torch.equal(y, TORCH_ACT[kind](x))
    with backward_rule(rule):
        (grad,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(grad, _expected(kind, rule, x, g), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", RULES)
def test_sharpened_silu_rule_tends_to_relu(rule: str) -> None:
    """x * sigmoid(beta * x): forward and every rule's backward approach ReLU's as beta grows."""
    x = _input()
    g = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with backward_rule(rule):
        (relu_grad,) = torch.autograd.grad(RuleActivation("relu")(x), x, g)
        y = RuleActivation("silu", beta=1000.0)(x)
        (sharp_grad,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(y, torch.relu(x), rtol=0, atol=1e-3)
    torch.testing.assert_close(sharp_grad, relu_grad, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        RuleActivation("silu", beta=0.0)


def test_rules_differ_where_they_should() -> None:
    x, g = _input(), torch.randn(4, 5, dtype=torch.float64)
    grads = {}
    for rule in RULES:
        with backward_rule(rule):
            (grads[rule],) = torch.autograd.grad(RuleActivation("relu")(x), x, g)
    assert (grads["guided"] >= 0).all() and (grads["deconv"] >= 0).all()
    assert not torch.equal(grads["guided"], grads["deconv"])  # deconv ignores the input sign
    assert not torch.equal(grads["normal"], grads["guided"])  # normal keeps negative gradients


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", RULES)
def test_rule_backward_is_differentiable(kind: str, rule: str) -> None:
    """The rule's backward G(x, g), taken with create_graph=True, has correct derivatives."""
    act = RuleActivation(kind)

    def rule_gradient(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        with backward_rule(rule):
            (grad,) = torch.autograd.grad(act(x), x, g, create_graph=True)
        return grad

    g = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = (g + 0.1 * g.sign()).requires_grad_()  # away from the clamp kink at 0
    assert torch.autograd.gradcheck(rule_gradient, (_input(), g))
    assert torch.autograd.gradgradcheck(rule_gradient, (_input(), g))
    if rule == "normal":
        assert torch.autograd.gradgradcheck(act, (_input(),))


def test_rule_is_read_at_backward_time() -> None:
    x, g = _input(), -torch.ones(4, 5, dtype=torch.float64)
    with backward_rule("guided"):
        y = RuleActivation("relu")(x)
    (grad,) = torch.autograd.grad(y, x, g)  # forward under guided, backward under normal
    assert (grad < 0).any()
    y = RuleActivation("relu")(x)
    with backward_rule("guided"):
        (grad,) = torch.autograd.grad(y, x, g)
    assert torch.equal(grad, torch.zeros_like(grad))
    assert current_backward_rule() == "normal"


def test_rule_does_not_leak_into_other_threads() -> None:
    x, g = _input(), torch.randn(4, 5, dtype=torch.float64)
    inside, done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def guided_thread() -> None:
        with backward_rule("guided"):
            inside.set()
            done.wait(timeout=10)

    worker = threading.Thread(target=guided_thread)
    worker.start()
    assert inside.wait(timeout=10)
    seen["rule"] = current_backward_rule()
    (seen["grad"],) = torch.autograd.grad(RuleActivation("silu")(x), x, g)
    done.set()
    worker.join()
    assert seen["rule"] == "normal"
    torch.testing.assert_close(seen["grad"], _expected("silu", "normal", x, g))


def test_bad_names_list_valid_ones() -> None:
    bad_rule = "guided-bp"
    with pytest.raises(ValueError, match="normal, guided, deconv"), backward_rule(bad_rule):
        pass
    with pytest.raises(ValueError, match="relu, silu"):
        RuleActivation("gelu")  # type: ignore[arg-type]


class _Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.SiLU(), Swish(), SwishMe(), nn.GELU()
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_patch_activations_swaps_known_classes(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    zoo = _Zoo()
    x = torch.randn(2, 1, 4, 4)
    reference = copy.deepcopy(zoo)(x)
    with caplog.at_level(logging.WARNING, logger="trainables.activations"):
        assert patch_activations(zoo) == 5
    assert "GELU" in caplog.text
    kinds = [m.kind for m in zoo.modules() if isinstance(m, RuleActivation)]
    assert kinds == ["relu", "silu", "silu", "silu", "relu"]
    assert not any(isinstance(m, (nn.ReLU, nn.SiLU, Swish, SwishMe)) for m in zoo.modules())
    assert isinstance(zoo.body[5], nn.GELU)
    x_in = x.clone()
    torch.testing.assert_close(zoo(x_in), reference)
    assert torch.equal(x_in, x)  # the former in-place ReLU no longer writes into its input
    assert patch_activations(zoo) == 0
    assert with_rule_activations(zoo) is zoo
    with pytest.raises(TypeError, match="itself an activation"):
        patch_activations(nn.ReLU())


class _SmpClassifier(nn.Module):
    """The classify() contract of trainables.model.MultiTaskUNet, on a bare smp.Unet."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.unet(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.classification_head(self.unet.encoder(x)[-1])


def _activation_classes(model: nn.Module) -> set[str]:
    names = {"ReLU", "ReLU6", "SiLU", "Swish", "SwishMe", "MemoryEfficientSwish", "GELU", "Sigmoid"}
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in names}


@pytest.mark.parametrize(
    ("encoder", "activations", "replaced"),
    [
        # smp 0.6 efficientnet-b0: 17 SiLU in the encoder (SE keeps its sigmoid), 10 decoder ReLUs.
        ("efficientnet-b0", {"SiLU", "ReLU"}, 27),
        # timm's test_efficientnet: 10 SiLU (inside BatchNormAct2d / SE), 10 decoder ReLUs.
        ("tu-test_efficientnet", {"SiLU", "Sigmoid", "ReLU"}, 20),
    ],
)
def test_patched_real_model_keeps_normal_forward_and_gradients(
    encoder: str, activations: set[str], replaced: int
) -> None:
    torch.manual_seed(0)
    unet = smp.Unet(
        encoder, encoder_weights=None, in_channels=1, classes=1, aux_params={"classes": 3}
    )
    model = _SmpClassifier(unet).eval()  # eval: no dropout, so both copies see the same function
    assert activations <= _activation_classes(model)
    patched = copy.deepcopy(model)
    assert patch_activations(patched) == replaced
    assert _activation_classes(patched) & {"SiLU", "ReLU"} == set()
    x = torch.rand(2, 1, 32, 32)
    outputs, grads = [], []
    for net in (model, patched):
        xr = x.clone().requires_grad_()
        mask, logits = net(xr)
        loss = mask.square().mean() + logits[:, 1].sum() + net.classify(xr)[:, 0].sum()
        grads.append(torch.autograd.grad(loss, [xr, *net.parameters()], allow_unused=True))
        outputs.append((mask, logits))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    for got, want in zip(grads[1], grads[0], strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
