"""What a dataset's ``draw`` gives back for one image (in decoding workers), and how the images'
reader extras are stacked into ``CachedData.readers``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trainables.data.cached import Readers

MAX_READERS = 5  # REFLACX's phases 1-2: five radiologists per image


@dataclass(frozen=True)
class Drawn:
    """One image's gaze, drawn on its letterbox grid.

    Attributes:
        gaze: (S, S) float32 target in [0, 1] (max-normalised), or None: the image is excluded
            (``reason``, ``message``).
        counts: row-level counts to add to the exclusions (e.g. ``off_image_fixations``).
        readers: (R, S, S) each reader's map, for an image read by several; else None.
        points: (P, 3) int16 fixations on the grid (reader, row, column); None without readers.
        boxes: (B, 4) float32 expert ellipse boxes on the grid; None without annotations.
    """

    gaze: np.ndarray | None
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    message: str = ""
    readers: np.ndarray | None = None
    points: np.ndarray | None = None
    boxes: np.ndarray | None = None


def stack_readers(drawn: Sequence[Drawn]) -> Readers | None:
    """``CachedData.readers`` of the kept images, or None when the dataset draws no readers."""
    if all(d.points is None and d.boxes is None and d.readers is None for d in drawn):
        return None
    size = drawn[0].gaze.shape[-1]
    multi = [d.readers for d in drawn if d.readers is not None]
    maps = np.full((len(multi), MAX_READERS, size, size), np.nan, dtype=np.float16)
    row = np.full(len(drawn), -1, dtype=np.int32)
    m = 0
    for i, d in enumerate(drawn):
        if d.readers is not None:
            maps[m, : len(d.readers)] = d.readers[:MAX_READERS]
            row[i], m = m, m + 1
    points = [d.points if d.points is not None else np.zeros((0, 3), np.int16) for d in drawn]
    boxes = [d.boxes if d.boxes is not None else np.zeros((0, 4), np.float32) for d in drawn]
    return Readers(
        maps=maps,
        row=row,
        points=np.concatenate(points).astype(np.int16),
        point_offsets=np.cumsum([0, *map(len, points)]).astype(np.int64),
        boxes=np.concatenate(boxes).astype(np.float32),
        box_offsets=np.cumsum([0, *map(len, boxes)]).astype(np.int64),
    )
