"""Maps judged by the radiologists of a multi-reader dataset (REFLACX), per test image:

- the human ceiling: each reader's map against the mean of the other readers' (leave one reader
  out: CC, KL, NSS, AUC-Judd, shuffled AUC; ``trainables.agreement``), computed once per study
  from the data (``ceiling_frame``);
- a model's map on the same terms (it predicts each reader of its image), and against the
  experts' ellipses of the image's present findings: the pointing game (is the map's maximum
  inside one?) and the share of its energy inside them (``model_frame``; ``localization``).

Both tables are per image, so analysis bootstraps them like everything else. Numpy and pandas
only; the maps come in at the training grid, as the cache holds the readers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from trainables.agreement import AGREEMENT_KEYS, human_ceiling, model_vs_readers
from trainables.data.cached import CachedData
from trainables.localization import LOCALIZATION_KEYS, ellipse_mask, localization

READERS_COLUMNS: tuple[str, ...] = ("key", "map", "generator", *AGREEMENT_KEYS, *LOCALIZATION_KEYS)
CEILING_COLUMNS: tuple[str, ...] = ("key", "readers", *AGREEMENT_KEYS)


def _readers_of(data: CachedData, rows: np.ndarray) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]], list[np.ndarray]]:  # fmt: skip
    """Per image: its readers' sum-1 maps, their fixations ((n, 2) row, column), its boxes."""
    maps, points, boxes = [], [], []
    for i in rows.tolist():
        own, pts, box = data.readers.of(i)
        layers = [m for m in own if np.isfinite(m).all()] if own is not None else [data.gaze[i]]
        maps.append([np.asarray(m, np.float64) / max(float(np.sum(m)), 1e-12) for m in layers])
        points.append([pts[pts[:, 0] == r][:, 1:].astype(np.int64) for r in range(len(layers))])
        boxes.append(box)
    return maps, points, boxes


def ceiling_frame(data: CachedData, split: str = "test") -> pd.DataFrame:
    """The human ceiling of every image of ``split`` read by several radiologists (one row each;
    shuffled-AUC negatives are the fixations on the split's other images)."""
    rows = data.indices(split)
    maps, points, _ = _readers_of(data, rows)
    values = human_ceiling(maps, points)
    frame = pd.DataFrame({"key": [data.keys[i] for i in rows], "readers": [len(m) for m in maps], **values})  # fmt: skip
    return frame[frame["readers"] > 1].reset_index(drop=True)[list(CEILING_COLUMNS)]


def model_frame(data: CachedData, rows: np.ndarray, model_maps: Mapping[tuple[str, str], np.ndarray]) -> pd.DataFrame:  # fmt: skip
    """A trial's maps of the images ``rows`` (``(map kind, generator) -> (N, S, S)``) against the
    readers (the ceiling's protocol) and the ellipses."""
    maps, points, boxes = _readers_of(data, rows)
    size = data.image_size
    masks = [ellipse_mask(b, (size, size)) for b in boxes]
    keys = [data.keys[i] for i in rows]
    parts = []
    for (kind, generator), stack in model_maps.items():
        agreement = model_vs_readers(list(stack), maps, points)
        located = localization(list(stack), masks)
        parts.append(pd.DataFrame({"key": keys, "map": kind, "generator": generator, **agreement, **located}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)[list(READERS_COLUMNS)] if parts else pd.DataFrame(columns=READERS_COLUMNS)  # fmt: skip
