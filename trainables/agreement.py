"""How well gaze maps predict a radiologist's gaze: the human ceiling and a model on the same terms.

For images read by several radiologists (REFLACX phases 1-2: five each), each reader's map is
predicted by the mean of the OTHER readers' maps (leave one reader out); averaged over readers
this is the human ceiling, the agreement no map can be expected to beat. A model's map is scored
with the same protocol (:func:`model_vs_readers`: the model's map predicts each reader), so the
two numbers compare directly.

Metrics per (prediction, reader): CC, KL, NSS and AUC-Judd as ``trainables.metrics.
saliency_metrics`` defines them (prediction as the saliency, the reader's map as the gaze; NSS and
AUC-Judd at the pixels the reader fixated), and the shuffled AUC (sAUC) of the MIT / Tuebingen
saliency benchmark: positives are the prediction's values at this reader's fixations, negatives
its values at the fixations made on OTHER images, so a map that only reproduces the centre bias
every reading shares scores 0.5. As the benchmark's current code (pysaliency,
``nonfixations="shuffled"``) does, every fixation counts (a pixel fixated twice weighs twice) and
every other image's fixation is a negative; ties count one half. The MIT benchmark's MATLAB
``AUC_shuffled.m`` binarises both fixation maps and averages 100 random subsets of the negatives:
pass boolean masks to :func:`shuffled_auc` for its binary maps (the subsets' average is, in
expectation, the AUC on all negatives). With thousands of other images a binary union covers the
whole chest, which is why the counts are the default here. Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainables.metrics import saliency_metrics
from trainables.record import SALIENCY_KEYS

AGREEMENT_KEYS: tuple[str, ...] = (*SALIENCY_KEYS, "sauc")


def fixation_counts(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int: fixations per pixel from (n, 2) integer (row, column) points; off-grid drop."""
    counts = np.zeros(shape, dtype=np.int64)
    p = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    keep = (p[:, 0] >= 0) & (p[:, 0] < shape[0]) & (p[:, 1] >= 0) & (p[:, 1] < shape[1])
    np.add.at(counts, (p[keep, 0], p[keep, 1]), 1)
    return counts


def shuffled_auc(saliency: np.ndarray, fixated: np.ndarray, others: np.ndarray) -> float:
    """sAUC: ROC AUC of the saliency at this image's fixations against the saliency at other
    images' fixations, each pixel weighted by its count (booleans: the binary maps of MIT's
    ``AUC_shuffled.m``).

    Args:
        saliency: (H, W) map.
        fixated: (H, W) fixation counts (or bool) of this image / reader: the positives.
        others: (H, W) fixation counts (or bool) of the other images: the negatives.

    Returns:
        The weighted Mann-Whitney AUC (ties count one half), ``nan`` without positives or
        negatives.
    """
    s = np.asarray(saliency, dtype=np.float64)
    wp, wn = np.asarray(fixated, np.float64), np.asarray(others, np.float64)
    if not (s.shape == wp.shape == wn.shape and s.ndim == 2):
        raise ValueError(f"shapes differ: {s.shape}, {wp.shape}, {wn.shape}")
    if (wp < 0).any() or (wn < 0).any():
        raise ValueError("fixation counts must be non-negative")
    total_p, total_n = wp.sum(), wn.sum()
    if total_p == 0 or total_n == 0:
        return float("nan")
    used = (wp > 0) | (wn > 0)
    values, group = np.unique(s[used], return_inverse=True)
    pos = np.bincount(group, weights=wp[used], minlength=values.size)
    neg = np.bincount(group, weights=wn[used], minlength=values.size)
    below = np.cumsum(neg) - neg  # negative weight strictly below each value
    return float((pos * (below + 0.5 * neg)).sum() / (total_p * total_n))


def reader_agreement(
    prediction: np.ndarray, reader_map: np.ndarray, fixated: np.ndarray, others: np.ndarray
) -> dict[str, float]:
    """A predicted map against one reader: :data:`AGREEMENT_KEYS` (fixated / others as in
    :func:`shuffled_auc`; NSS and AUC-Judd use the pixels ``fixated`` marks, ``nan`` when none)."""
    out = saliency_metrics(prediction, reader_map, fixation_mask=np.asarray(fixated) > 0)
    out["sauc"] = shuffled_auc(prediction, fixated, others)
    return out


