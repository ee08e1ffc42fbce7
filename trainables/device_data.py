"""The cached dataset on the training device, sliced into batches there.

The whole cache (~100 MB at 224 px for 1,017 images) is moved to the device once per trial, so the
training loop never waits on a DataLoader; shuffling and augmentation draw from one torch.Generator whose
state goes into the checkpoint, so a resumed trial sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainables.data.cached import CachedData


class DeviceData:
    """Images (float [0, 1]), gaze maps and labels of a CachedData, as tensors on one device."""

    def __init__(self, data: CachedData, device: torch.device):
        self.device = device
        images = torch.from_numpy(np.ascontiguousarray(data.images))
        self.images_u8 = images.dtype == torch.uint8
        self.images = images.to(device)  # kept in its storage dtype; converted per batch
        self.gaze = torch.from_numpy(np.ascontiguousarray(data.gaze)).to(device)
        self.labels = torch.from_numpy(data.labels.astype(np.int64)).to(device)
        self.keys = list(data.keys)
        self.task = data.task
        self.readers = data.readers  # per-reader maps, fixations, ellipses (numpy) or None
        self.host = data  # the CachedData on the host: its readers, for reader_eval
        self._reader_maps = None  # moved to the device on first use (random-reader targets)
        self._split_idx = {
            s: torch.from_numpy(data.indices(s)).to(device) for s in ("train", "val", "test")
        }

    def indices(self, split: str) -> torch.Tensor:
        return self._split_idx[split]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (B,1,S,S) float32 in [0, 1], gaze (B,1,S,S) float32, labels (B,))."""
        img = self.images[idx].unsqueeze(1)
        img = img.float() / 255.0 if self.images_u8 else img.float()
        return img, self.gaze[idx].unsqueeze(1).float(), self.labels[idx]

    def reader_gaze(self, idx: torch.Tensor, gaze: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # fmt: skip
        """``gaze`` (B,1,S,S) with each multi-reader image's target replaced by one of its readers'
        maps, drawn uniformly from ``gen`` (on the CPU: the same draws on any device) among the
        readers with gaze; single-reader images keep theirs."""
        if self.readers is None:
            raise ValueError("random-reader gaze targets need a dataset whose images several readers read (REFLACX)")  # fmt: skip
        if self._reader_maps is None:
            maps = torch.from_numpy(np.ascontiguousarray(self.readers.maps)).to(self.device)
            self._reader_maps = (maps, torch.from_numpy(self.readers.row.astype(np.int64)).to(self.device), torch.isfinite(maps).all(-1).all(-1))  # fmt: skip
        maps, row_of, valid = self._reader_maps
        rows = row_of[idx]
        multi = torch.nonzero(rows >= 0).flatten()
        if not len(multi):
            return gaze
        draws = torch.rand(len(multi), maps.shape[1], generator=gen).to(self.device)
        pick = (draws * valid[rows[multi]]).argmax(1)  # a reader with gaze (random among them)
        out = gaze.clone()
        out[multi, 0] = maps[rows[multi], pick].float()
        return out

    def train_batches(self, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        """Shuffled index batches of the training split; the last partial batch is dropped when it
        would hold a single image (BatchNorm cannot train on one)."""
        idx = self.indices("train")
        perm = idx[torch.randperm(len(idx), generator=gen).to(idx.device)]
        for start in range(0, len(perm), batch_size):
            chunk = perm[start : start + batch_size]
            if len(chunk) > 1:
                yield chunk

    def eval_batches(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        idx = self.indices(split)
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


def random_affine(
    images: torch.Tensor,
    gaze: torch.Tensor,
    gen: torch.Generator,
    max_rotate_deg: float = 5.0,
    max_scale: float = 0.05,
    max_shift: float = 0.04,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random small affine per sample to image AND gaze map (same theta, one RNG)."""
    b = images.shape[0]
    u = (
        torch.rand(b, 4, generator=gen).to(images.device) * 2 - 1
    )  # drawn on CPU: same stream on any device
    angle = u[:, 0] * math.radians(max_rotate_deg)
    scale = 1.0 + u[:, 1] * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, u[:, 2] * max_shift * 2], dim=1),
            torch.stack([sin, cos, u[:, 3] * max_shift * 2], dim=1),
        ],
        dim=1,
    )
    both = torch.cat([images, gaze], dim=1)
    grid = F.affine_grid(theta, list(both.shape), align_corners=False)
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, :1], out[:, 1:].clamp(0.0, 1.0)
