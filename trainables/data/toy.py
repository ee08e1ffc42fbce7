"""An in-memory toy dataset (tensors only, no DICOMs) for fast tests and benchmarks.

Normal: background only; CHF: a large bright central blob; pneumonia: a small bright spot on one side;
gaze maps fall on the finding. The synthetic twin (``trainables.data.synthetic``) is the realistic one.
"""

from __future__ import annotations

import numpy as np

from trainables.data.cached import CachedData


def make_toy_cached(n: int = 48, size: int = 32, seed: int = 0) -> CachedData:
    """``n`` images of ``size`` px with a learnable class pattern; 60/20/20 train/val/test."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    images = np.empty((n, size, size), np.float32)
    gaze = np.empty((n, size, size), np.float32)
    for i, lab in enumerate(labels):
        img = 0.3 + 0.05 * rng.standard_normal((size, size))
        cy, cx, r = 0.5, 0.5, 0.12
        if lab == 1:
            r = 0.22 + 0.04 * rng.random()
            img += 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        elif lab == 2:
            cy, cx, r = 0.3 + 0.4 * rng.random(), rng.choice([0.25, 0.75]), 0.07
            img += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        images[i] = np.clip(img, 0, 1)
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r + 0.05) ** 2))
        gaze[i] = g / g.max()
    split = np.zeros(n, np.int8)
    split[int(0.6 * n) : int(0.8 * n)] = 1
    split[int(0.8 * n) :] = 2
    return CachedData(
        images=(images * 255).round().astype(np.uint8),
        gaze=gaze.astype(np.float16),
        labels=labels.astype(np.int64),
        keys=[f"img{i:04d}" for i in range(n)],
        patients=[f"p{i:04d}" for i in range(n)],
        split=split,
        exclusions={},
        fingerprint="tiny",
    )
