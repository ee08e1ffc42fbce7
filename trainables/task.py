"""What a model predicts: a dataset's class names, and whether they exclude each other.

EGD-CXR's task is three exclusive classes (softmax, cross-entropy, one label per image); REFLACX's
is a list of findings, any number present per image (sigmoid and binary cross-entropy per finding).
Everything that depends on the classes takes a ``Task``: the model head, the loss, the metrics, the
record's metric keys and CSV columns, the tables, figures, console and ``predict``. Torch-free (the
two functions that need torch import it when called).

Labels: an exclusive task's are class ids ``(N,)``; a multi-label task's are 0/1 ``(N, K)``.
``multi_hot`` turns either into ``(N, K)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def slug(name: str) -> str:
    """A class name as a metric-key part: ``Enlarged cardiac silhouette`` -> ``enlarged_cardiac_silhouette``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Task:
    """A dataset's classes (their order is the model head's) and how they relate."""

    classes: tuple[str, ...]
    exclusive: bool = True  # one class per image (softmax) vs any number (sigmoid per class)

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len({slug(c) for c in self.classes}) != len(self.classes):
            raise ValueError(f"a task needs >= 2 classes with distinct names, got {self.classes}")

    @property
    def n(self) -> int:
        return len(self.classes)

    @property
    def auc_keys(self) -> tuple[str, ...]:
        """Per-class one-vs-rest AUC keys (class order), then their mean."""
        return (*(f"auc_{slug(c)}" for c in self.classes), "auc_mean")

    @property
    def auc_columns(self) -> tuple[str, ...]:
        """The same keys in the paper's table order: the mean first."""
        return ("auc_mean", *self.auc_keys[:-1])

    @property
    def prob_columns(self) -> tuple[str, ...]:
        return tuple(f"prob_{slug(c)}" for c in self.classes)

    @property
    def label_columns(self) -> tuple[str, ...]:
        """``label`` and ``label_name`` (exclusive), or ``label_<class>`` 0/1 per class."""
        if self.exclusive:
            return ("label", "label_name")
        return tuple(f"label_{slug(c)}" for c in self.classes)

    @property
    def prediction_columns(self) -> tuple[str, ...]:
        """The columns of a trial's ``predictions/test.csv``."""
        return ("key", "split", *self.label_columns, *self.prob_columns)

    def multi_hot(self, labels: np.ndarray) -> np.ndarray:
        """``(N, K)`` 0/1 labels from class ids (exclusive) or 0/1 labels (multi-label)."""
        labels = np.asarray(labels)
        if labels.ndim == 1:
            return np.eye(self.n, dtype=np.int64)[labels.astype(np.int64)]
        if labels.ndim != 2 or labels.shape[1] != self.n:
            raise ValueError(f"labels of shape {labels.shape} for a task of {self.n} classes")
        return labels.astype(np.int64)

    def stratum(self, labels: np.ndarray) -> np.ndarray:
        """One group id per image to stratify a split by: the class (exclusive), else the number
        of findings present, capped at 3 (a multi-label set has no single class per image)."""
        labels = np.asarray(labels)
        return labels.astype(np.int64) if labels.ndim == 1 else np.minimum(labels.sum(1), 3)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "exclusive": self.exclusive}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Task:
        return cls(tuple(str(c) for c in value["classes"]), bool(value["exclusive"]))

    # -- the two torch functions: probabilities and the classification loss ------------------
    def probabilities(self, logits):
        """Class probabilities of logits ``(B, K)``: softmax (exclusive) or sigmoid."""
        import torch

        return torch.softmax(logits, dim=1) if self.exclusive else torch.sigmoid(logits)

    def loss(self, logits, labels, reduction: str = "mean"):
        """Cross-entropy over exclusive classes (labels: ids), else binary cross-entropy per
        class (labels: 0/1), averaged over classes and images."""
        import torch.nn.functional as F

        if self.exclusive:
            return F.cross_entropy(logits, labels, reduction=reduction)
        per = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
        return per.mean() if reduction == "mean" else per.mean(1).sum()
