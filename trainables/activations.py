"""Rectifier activations whose backward rule is chosen at backward time.

GBP and deconvNet differ from the plain input gradient only in how the gradient passes the
rectifiers. captum implements them with hooks on ``nn.ReLU`` that return detached maps, so on
EfficientNet (SiLU everywhere) its "GBP" is the plain gradient and a loss on it trains nothing.
Here every ReLU / SiLU module is swapped for a :class:`RuleActivation` whose backward reads the rule
from :func:`backward_rule` when the backward runs, written in differentiable torch ops, so a map
taken with ``torch.autograd.grad(..., create_graph=True)`` under the guided rule can itself be
trained by an outer ``loss.backward()`` that runs under the normal rule (the default).

Rules, for an activation ``y = f(x)`` receiving the gradient ``g = dL/dy``:

- ``normal``: ``g * f'(x)`` (the true derivative).
- ``guided`` (guided backprop): positive input and positive gradient,
  ``g.clamp(min=0) * f'(x) * 1[x > 0]``. For ReLU ``f'(x) = 1[x > 0]``.
- ``deconv`` (deconvNet): ``g.clamp(min=0)``, whatever the forward input. deconvNet replaces the
  rectifier's input-dependent mask by a rectification of the gradient; multiplying by SiLU's
  derivative would keep the soft input mask and, as SiLU sharpens toward ReLU, turn "deconv" into
  guided backprop (cosine 0.97-0.99 between the two maps on efficientnet-b0). Dropping it makes
  both rules converge to their ReLU versions as SiLU sharpens (``x * sigmoid(beta * x)``,
  beta -> infinity; tested).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

BackwardRule = Literal["normal", "guided", "deconv"]
ActivationKind = Literal["relu", "silu"]
RULES: tuple[str, ...] = ("normal", "guided", "deconv")
KINDS: tuple[str, ...] = ("relu", "silu")
M = TypeVar("M", bound=nn.Module)

# A contextvar is per thread. The autograd engine runs CUDA backward on its own device threads,
# which would not see it; backward_rule therefore also turns multithreaded backward off (a
# thread-local switch), so the backward it wraps runs on the thread that set the rule. A backward
# outside any backward_rule reads the default, "normal", on whichever thread it runs.
_RULE: contextvars.ContextVar[str] = contextvars.ContextVar("backward_rule", default="normal")


@contextlib.contextmanager
def backward_rule(rule: BackwardRule) -> Iterator[None]:
    """Use ``rule`` in every RuleActivation backward run inside this block on this thread.

    Args:
        rule: "normal" (true derivative), "guided" (guided backprop) or "deconv" (deconvNet).

    Raises:
        ValueError: unknown rule (the message lists the valid ones).
    """
    if rule not in RULES:
        raise ValueError(f"unknown backward rule {rule!r}; valid rules: {', '.join(RULES)}")
    token = _RULE.set(rule)
    try:
        with torch.autograd.set_multithreading_enabled(False):
            yield
    finally:
        _RULE.reset(token)


def current_backward_rule() -> str:
    """The rule a RuleActivation backward would use on this thread now."""
    return _RULE.get()


def _relu_derivative(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def _silu(x: torch.Tensor, beta: float) -> torch.Tensor:
    return F.silu(x) if beta == 1.0 else x * torch.sigmoid(beta * x)


def _silu_derivative(x: torch.Tensor, beta: float) -> torch.Tensor:
    # Written out (not torch's silu_backward) so that it is differentiable again.
    s = torch.sigmoid(beta * x)
    return s * (1 + beta * x * (1 - s))


def _relu(x: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.relu(x)


def _relu_derivative(x: torch.Tensor, beta: float) -> torch.Tensor:
    return (x > 0).to(x.dtype)


_FORWARD: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {"relu": _relu, "silu": _silu}
_DERIVATIVE: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "relu": _relu_derivative,
    "silu": _silu_derivative,
}


def rule_gradient(
    grad: torch.Tensor, x: torch.Tensor, kind: str, rule: str, beta: float = 1.0
) -> torch.Tensor:
    """Gradient passed to the activation's input under ``rule`` (pure, differentiable)."""
    if rule == "deconv":
        return grad.clamp(min=0)
    derivative = _DERIVATIVE[kind](x, beta)
    if rule == "normal":
        return grad * derivative
    if rule == "guided":
        return grad.clamp(min=0) * derivative * (x > 0).to(x.dtype)
    raise ValueError(f"unknown backward rule {rule!r}; valid rules: {', '.join(RULES)}")


