"""The registry of heatmap generators: ``fn(model, x, target, *, create_graph) -> raw map``.

A generator explains ``model.classify(x)``'s score for the target class as a map of the input
(``trainables.saliency`` holds the machinery and :func:`trainables.saliency.generator_map` calls a
generator with the right BatchNorm and dropout settings). Registering one with ``training=True``
crosses it with the paper's model sets, so it gets its ``set1-<name>`` / ``set2-<name>`` /
``set3-<name>`` arms automatically (``trainables.model_sets``); tests run every registered name.
Adding a generator is one decorated function in this file.

Torch is imported on first use (``lazy_module``), so listing generators and arms stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import Registry, lazy_module

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainables.saliency import Generator

S = lazy_module("trainables.saliency")
GENERATORS: Registry[Generator] = Registry("generator")


def register_generator(name: str, *, training: bool = False, summary: str = ""):
    """Decorator: register ``fn(model, x, target, *, create_graph) -> (B, C, H, W)`` as ``name``.

    Args:
        name: the registry name.
        training: cross it with the paper's model sets (one arm per set that uses a map).
        summary: one line for listings.

    Raises:
        ValueError: ``name`` is already registered.
    """
    return GENERATORS.register(name, training=training, summary=summary)


def get_generator(name: str) -> Generator:
    """The generator registered as ``name`` (KeyError listing the registered ones)."""
    return GENERATORS.get(name)


def list_generators() -> list[str]:
    """Registered generator names, in registration order."""
    return GENERATORS.names()


def training_generators() -> tuple[str, ...]:
    """Generators registered with ``training=True`` (crossed with the paper's model sets)."""
    return tuple(e.name for e in GENERATORS if e.meta["training"])


@register_generator("gbp", training=True, summary="guided backpropagation (Springenberg 2015)")
def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Guided backprop: the input gradient with positive input and gradient at each rectifier."""
    return S.input_gradient("guided", model, x, target, create_graph)


@register_generator("deconv", training=True, summary="deconvNet (Zeiler & Fergus 2014)")
def deconvnet(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """deconvNet: only the positive gradient passes each rectifier, whatever its input."""
    return S.input_gradient("deconv", model, x, target, create_graph)


@register_generator("gradient", summary="plain input gradient (Simonyan 2014)")
def input_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Plain input gradient of the target-class logit (saliency map of Simonyan et al.)."""
    return S.input_gradient("normal", model, x, target, create_graph)


@register_generator("logprob-gradient", summary="input gradient of the summed log-probabilities")
def logprob_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Input gradient of the sum of all classes' log-probabilities: the explanation that Ross et
    al. 2017 ("right for the right reasons") penalise outside the annotation."""
    return S.input_gradient("normal", model, x, target, create_graph, score=S.logprob_score)


@register_generator("gradcam", summary="Grad-CAM on the last encoder feature map (Selvaraju 2017)")
def gradcam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Grad-CAM of the classification head's input, upsampled to the image: (B, 1, H, W)."""
    return S.gradcam(model, x, target, create_graph=create_graph)


@register_generator("gradcam-mid", summary="Grad-CAM on the encoder's stride-8 feature map")
def gradcam_mid(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Grad-CAM three stages before the last (stride 8: 8x8 at 64 px instead of 2x2)."""
    return S.gradcam(model, x, target, create_graph=create_graph, stage=-3)
