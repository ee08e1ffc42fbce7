"""Loss terms as pure functions of tensors.

BCE-with-logits is used only on logits (the decoder output); a [0, 1] heatmap (a generator map after
``to_heatmap``) gets BCE on probabilities -- feeding it to BCEWithLogits would squash it a second time and
make the fit threshold instead of match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6


def classification_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the three mutually exclusive classes (labels are exactly one-hot)."""
    return F.cross_entropy(class_logits, labels)


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


def combine(cls: torch.Tensor, seg: torch.Tensor | None, gamma: float) -> torch.Tensor:
    """total = gamma * L_cls + (1 - gamma) * L_seg; classification alone when there is no seg term."""
    if seg is None:
        return cls
    return gamma * cls + (1.0 - gamma) * seg
