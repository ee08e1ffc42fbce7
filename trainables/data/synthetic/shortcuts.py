"""Planted shortcuts: class-correlated signals away from the findings, where the gaze does not fall.

A shortcut twin carries, in most training and validation images, a signal that predicts the class
(a hospital tag whose corner says the class, a patch whose brightness does, a bright line along one
image edge...) in the image corners or borders, outside the body, where the simulated radiologist
never looks. In the test split it is broken (absent, or drawn for a random class), so a model that
learned it loses AUC there, and a model that learned the findings does not. This is the classic
"right for the wrong reasons" test of Ross et al. 2017 (decoy MNIST), on radiographs.

A kind is a function ``draw(image, code, rng) -> None`` that draws, in place, the shortcut for class
``code`` on a float [0, 1] image (bright = attenuating); register it with ``@register_shortcut``.
Shortcuts are drawn no brighter than the image's own bright end (its 98th percentile), like lead
markers on film, so they do not change the image's windowing or min-max scaling and every other
pixel of the twin stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trainables.data.datasets import task_of
from trainables.registry import Registry

CLASSES = task_of("egd-cxr").classes  # the EGD-CXR entry's classes

ShortcutDraw = Callable[[np.ndarray, int, np.random.Generator], None]
SHORTCUTS: Registry[ShortcutDraw] = Registry("shortcut")
TestMode = Literal["absent", "shuffled"]


@dataclass(frozen=True)
class ShortcutSpec:
    """Which shortcut a twin carries, and how often."""

    kind: str = "marker"  # SHORTCUTS registry name
    fraction: float = 0.9  # train/val images carrying the class's shortcut (the rest: none)
    test: TestMode = "absent"  # test images: no shortcut, or the shortcut of a random class

    def __post_init__(self) -> None:
        SHORTCUTS.entry(self.kind)  # KeyError listing the kinds
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"shortcut fraction must be in [0, 1], got {self.fraction}")
        if self.test not in ("absent", "shuffled"):
            raise ValueError(f"shortcut test mode must be absent or shuffled, got {self.test!r}")

    def code(self, label: int, split: str, rng: np.random.Generator) -> int | None:
        """The class whose shortcut an image gets (None: no shortcut)."""
        if split == "test":
            return int(rng.integers(len(CLASSES))) if self.test == "shuffled" else None
        return label if rng.random() < self.fraction else None

    def tag(self) -> str:
        """A short name for folders: ``marker-p0.9-absent``."""
        return f"{self.kind}-p{self.fraction:g}-{self.test}"


def register_shortcut(name: str) -> Callable[[ShortcutDraw], ShortcutDraw]:
    """Decorator registering ``draw(image, code, rng)`` as shortcut kind ``name``."""
    return SHORTCUTS.register(name)


def list_shortcuts() -> list[str]:
    return SHORTCUTS.names()


def plant(image: np.ndarray, kind: str, code: int | None, rng: np.random.Generator) -> np.ndarray:
    """``image`` with the shortcut of class ``code`` drawn on it (unchanged for None)."""
    if code is None:
        return image
    out = image.copy()
    SHORTCUTS.get(kind)(out, code, rng)
    return out


def _side(image: np.ndarray, fraction: float) -> int:
    return max(2, round(min(image.shape) * fraction))


# Corners of the image (row, column) from the top-left: outside the body on every phantom.
_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _corner_box(image: np.ndarray, corner: str, side: int, margin: int) -> tuple[slice, slice]:
    h, w = image.shape
    top = margin if corner.startswith("top") else h - margin - side
    left = margin if corner.endswith("left") else w - margin - side
    return slice(top, top + side), slice(left, left + side)


def _bright(image: np.ndarray) -> float:
    return float(np.quantile(image, 0.98))


@register_shortcut("marker")
def marker(image: np.ndarray, code: int, rng: np.random.Generator) -> None:
    """A bright square tag (like a lead marker or a hospital sticker) whose CORNER encodes the
    class: top-left, top-right, bottom-left for classes 0, 1, 2."""
    side = _side(image, 0.07)
    rows, cols = _corner_box(image, _CORNERS[code], side, _side(image, 0.03))
    image[rows, cols] = _bright(image) * rng.uniform(0.92, 1.0)


@register_shortcut("intensity")
def intensity(image: np.ndarray, code: int, rng: np.random.Generator) -> None:
    """A square patch in the top-left corner whose BRIGHTNESS encodes the class."""
    side = _side(image, 0.08)
    rows, cols = _corner_box(image, "top-left", side, _side(image, 0.03))
    level = (0.4, 0.7, 1.0)[code] - rng.uniform(0.0, 0.04)
    image[rows, cols] = _bright(image) * level


@register_shortcut("border")
def border(image: np.ndarray, code: int, rng: np.random.Generator) -> None:
    """A bright line along one image EDGE that encodes the class: top, left, right."""
    w = image.shape[1]
    width = _side(image, 0.025)
    value = _bright(image) * rng.uniform(0.92, 1.0)
    if code == 0:
        image[:width, :] = value
    elif code == 1:
        image[:, :width] = value
    else:
        image[:, w - width :] = value
