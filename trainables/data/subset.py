"""Part of the training split, for the data-efficiency plan (``DataConfig.train_images``).

Applied after the split (``trainables.data.prepare``): the training images outside the subset are
dropped from the dataset; validation and test rows stay exactly as they were, so every train size
is scored on the same images.

The subset is whole patients taken in one seeded order, and the order alternates the classes
(each class's patients shuffled, then one patient of each class in turn), so a small subset holds
every class about equally and the subsets of one seed nest: the first 24 images of the order are
among its first 48. A size is met exactly when patients have one image each; otherwise the last
patient taken may pass it by its other images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainables.config import SPLITS
from trainables.data.cached import CachedData

TRAIN = SPLITS.index("train")
LEFT_OUT = "train_images_left_out"  # exclusions key: training images outside the subset


def patient_order(labels: np.ndarray, patients: Sequence[str], seed: int) -> list[str]:
    """The training patients in the order the subsets take them (module docstring).

    A patient's class is the label of their first image (in row order: a class id, or a label
    vector for a multi-label task); classes take turns in sorted order, each from its own seeded
    shuffle.
    """
    first: dict[str, tuple] = {}
    for patient, label in zip(patients, labels, strict=True):
        first.setdefault(patient, tuple(np.atleast_1d(label).tolist()))
    rng = np.random.default_rng(seed)
    queues = []
    for c in sorted(set(first.values())):
        members = sorted(p for p, label in first.items() if label == c)
        queues.append([members[i] for i in rng.permutation(len(members))])
    order: list[str] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order += [q[rank] for q in queues if rank < len(q)]
    return order


def train_subset_rows(
    labels: np.ndarray, patients: Sequence[str], split: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """Boolean mask of the rows kept: every validation and test row, and the training rows of the
    first patients of :func:`patient_order` up to ``n`` images.

    Raises:
        ValueError: ``n`` is more than the training split holds, or less than 1.
    """
    split = np.asarray(split)
    train = np.flatnonzero(split == TRAIN)
    if not 1 <= n <= len(train):
        raise ValueError(f"train_images={n}: the training split holds {len(train)} images")
    train_patients = [patients[i] for i in train]
    taken: set[str] = set()
    count = 0
    rows_of: dict[str, int] = {}
    for p in train_patients:
        rows_of[p] = rows_of.get(p, 0) + 1
    for p in patient_order(np.asarray(labels)[train], train_patients, seed):
        if count >= n:
            break
        taken.add(p)
        count += rows_of[p]
    keep = split != TRAIN
    keep[train] = [p in taken for p in train_patients]
    return keep


def keep_train_images(data: CachedData, n: int, seed: int) -> CachedData:
    """``data`` with only :func:`train_subset_rows`'s rows; the others are counted in its
    exclusions (``train_images_left_out``)."""
    if data.split is None:
        raise ValueError("keep_train_images needs a split (trainables.data.prepare assigns it)")
    keep = train_subset_rows(data.labels, data.patients, data.split, n, seed)
    return data.take(np.flatnonzero(keep), exclusions={**data.exclusions, LEFT_OUT: int((~keep).sum())})  # fmt: skip
