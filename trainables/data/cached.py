"""The in-memory form of the preprocessed dataset that trials train on.

Built once per study by ``trainables.data.prepare`` (decode DICOMs, draw gaze maps, split), put in
Ray's object store by the driver, and sliced on the training device by the fit loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from trainables.config import CLASSES, SPLITS


@dataclass
class CachedData:
    """Images, gaze maps and labels at training size, one row per kept image.

    Attributes:
        images: (N, S, S) uint8 (0..255) or float16 (0..1) grey images, aspect kept and padded.
        gaze: (N, S, S) float16 static gaze heatmaps in [0, 1] (max-normalised per image).
        labels: (N,) int64 class ids, index into ``CLASSES``.
        keys: N image keys (MIMIC dicom_id). Not patient identifiers; safe to log.
        patients: N patient ids, used only for the split. Never logged.
        split: (N,) int8 split ids, index into ``SPLITS`` (0 train, 1 val, 2 test).
        exclusions: reason -> count of images/rows left out while indexing and decoding.
        fingerprint: hash of the inputs and settings the cache was built from.
    """

    images: np.ndarray
    gaze: np.ndarray
    labels: np.ndarray
    keys: list[str]
    patients: list[str]
    split: np.ndarray | None = None  # None until prepare assigns one (the cache holds none)
    exclusions: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("images", "gaze"):
            arr = getattr(self, name)
            if arr.ndim != 3 or arr.shape[0] != n:
                raise ValueError(f"CachedData.{name} has shape {arr.shape}, expected ({n}, S, S)")
        split_n = n if self.split is None else len(self.split)
        if len(self.keys) != n or len(self.patients) != n or split_n != n:
            raise ValueError("CachedData: keys, patients, split and labels differ in length")

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split ('train', 'val' or 'test'), in stored order."""
        if self.split is None:
            raise ValueError("CachedData has no split yet (trainables.data.prepare assigns it)")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def content_digest(self) -> str:
        """sha256 of what the trials see (images, gaze maps, labels, keys, split), not of where the
        files lie: the study's data fingerprint, which ``--resume`` checks."""
        h = hashlib.sha256()
        for arr in (self.images, self.gaze, self.labels, self.split):
            a = np.ascontiguousarray(arr if arr is not None else np.zeros(0))
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        h.update("\n".join(self.keys).encode())
        return h.hexdigest()[:32]

    def summary_dict(self) -> dict:
        """The ``study/data.json`` layout (``trainables.record.data_summary``): split sizes, class
        balance per split, exclusion counts, image size and the content fingerprint (no ids)."""
        from trainables.record import data_summary

        return data_summary(
            self.labels, self.split, self.exclusions,
            image_size=self.image_size, fingerprint=self.content_digest(),
        )  # fmt: skip

    def summary(self) -> str:
        parts = []
        for s in SPLITS:
            idx = self.indices(s)
            counts = np.bincount(self.labels[idx], minlength=len(CLASSES))
            parts.append(
                f"{s} {len(idx)} ("
                + ", ".join(f"{c} {k}" for c, k in zip(CLASSES, counts, strict=True))
                + ")"
            )
        excl = ", ".join(f"{k}: {v}" for k, v in sorted(self.exclusions.items())) or "none"
        return (
            f"{len(self.labels)} images at {self.image_size}px; "
            + "; ".join(parts)
            + f"; excluded: {excl}"
        )
