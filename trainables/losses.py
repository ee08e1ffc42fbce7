"""Loss terms as pure functions of tensors.

BCE-with-logits is used only on logits (the decoder output); a [0, 1] heatmap (a generator map after
``to_heatmap``) gets BCE on probabilities -- feeding it to BCEWithLogits would squash it a second time and
make the fit threshold instead of match.

Where the gaze enters as "where the radiologist did not look", two forms exist: a hard outside
mask (``gaze < threshold``: ``outside_gradient_penalty``, ``outside_gradient_share``) and a soft
weight that follows the gaze density (``gaze_weighted_share``), which needs no threshold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6


def classification_loss(
    class_logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """The task's classification loss, told apart by its labels: class ids (B,) of exclusive
    classes get cross-entropy (EGD-CXR); 0/1 labels (B, K) of a multi-label task get the binary
    cross-entropy of each class, averaged over classes (REFLACX's findings). ``reduction``: the
    mean over images, or their sum."""
    if labels.ndim == 1:
        return F.cross_entropy(class_logits, labels, reduction=reduction)
    per_image = F.binary_cross_entropy_with_logits(
        class_logits, labels.to(class_logits.dtype), reduction="none"
    ).mean(1)
    return per_image.mean() if reduction == "mean" else per_image.sum()


def class_probabilities(class_logits: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """Softmax over exclusive classes, else each class's sigmoid."""
    return torch.softmax(class_logits, dim=1) if exclusive else torch.sigmoid(class_logits)


def bce_logits(mask_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE between decoder logits (B,1,H,W) and a [0, 1] target map (soft labels)."""
    return F.binary_cross_entropy_with_logits(mask_logits, target.to(mask_logits.dtype))


def bce_prob(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE between a [0, 1] map and a [0, 1] target; clamped so a saturated map keeps finite gradients."""
    prob = prob.clamp(_EPS, 1.0 - _EPS)
    target = target.to(prob.dtype)
    return -(target * prob.log() + (1.0 - target) * (1.0 - prob).log()).mean()


def outside_mask(gaze: torch.Tensor, threshold: float) -> torch.Tensor:
    """1 where the gaze map is below ``threshold`` (the pixels the radiologist did not look at or
    near), else 0: Ross et al.'s binary "irrelevant" annotation, from a max-normalised gaze map."""
    return (gaze < threshold).to(gaze.dtype)


def outside_gradient_penalty(
    grad: torch.Tensor, gaze: torch.Tensor, threshold: float = 0.01
) -> torch.Tensor:
    """Ross et al. 2017's "right for the right reasons" term: the squared input gradient outside
    the gaze, ``(A * grad)^2`` with ``A = outside_mask(gaze, threshold)``, averaged over pixels and
    images.

    Ross et al. sum over pixels; the mean differs by the pixel count only, and keeps the weight
    lambda meaningful across image sizes.

    Args:
        grad: (B, C, H, W) input gradient (raw, signed).
        gaze: (B, 1, H, W) max-normalised gaze map in [0, 1].
        threshold: gaze level below which a pixel counts as "not looked at".
    """
    outside = outside_mask(gaze.to(grad.dtype), threshold) * grad
    return outside.pow(2).mean()


def outside_gradient_share(
    grad: torch.Tensor, gaze: torch.Tensor, threshold: float = 0.01, eps: float = 1e-12
) -> torch.Tensor:
    """The share of the input gradient's energy that lies outside the gaze, per image, averaged:
    ``sum (A * grad)^2 / sum grad^2`` in [0, 1].

    Scale-free, unlike :func:`outside_gradient_penalty`: it cannot be lowered by making the model
    flat everywhere (shrinking every gradient), only by moving its sensitivity into the gaze.
    """
    energy = grad.pow(2).flatten(1)
    outside = outside_mask(gaze.to(grad.dtype), threshold).flatten(1) * energy
    return (outside.sum(1) / (energy.sum(1) + eps)).mean()


def gaze_weighted_share(
    grad: torch.Tensor, gaze: torch.Tensor, power: float, eps: float = 1e-12
) -> torch.Tensor:
    """The input gradient's energy weighted by how little the radiologist looked there, as a share:
    ``sum_px (1 - g)^p * e / sum_px e`` per image, averaged over images, with ``e = grad^2`` and
    ``g`` the max-normalised gaze map clamped to [0, 1].

    Read ``q = e / sum e`` as the distribution of the model's sensitivity over pixels: the value is
    ``E_q[(1 - g)^p]``, at p = 1 one minus the gaze level the model's sensitivity sits at on
    average. In [0, 1]: 0 when every bit of energy lies where the gaze peaks, 1 when all of it
    lies where the gaze is 0. Scale-free like :func:`outside_gradient_share`, which it equals for
    a binary gaze map (any threshold in (0, 1]), but with no threshold: a pixel the radiologist
    glanced at once (g = 0.05) costs 0.95 of a pixel never looked at, where the hard mask counts it
    as fully looked at, so a few stray fixations on a shortcut do not hide it from the loss. ``p``
    sets how fast the cost falls with the gaze: ``p -> 0`` counts every pixel below the peak fully,
    large ``p`` only pixels where the gaze is ~0; the value falls as ``p`` grows. A pixel costs
    half at gaze ``1 - 2^(-1/p)``: 0.5 at p = 1, 0.083 at p = 8 (the arm's default,
    ``TrialConfig.density_power``). At p = 1 energy inside the lungs (gaze ~0.3) still costs 0.7
    of energy on a shortcut, so the loss pushes toward the gaze peak more than off the shortcut.

    Args:
        grad: (B, C, H, W) input gradient (raw, signed).
        gaze: (B, 1, H, W) max-normalised gaze map.
        power: p > 0.
    """
    weight = (1.0 - gaze.to(grad.dtype).clamp(0.0, 1.0)).pow(power)
    energy = grad.pow(2)
    weighted = (weight * energy).flatten(1).sum(1)
    return (weighted / (energy.flatten(1).sum(1) + eps)).mean()


def combine(cls: torch.Tensor, seg: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """total = gamma * L_cls + (1 - gamma) * L_seg; classification alone when there is no seg term."""
    if seg is None:
        return cls
    return gamma * cls + (1.0 - gamma) * seg
