"""Input masking for the ``gaze-mask`` and ``cutout`` baseline arms: pure functions of tensors.

``gaze-mask`` is the simple baseline a reviewer asks for: during TRAINING, the pixels the radiologist
did not look at (gaze map below ``gaze_mask_threshold``, after growing the looked-at region by
``mask_dilation``) are replaced by noise or a blur, so a shortcut there carries no signal while the
model learns. Evaluation inputs are never masked: at test time there is no gaze.

``cutout`` is its control that uses no gaze: per image it hides the same NUMBER of pixels as
``gaze-mask`` would, the same way, as one rectangle at a random place. If gaze-mask resists a
shortcut and cutout does not, the gaze, not the hiding, is what helps.

Random draws (cutout's rectangles, the noise) come from the training loop's ``torch.Generator``,
drawn on the CPU as the augmentation is, so a resumed trial masks exactly as the uninterrupted one
and the stream is the same on any device. Each call draws a fixed number of values for a batch
shape, whatever the gaze maps hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

if TYPE_CHECKING:
    from trainables.config import TrialConfig

MaskMode = Literal["noise", "blur"]
# Blur sigma as a share of the image side: 3.2 px at 64 px. It removes edges and texture; a
# bright blob (a corner marker) survives as a smudge, which is why "noise" is the default.
BLUR_SIGMA_SHARE = 0.05


@dataclass(frozen=True)
class MaskSpec:
    """How pixels are hidden: what replaces them, how much, and where "looked at" ends."""

    mode: MaskMode = "noise"  # noise: the image's mean and sd, no content; blur: low frequencies
    strength: float = 1.0  # blend toward the replacement (1 = replaced, 0 = untouched)
    dilation: float = 0.0  # grow the looked-at region by this share of the image side
    threshold: float = 0.01  # gaze level at or above which a pixel counts as looked at

    @classmethod
    def of(cls, cfg: TrialConfig) -> MaskSpec:
        return cls(cfg.mask_mode, cfg.mask_strength, cfg.mask_dilation, cfg.gaze_mask_threshold)


def looked_at(gaze: torch.Tensor, threshold: float, dilation: float = 0.0) -> torch.Tensor:
    """Boolean (B, 1, H, W): gaze at or above ``threshold`` (the complement of
    ``losses.outside_mask``), grown by ``round(dilation * min(H, W))`` pixels (square dilation)."""
    inside = gaze >= threshold
    radius = round(dilation * min(gaze.shape[-2:]))
    if radius > 0:
        grown = F.max_pool2d(inside.float(), 2 * radius + 1, stride=1, padding=radius)
        inside = grown > 0
    return inside


def replacement(x: torch.Tensor, mode: MaskMode, gen: torch.Generator) -> torch.Tensor:
    """What hidden pixels become, for the whole image (B, C, H, W).

    ``noise``: Gaussian noise with each image's own mean and standard deviation (clamped to [0, 1]),
    so the hidden area keeps the image's brightness and contrast but no content. ``blur``: a
    Gaussian blur with sigma ``BLUR_SIGMA_SHARE`` of the image side (no draw from ``gen``).
    """
    if mode == "noise":
        z = torch.randn(x.shape, generator=gen).to(device=x.device, dtype=x.dtype)
        mean = x.mean((1, 2, 3), keepdim=True)
        sd = x.std((1, 2, 3), keepdim=True)
        return (mean + sd * z).clamp(0.0, 1.0)
    if mode == "blur":
        side = min(x.shape[-2:])
        sigma = BLUR_SIGMA_SHARE * side
        radius = min(int(4.0 * sigma + 0.5), side - 1)  # reflect padding needs radius < side
        return gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])
    raise ValueError(f"unknown mask mode {mode!r}; valid modes: noise, blur")


def hide(
    x: torch.Tensor, hidden: torch.Tensor, spec: MaskSpec, gen: torch.Generator
) -> torch.Tensor:
    """``x`` with the ``hidden`` pixels blended toward :func:`replacement`; every other pixel is
    bit-identical to ``x`` (``torch.where``, not arithmetic on them)."""
    mixed = torch.lerp(x, replacement(x, spec.mode, gen), spec.strength)
    return torch.where(hidden, mixed, x)


def mask_outside_gaze(
    x: torch.Tensor, gaze: torch.Tensor, spec: MaskSpec, gen: torch.Generator
) -> torch.Tensor:
    """The gaze-mask input: pixels outside the (dilated) gaze hidden as ``spec`` says."""
    return hide(x, ~looked_at(gaze, spec.threshold, spec.dilation), spec, gen)


def random_boxes(areas: torch.Tensor, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """One axis-aligned rectangle per image, of about ``areas[i]`` pixels, at a random place.

    The aspect ratio (height / width) is log-uniform in [1/2, 2], clipped where a side would
    exceed the image; the top-left corner is uniform over the places where the box fits. Three
    uniforms per image are drawn whatever the areas (a fixed use of ``gen``). An area of 0 gives
    an empty box; one of the whole image hides it all.

    Returns:
        Boolean (B, 1, H, W) on ``areas``' device.
    """
    h_img, w_img = size
    u = torch.rand(len(areas), 3, generator=gen, dtype=torch.float64)
    area = areas.detach().to("cpu", torch.float64)
    aspect = 2.0 ** (2.0 * u[:, 0] - 1.0)
    h = (area * aspect).sqrt().round().clamp(0, h_img)
    w = (area / h.clamp(min=1)).round().clamp(0, w_img)
    h = torch.where(w >= w_img, (area / w_img).round().clamp(0, h_img), h)  # a full-width box
    top = (u[:, 1] * (h_img - h + 1)).floor()
    left = (u[:, 2] * (w_img - w + 1)).floor()
    rows = torch.arange(h_img, dtype=torch.float64)
    cols = torch.arange(w_img, dtype=torch.float64)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None])
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < (left + w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).to(areas.device)


def cutout_like_gaze_mask(
    x: torch.Tensor, gaze: torch.Tensor, spec: MaskSpec, gen: torch.Generator
) -> torch.Tensor:
    """The cutout input: per image, as many pixels as gaze-mask would hide, hidden the same way,
    as one random rectangle (:func:`random_boxes`); the gaze decides how much, never where."""
    areas = (~looked_at(gaze, spec.threshold, spec.dilation)).flatten(1).sum(1)
    return hide(x, random_boxes(areas, tuple(x.shape[-2:]), gen), spec, gen)


def gaze_mask(
    x: torch.Tensor, gaze: torch.Tensor, gen: torch.Generator, cfg: TrialConfig
) -> torch.Tensor:
    """The gaze-mask arm's training input (``ModelSet.train_input``)."""
    return mask_outside_gaze(x, gaze, MaskSpec.of(cfg), gen)


def cutout(
    x: torch.Tensor, gaze: torch.Tensor, gen: torch.Generator, cfg: TrialConfig
) -> torch.Tensor:
    """The cutout arm's training input (``ModelSet.train_input``)."""
    return cutout_like_gaze_mask(x, gaze, MaskSpec.of(cfg), gen)
