"""The loss terms against their formulas, written out independently, and their invariances."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.losses import (
    bce_logits,
    bce_prob,
    classification_loss,
    combine,
    gaze_weighted_share,
    outside_gradient_penalty,
    outside_gradient_share,
    outside_mask,
)


def _maps(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    gaze = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    return grad, gaze


def test_classification_and_bce_terms_match_their_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    log_p = logits - logits.logsumexp(1, keepdim=True)
    assert classification_loss(logits, labels).item() == pytest.approx(
        -(log_p[0, 0] + log_p[1, 2]).item() / 2
    )
    z, t = torch.tensor([[-3.0, 0.0, 4.0]], dtype=torch.float64), torch.tensor([[0.0, 0.5, 1.0]])
    p = torch.sigmoid(z)
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    assert bce_logits(z, t).item() == pytest.approx(expected.item())
    assert bce_prob(p, t).item() == pytest.approx(expected.item())
    # A saturated probability map keeps finite values and gradients (clamped, not log(0)).
    sat = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    loss = bce_prob(sat, torch.tensor([[1.0, 0.0]]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(sat.grad).all()
    assert combine(torch.tensor(2.0), torch.tensor(4.0), 0.25).item() == pytest.approx(3.5)
    assert combine(torch.tensor(2.0), None, 0.25).item() == 2.0


def test_outside_penalty_is_rosss_masked_squared_gradient():
    grad, gaze = _maps()
    mask = (gaze < 0.3).double()
    assert torch.equal(outside_mask(gaze, 0.3), mask)
    expected = ((mask * grad) ** 2).sum() / grad.numel()  # Ross et al.'s sum, over the pixel count
    assert outside_gradient_penalty(grad, gaze, 0.3).item() == pytest.approx(expected.item())
    # Scales with the gradient squared: flattening the model lowers it.
    assert outside_gradient_penalty(0.5 * grad, gaze, 0.3).item() == pytest.approx(
        0.25 * expected.item()
    )


def test_outside_share_is_scale_free_and_bounded():
    grad, gaze = _maps(1)
    share = outside_gradient_share(grad, gaze, 0.3)
    mask = (gaze < 0.3).double().flatten(1)
    energy = grad.flatten(1) ** 2
    expected = ((mask * energy).sum(1) / energy.sum(1)).mean()
    assert share.item() == pytest.approx(expected.item())
    assert outside_gradient_share(7.0 * grad, gaze, 0.3).item() == pytest.approx(share.item())
    inside_only = grad * (gaze >= 0.3)
    outside_only = grad * (gaze < 0.3)
    assert outside_gradient_share(inside_only, gaze, 0.3).item() == pytest.approx(0.0)
    assert outside_gradient_share(outside_only, gaze, 0.3).item() == pytest.approx(1.0)
    # Differentiable: moving energy into the gaze lowers it.
    g = grad.clone().requires_grad_()
    outside_gradient_share(g, gaze, 0.3).backward()
    step = g.detach() - 0.1 * g.grad
    assert outside_gradient_share(step, gaze, 0.3).item() < share.item()


def test_density_share_is_the_outside_share_for_a_binary_gaze_map():
    grad, gaze = _maps(2)
    binary = (gaze > 0.5).double()
    for threshold in (0.01, 0.5, 1.0):  # any threshold in (0, 1] reads a binary map the same way
        expected = outside_gradient_share(grad, binary, threshold)
        for power in (0.5, 1.0, 3.0):
            assert gaze_weighted_share(grad, binary, power).item() == pytest.approx(expected.item())


def test_density_share_formula_bounds_and_scale():
    grad, gaze = _maps(3)
    energy = grad.flatten(1) ** 2
    weight = (1 - gaze.flatten(1)) ** 2.0
    expected = ((weight * energy).sum(1) / energy.sum(1)).mean()
    share = gaze_weighted_share(grad, gaze, 2.0)
    assert share.item() == pytest.approx(expected.item())
    assert gaze_weighted_share(0.01 * grad, gaze, 2.0).item() == pytest.approx(share.item())
    assert 0.0 < share.item() < 1.0
    # Every channel's energy counts (an RGB-like gradient against a one-channel gaze map).
    three = torch.cat([grad, 2 * grad, grad], dim=1)
    assert gaze_weighted_share(three, gaze, 2.0).item() == pytest.approx(share.item())
    # A larger power forgives low-but-nonzero gaze more: the value falls.
    values = [gaze_weighted_share(grad, gaze, p).item() for p in (0.5, 1.0, 2.0, 8.0)]
    assert values == sorted(values, reverse=True)


def test_density_share_falls_as_energy_moves_toward_the_gaze_peak():
    gaze = torch.linspace(0, 1, 16, dtype=torch.float64).view(1, 1, 1, 16).expand(1, 1, 4, 16)
    values = []
    for centre in (2, 6, 10, 14):  # a bump of gradient energy walking up the gaze ramp
        cols = torch.arange(16, dtype=torch.float64)
        grad = torch.exp(-((cols - centre) ** 2) / 4).view(1, 1, 1, 16).expand(1, 1, 4, 16)
        values.append(gaze_weighted_share(grad, gaze, 1.0).item())
    assert values == sorted(values, reverse=True) and values[0] - values[-1] > 0.5
    # A threshold share cannot tell the last three apart: all of them sit above 0.01.
    hard = [
        outside_gradient_share(
            torch.exp(-((torch.arange(16.0) - c) ** 2) / 4).view(1, 1, 1, 16), gaze[..., :1, :]
        ).item()
        for c in (6, 10, 14)
    ]
    assert max(hard) - min(hard) < 1e-3


def test_density_share_gradients_are_correct():
    grad, gaze = _maps(4)
    g = grad.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gaze_weighted_share(t, gaze, 1.5), (g,))
    # Differentiable: a step down its gradient lowers it.
    gaze_weighted_share(g, gaze, 1.5).backward()
    before = gaze_weighted_share(grad, gaze, 1.5).item()
    assert gaze_weighted_share(grad - 0.1 * g.grad, gaze, 1.5).item() < before
