"""The in-memory form of the preprocessed dataset that trials train on.

Built once per study by ``trainables.data.prepare`` (decode DICOMs, draw gaze maps, split), put in
Ray's object store by the driver, and sliced on the training device by the fit loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np

from trainables.config import SPLITS
from trainables.task import Task

DEFAULT_DATASET = "egd-cxr"


@dataclass(frozen=True)
class Readers:
    """What a dataset with several readers per image and expert ellipses adds (REFLACX).

    Attributes:
        maps: (M, R, S, S) float16 each reader's gaze map (max-normalised) of the M images read
            by several readers; NaN where an image has fewer than R readers.
        row: (N,) int32 index into ``maps`` per image, -1 for an image with one reader.
        points: (P, 3) int16 fixations on the training grid: (reader, row, column), per image
            in ``point_offsets`` order (reader = its position among the image's readers).
        point_offsets: (N + 1,) int64: image i's points are ``points[o[i]:o[i + 1]]``.
        boxes: (B, 4) float32 ellipse bounding boxes (x0, y0, x1, y1, training pixels) of the
            image's present findings, per image in ``box_offsets`` order.
        box_offsets: (N + 1,) int64.
    """

    maps: np.ndarray
    row: np.ndarray
    points: np.ndarray
    point_offsets: np.ndarray
    boxes: np.ndarray
    box_offsets: np.ndarray

    def of(self, i: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(reader maps or None, fixation points, ellipse boxes) of image ``i``."""
        maps = self.maps[self.row[i]] if self.row[i] >= 0 else None
        points = self.points[self.point_offsets[i] : self.point_offsets[i + 1]]
        return maps, points, self.boxes[self.box_offsets[i] : self.box_offsets[i + 1]]

    def take(self, rows: np.ndarray) -> Readers:
        """The readers of images ``rows`` (in that order); ragged parts re-offset."""
        rows = np.asarray(rows, dtype=np.int64)
        kept = self.row[rows]
        multi = kept >= 0
        new_row = np.full(len(rows), -1, np.int32)
        new_row[multi] = np.arange(int(multi.sum()), dtype=np.int32)
        points, point_offsets = _take_ragged(self.points, self.point_offsets, rows)
        boxes, box_offsets = _take_ragged(self.boxes, self.box_offsets, rows)
        return Readers(self.maps[kept[multi]], new_row, points, point_offsets, boxes, box_offsets)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"readers_{k}": getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_arrays(cls, arrays) -> Readers | None:
        if "readers_maps" not in arrays:
            return None
        return cls(**{k: np.asarray(arrays[f"readers_{k}"]) for k in cls.__dataclass_fields__})


def _take_ragged(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The parts ``values[offsets[i]:offsets[i + 1]]`` of ``rows``, concatenated, and their offsets."""
    lengths = offsets[rows + 1] - offsets[rows]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if not len(rows):
        return values[:0], new_offsets
    index = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in rows]).astype(np.int64)
    return values[index], new_offsets


@dataclass
class CachedData:
    """Images, gaze maps and labels at training size, one row per kept image.

    Attributes:
        images: (N, S, S) uint8 (0..255) or float16 (0..1) grey images, aspect kept and padded.
        gaze: (N, S, S) float16 gaze targets in [0, 1] (max-normalised per image; the mean of the
            readers' maps where several read an image).
        labels: the task's labels: (N,) int64 class ids (exclusive) or (N, K) int8 0/1.
        keys: N image keys (MIMIC dicom_id). Not patient identifiers; safe to log.
        patients: N patient ids, used only for the split. Never logged.
        split: (N,) int8 split ids, index into ``SPLITS`` (0 train, 1 val, 2 test).
        exclusions: reason -> count of images/rows left out while indexing and decoding.
        fingerprint: hash of the inputs and settings the cache was built from.
        task: the dataset's classes and whether they are exclusive.
        readers: per-reader maps, fixations and ellipses (multi-reader datasets), or None.
        dataset: the registry name of the dataset.
    """

    images: np.ndarray
    gaze: np.ndarray
    labels: np.ndarray
    keys: list[str]
    patients: list[str]
    split: np.ndarray | None = None  # None until prepare assigns one (the cache holds none)
    exclusions: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    task: Task | None = None  # None: the default dataset's
    readers: Readers | None = None
    dataset: str = DEFAULT_DATASET

    def __post_init__(self) -> None:
        if self.task is None:
            from trainables.data.datasets import task_of

            self.task = task_of(self.dataset)
        n = len(self.labels)
        for name in ("images", "gaze"):
            arr = getattr(self, name)
            if arr.ndim != 3 or arr.shape[0] != n:
                raise ValueError(f"CachedData.{name} has shape {arr.shape}, expected ({n}, S, S)")
        want = 1 if self.task.exclusive else 2
        if self.labels.ndim != want:
            raise ValueError(f"CachedData.labels has shape {self.labels.shape}; the task is {'exclusive: class ids (N,)' if want == 1 else f'multi-label: (N, {self.task.n}) 0/1'}")  # fmt: skip
        split_n = n if self.split is None else len(self.split)
        if len(self.keys) != n or len(self.patients) != n or split_n != n:
            raise ValueError("CachedData: keys, patients, split and labels differ in length")

    def take(self, rows: np.ndarray, **changes) -> CachedData:
        """The images ``rows`` (in that order), every per-image array and list cut alike;
        ``changes`` replace fields of the result (e.g. ``exclusions``)."""
        rows = np.asarray(rows, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=self.images[rows], gaze=self.gaze[rows], labels=self.labels[rows],
            keys=[self.keys[i] for i in rows], patients=[self.patients[i] for i in rows],
            split=None if self.split is None else self.split[rows],
            readers=None if self.readers is None else self.readers.take(rows),
            **changes,
        )  # fmt: skip

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split ('train', 'val' or 'test'), in stored order."""
        if self.split is None:
            raise ValueError("CachedData has no split yet (trainables.data.prepare assigns it)")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def class_counts(self, rows: np.ndarray) -> np.ndarray:
        """(K,) images of each class among ``rows`` (multi-label: images where it is present)."""
        return self.task.multi_hot(self.labels[rows]).sum(0) if len(rows) else np.zeros(self.task.n, np.int64)  # fmt: skip

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
            self.labels, self.split, self.exclusions, self.task.classes,
            image_size=self.image_size, fingerprint=self.content_digest(), dataset=self.dataset,
        )  # fmt: skip

    def summary(self) -> str:
        parts = []
        for s in SPLITS:
            idx = self.indices(s)
            counts = self.class_counts(idx)
            shown = ", ".join(f"{c} {k}" for c, k in zip(self.task.classes, counts, strict=True) if k or self.task.exclusive)  # fmt: skip
            parts.append(f"{s} {len(idx)} ({shown or 'no finding present'})")
        excl = ", ".join(f"{k}: {v}" for k, v in sorted(self.exclusions.items())) or "none"
        return f"{len(self.labels)} images at {self.image_size}px; " + "; ".join(parts) + f"; excluded: {excl}"  # fmt: skip