def _nanmean_dicts(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for k in AGREEMENT_KEYS:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")
    return out


def leave_one_reader_out(
    maps: Sequence[np.ndarray], fixated: Sequence[np.ndarray], others: np.ndarray
) -> dict[str, float]:
    """One image's human ceiling: each reader's map predicted by the mean of the other readers'
    maps, averaged over readers (``nan`` for fewer than two readers).

    Args:
        maps: per reader an (H, W) map (sum-1 distributions, so each reader counts once).
        fixated: per reader its (H, W) fixation counts.
        others: (H, W) fixation counts of the other images (sAUC negatives).
    """
    if len(maps) != len(fixated):
        raise ValueError(f"{len(maps)} maps but {len(fixated)} fixation masks")
    if len(maps) < 2:
        return dict.fromkeys(AGREEMENT_KEYS, float("nan"))
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in maps])
    total = stack.sum(axis=0)
    rows = [
        reader_agreement((total - stack[r]) / (len(maps) - 1), stack[r], fixated[r], others)
        for r in range(len(maps))
    ]
    return _nanmean_dicts(rows)


def _counts(
    points_per_image: Sequence[Sequence[np.ndarray]], shape: tuple[int, int]
) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """Per image its readers' fixation counts, and the counts of all the other images."""
    fixated = [[fixation_counts(p, shape) for p in readers] for readers in points_per_image]
    own = [np.sum(c, axis=0) if c else np.zeros(shape, np.int64) for c in fixated]
    total = np.sum(own, axis=0)
    return fixated, [total - o for o in own]


def human_ceiling(
    maps_per_image: Sequence[Sequence[np.ndarray]],
    points_per_image: Sequence[Sequence[np.ndarray]],
) -> dict[str, np.ndarray]:
    """Leave-one-reader-out agreement of every image, sAUC negatives from the other images.

    Args:
        maps_per_image: per image, per reader an (H, W) map (all images on one grid).
        points_per_image: per image, per reader its fixations as (n, 2) int (row, column) pixels
            of that grid (``reflacx_gaze.fixation_pixels``).

    Returns:
        :data:`AGREEMENT_KEYS` -> (N,) per-image values (``nan`` for single-reader images).
    """
    shape = _shape(maps_per_image, points_per_image)
    fixated, others = _counts(points_per_image, shape)
    rows = [
        leave_one_reader_out(maps, fix, other)
        for maps, fix, other in zip(maps_per_image, fixated, others, strict=True)
    ]
    return {k: np.array([r[k] for r in rows]) for k in AGREEMENT_KEYS}


def model_vs_readers(
    model_maps: Sequence[np.ndarray],
    maps_per_image: Sequence[Sequence[np.ndarray]],
    points_per_image: Sequence[Sequence[np.ndarray]],
) -> dict[str, np.ndarray]:
    """A model's map scored like the ceiling: it predicts each reader of its image, averaged over
    the readers (one reader: that reader). Same inputs as :func:`human_ceiling` plus one (H, W)
    model map per image; images without a reader map give ``nan``."""
    shape = _shape(maps_per_image, points_per_image)
    if len(model_maps) != len(maps_per_image):
        raise ValueError(f"{len(model_maps)} model maps for {len(maps_per_image)} images")
    fixated, others = _counts(points_per_image, shape)
    rows = []
    for model, maps, fix, other in zip(model_maps, maps_per_image, fixated, others, strict=True):
        scored = [reader_agreement(model, m, f, other) for m, f in zip(maps, fix, strict=True)]
        rows.append(_nanmean_dicts(scored) if scored else dict.fromkeys(AGREEMENT_KEYS, np.nan))
    return {k: np.array([r[k] for r in rows]) for k in AGREEMENT_KEYS}


def _shape(
    maps_per_image: Sequence[Sequence[np.ndarray]],
    points_per_image: Sequence[Sequence[np.ndarray]],
) -> tuple[int, int]:
    if len(maps_per_image) != len(points_per_image):
        raise ValueError(f"{len(maps_per_image)} images of maps, {len(points_per_image)} of points")
    shapes = {np.shape(m) for maps in maps_per_image for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"all maps must share one grid, got shapes {sorted(shapes)}")
    for maps, points in zip(maps_per_image, points_per_image, strict=True):
        if len(maps) != len(points):
            raise ValueError(f"an image has {len(maps)} reader maps but {len(points)} point sets")
    return shapes.pop()
