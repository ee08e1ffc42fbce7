"""The cached dataset on the device: batches of the right split, one shared augmentation for image
and gaze map, and batch order / augmentation reproducible from one generator."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data.toy import make_toy_cached
from trainables.device_data import DeviceData, random_affine


def _dd(n: int = 30, size: int = 16) -> DeviceData:
    return DeviceData(make_toy_cached(n=n, size=size), torch.device("cpu"))


def test_batches_are_the_split_in_float_and_the_training_order_is_seeded():
    data = make_toy_cached(n=30, size=16)
    dd = DeviceData(data, torch.device("cpu"))
    x, gaze, y = dd.batch(dd.indices("test"))
    assert x.dtype == gaze.dtype == torch.float32 and x.shape == (len(y), 1, 16, 16)
    np.testing.assert_allclose(x[:, 0].numpy(), data.images[data.indices("test")] / 255.0)
    np.testing.assert_array_equal(y.numpy(), data.labels[data.indices("test")])
    order = [
        torch.cat(list(dd.train_batches(4, torch.Generator().manual_seed(s)))) for s in (0, 0, 1)
    ]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    assert sorted(order[0].tolist()) == sorted(data.indices("train").tolist())  # each image once
    evals = torch.cat(list(dd.eval_batches("val", 4)))
    assert evals.tolist() == data.indices("val").tolist()  # stored order, nothing dropped


def test_a_last_batch_of_one_image_is_dropped():
    dd = _dd(n=30)  # 18 training images: batches of 17 leave one
    sizes = [len(b) for b in dd.train_batches(17, torch.Generator().manual_seed(0))]
    assert sizes == [17]  # BatchNorm cannot train on a batch of one


def test_image_and_gaze_share_one_affine_and_the_draws_come_from_the_generator():
    dd = _dd()
    x, gaze, _ = dd.batch(dd.indices("train")[:6])
    a_x, a_g = random_affine(x, gaze, torch.Generator().manual_seed(3))
    b_x, b_g = random_affine(x, gaze, torch.Generator().manual_seed(3))
    assert torch.equal(a_x, b_x) and torch.equal(a_g, b_g)
    # Rebuild the same theta independently: the gaze map moved exactly as the image did.
    u = torch.rand(6, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    angle, scale = u[:, 0] * math.radians(5.0), 1.0 + u[:, 1] * 0.05
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * 0.08], 1), torch.stack([sin, cos, u[:, 3] * 0.08], 1)], 1
    )
    grid = F.affine_grid(theta, [6, 1, 16, 16], align_corners=False)
    expected_g = F.grid_sample(gaze, grid, align_corners=False).clamp(0, 1)
    expected_x = F.grid_sample(x, grid, align_corners=False)
    torch.testing.assert_close(a_g, expected_g)
    torch.testing.assert_close(a_x, expected_x)
    assert not torch.equal(a_x, x)  # it did move
    assert a_g.min() >= 0 and a_g.max() <= 1