class _RuleActivationFn(torch.autograd.Function):
    # Not once_differentiable: the backward is plain torch ops, so autograd records it when the
    # caller asks for create_graph=True and the map can be differentiated again.

    @staticmethod
    def forward(x: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
        return _FORWARD[kind](x, beta)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, kind, beta = inputs
        ctx.kind, ctx.beta = kind, beta
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return rule_gradient(grad, x, ctx.kind, _RULE.get(), ctx.beta), None, None


class RuleActivation(nn.Module):
    """ReLU or SiLU whose backward follows the rule of :func:`backward_rule` (see module doc).

    ``beta`` sharpens SiLU to ``x * sigmoid(beta * x)`` (tends to ReLU as beta grows); 1 is SiLU.
    """

    def __init__(self, kind: ActivationKind = "relu", beta: float = 1.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown activation kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.kind, self.beta = kind, float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RuleActivationFn.apply(x, self.kind, self.beta)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", beta={self.beta:g}" if self.beta != 1.0 else "")


def _optional_classes(module_name: str, names: tuple[str, ...]) -> list[type]:
    """Classes that exist in an optional module (older smp, efficientnet_pytorch, timm)."""
    try:
        module = __import__(module_name, fromlist=list(names))
    except ImportError:
        return []
    return [
        getattr(module, name) for name in names if isinstance(getattr(module, name, None), type)
    ]


def swappable_activation_types() -> dict[type, str]:
    """Module class -> RuleActivation kind, for every activation class patch_activations swaps.

    nn.ReLU and nn.SiLU (smp >= 0.6 efficientnet and timm's efficientnets use nn.SiLU), timm's
    ``Swish`` / ``SwishMe`` and the ``Swish`` / ``MemoryEfficientSwish`` of older smp and
    efficientnet_pytorch (a custom Function without double backward) where installed.
    """
    table: dict[type, str] = {nn.ReLU: "relu", nn.SiLU: "silu"}
    swish_sources = {
        "timm.layers.activations": ("Swish",),
        "timm.layers.activations_me": ("SwishMe",),
        "segmentation_models_pytorch.encoders._efficientnet": ("Swish", "MemoryEfficientSwish"),
        "efficientnet_pytorch.utils": ("Swish", "MemoryEfficientSwish"),
    }
    for module_name, names in swish_sources.items():
        for cls in _optional_classes(module_name, names):
            table[cls] = "silu"
    return table


# Rectifier-like activations left with their true derivative; patch_activations logs them because
# a GBP / deconvNet map of a model built on them is not what its name says.
_UNSUPPORTED: tuple[type, ...] = (
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)


def patch_activations(model: nn.Module) -> int:
    """Swap, in place, every ReLU / SiLU / Swish submodule of ``model`` for a RuleActivation.

    In-place ReLUs become out-of-place (the rule backward needs the input). Normal-rule forward and
    gradients are unchanged. Call once at model construction, e.g. at the end of
    ``MultiTaskUNet.__init__``: ``patch_activations(self)``. Calling again is harmless (returns 0).
    Only registered submodules are seen: activations called as functions in a ``forward``
    (``F.relu(x)``) keep their true derivative. Other rectifiers (GELU, ReLU6, ...) are kept and
    logged as a warning with their counts.

    Args:
        model: the module to patch (its children, recursively).

    Returns:
        The number of activation modules replaced.

    Raises:
        TypeError: ``model`` is itself an activation (it cannot be replaced in place).
    """
    table = swappable_activation_types()
    if type(model) in table:
        raise TypeError(
            f"{type(model).__name__} is itself an activation; wrap it in a container to patch it"
        )
    replaced = 0
    unsupported: Counter[str] = Counter()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            kind = table.get(type(child))
            if kind is not None:
                setattr(parent, name, RuleActivation(kind))
                replaced += 1
            elif isinstance(child, _UNSUPPORTED):
                unsupported[type(child).__name__] += 1
    if unsupported:
        log.warning(
            "patch_activations kept %s with their true derivative: GBP / deconvNet maps of %s "
            "treat them as linear layers",
            dict(unsupported),
            type(model).__name__,
        )
    return replaced


def with_rule_activations(model: M) -> M:
    """Patch ``model`` in place and return it: ``net = with_rule_activations(Net())``."""
    patch_activations(model)
    return model
