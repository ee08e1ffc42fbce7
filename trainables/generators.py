"""The registry of heatmap generators: ``fn(model, x, target, *, create_graph) -> raw map``.

A generator explains ``model.classify(x)``'s score for the target class as a map of the input
(``trainables.saliency`` holds the machinery and :func:`trainables.saliency.generator_map` calls a
generator with the right BatchNorm and dropout settings). What the project knows about a generator
lives on its entry: its ``title`` (figures, panels), ``training`` (crossed with the paper's model
sets: ``set1-<name>`` / ``set2-<name>`` / ``set3-<name>`` arms, ``trainables.model_sets``),
``paper`` (those arms are among the paper's default eight; only GBP and deconvNet), ``probe``
(scored on every model at test time, to compare arms map for map) and ``panel`` (drawn in the
heatmap panels). Tests run every registered name. Adding a generator is one decorated function.

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


ROLES: tuple[str, ...] = ("training", "paper", "probe", "panel")
"""What a generator is used for (``register_generator``'s ``roles``):

- training: crossed with the paper's model sets (one arm per set that uses a map);
- paper: its crossed arms are among the paper's default arms (implies training);
- probe: its map is scored on every model at test time (``explain/test.csv``, map "probe");
- panel: its map is drawn in the heatmap panels of every trial.
"""


def register_generator(name: str, *, title: str, roles: tuple[str, ...] = (), summary: str = ""):
    """Decorator: register ``fn(model, x, target, *, create_graph) -> (B, C, H, W)`` as ``name``.

    Args:
        name: the registry name.
        title: how figures and panels name its map (e.g. "GBP map").
        roles: any of :data:`ROLES`.
        summary: one line for listings.

    Raises:
        ValueError: ``name`` is already registered, or a role is unknown.
    """
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"generator {name!r}: unknown roles {unknown}; valid: {', '.join(ROLES)}")
    paper = "paper" in roles
    meta = {"title": title, "training": "training" in roles or paper, "paper": paper}
    return GENERATORS.register(
        name, **meta, probe="probe" in roles, panel="panel" in roles, summary=summary
    )


def get_generator(name: str) -> Generator:
    """The generator registered as ``name`` (KeyError listing the registered ones)."""
    return GENERATORS.get(name)


def list_generators() -> list[str]:
    """Registered generator names, in registration order."""
    return GENERATORS.names()


def _with(flag: str) -> tuple[str, ...]:
    return tuple(e.name for e in GENERATORS if e.meta[flag])


def training_generators() -> tuple[str, ...]:
    """Generators crossed with the paper's model sets (``training`` or ``paper``)."""
    return _with("training")


def paper_generators() -> tuple[str, ...]:
    """Generators whose crossed arms are among the paper's default arms."""
    return _with("paper")


def probe_generators() -> tuple[str, ...]:
    """Generators scored on every model at test time."""
    return _with("probe")


def panel_generators() -> tuple[str, ...]:
    """Generators drawn in every trial's heatmap panels."""
    return _with("panel")


def generator_title(name: str) -> str:
    """The title of a generator's map (KeyError for an unknown name)."""
    return GENERATORS.entry(name).meta["title"]


@register_generator(
    "gbp", title="GBP map", roles=("paper", "probe", "panel"),
    summary="guided backpropagation (Springenberg 2015)",
)  # fmt: skip
def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Guided backprop: the input gradient with positive input and gradient at each rectifier."""
    return S.input_gradient("guided", model, x, target, create_graph)


@register_generator(
    "deconv", title="deconvNet map", roles=("paper", "probe", "panel"),
    summary="deconvNet (Zeiler & Fergus 2014)",
)  # fmt: skip
def deconvnet(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """deconvNet: only the positive gradient passes each rectifier, whatever its input."""
    return S.input_gradient("deconv", model, x, target, create_graph)


@register_generator(
    "gradient",
    title="input gradient",
    roles=("probe",),
    summary="plain input gradient (Simonyan 2014)",
)
def input_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Plain input gradient of the target-class logit (saliency map of Simonyan et al.)."""
    return S.input_gradient("normal", model, x, target, create_graph)


@register_generator(
    "logprob-gradient", title="log-prob gradient", roles=("probe",),
    summary="input gradient of the summed log-probabilities",
)  # fmt: skip
def logprob_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Input gradient of the sum of all classes' log-probabilities: the explanation that Ross et
    al. 2017 ("right for the right reasons") penalise outside the annotation."""
    return S.input_gradient("normal", model, x, target, create_graph, score=S.logprob_score)


@register_generator(
    "gradcam", title="Grad-CAM map", roles=("probe", "panel"),
    summary="Grad-CAM on the last encoder feature map (Selvaraju 2017)",
)  # fmt: skip
def gradcam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Grad-CAM of the classification head's input, upsampled to the image: (B, 1, H, W)."""
    return S.gradcam(model, x, target, create_graph=create_graph)


@register_generator(
    "gradcam-mid", title="Grad-CAM (stride 8)",
    summary="Grad-CAM on the encoder's stride-8 feature map",
)  # fmt: skip
def gradcam_mid(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """Grad-CAM three stages before the last (stride 8: 8x8 at 64 px instead of 2x2)."""
    return S.gradcam(model, x, target, create_graph=create_graph, stage=-3)
