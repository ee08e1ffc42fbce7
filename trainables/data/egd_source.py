"""EGD-CXR as a dataset registry entry (``trainables.data.datasets``): reading, the drawing job of
one image, its gaze map, and the synthetic twin. Everything EGD-specific the cache and prepare need.

The gaze target is the published recipe done properly: one Gaussian per fixation (sigma in MIMIC
pixels, scaled to the twin's smaller images), through the pads of the 1920x1080 display or the
dataset's X/Y_ORIGINAL, on the letterbox grid, max-normalised (``trainables.data.heatmaps``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import SPLIT_FRACTIONS, DataConfig
from trainables.data.drawn import Drawn
from trainables.data.heatmaps import Fixations, Pads, native_fixations, static_heatmap


@dataclass(frozen=True)
class Job:
    """What a decoding worker needs to draw one EGD-CXR image's gaze map."""

    pads: Pads
    fixations: Fixations
    sigma: float
    weighting: str
    coordinates: str


def read(cfg: DataConfig):
    """The EGD-CXR index (``trainables.data.egd.read_egd``) of ``cfg``'s folders."""
    from trainables.data.egd import read_egd  # pandas: only where the tables are read

    return read_egd(cfg.data_root, cfg.resolved_mimic_root(), cfg.image_list)


def prepared(cfg: DataConfig) -> DataConfig:
    """``gaze_sigma`` is in MIMIC pixels everywhere: scaled to a twin's smaller images."""
    from trainables.data.synthetic import read_manifest

    manifest = read_manifest(cfg.data_root)
    scale = float(manifest["pixel_scale"]) if manifest else 1.0
    return dataclasses.replace(cfg, gaze_sigma=cfg.gaze_sigma * scale)


def content_settings(cfg: DataConfig) -> dict[str, Any]:
    """The settings besides size and dtype that change what the cache holds."""
    return {
        "gaze_sigma": float(cfg.gaze_sigma),
        "gaze_weighting": cfg.gaze_weighting,
        "coordinates": cfg.gaze_coordinates,
    }


def job(record: Any, cfg: DataConfig) -> Job:
    return Job(record.pads, record.fixations, float(cfg.gaze_sigma), cfg.gaze_weighting, cfg.gaze_coordinates)  # fmt: skip


def draw(job: Job, native_shape: tuple[int, int], transform: Any, size: int) -> Drawn:
    """The image's gaze target: its on-image fixations' Gaussians, max-normalised."""
    fix = native_fixations(job.fixations, job.pads, native_shape, job.coordinates)  # type: ignore[arg-type]
    gaze = static_heatmap(fix, transform, size, job.sigma, job.weighting)  # type: ignore[arg-type]
    counts = {"off_image_fixations": fix.off_image}
    if gaze is None:
        return Drawn(None, counts, "no_fixation_on_image", f"all {fix.off_image} fixations are off the image")  # fmt: skip
    return Drawn(gaze, counts)


def labels(records: Any) -> np.ndarray:
    """Class ids of the kept records (index into the task's classes)."""
    return np.array([r.label for r in records], dtype=np.int64)


def split_file(cfg: DataConfig) -> str | None:
    """A shortcut twin's test split is where its shortcut is broken: use the split it was written
    with, not one drawn again."""
    from trainables.data.synthetic import read_manifest

    manifest = read_manifest(cfg.data_root)
    if manifest and manifest.get("shortcut"):
        return str(Path(cfg.data_root) / manifest["split_file"])
    return None


def dataset_split(index: Any, keys: list[str]) -> np.ndarray:
    raise ValueError("EGD-CXR has no split of its own: drop data.dataset_split (a seeded patient split, or --set data.split_file=...)")  # fmt: skip


# -- the synthetic twin ------------------------------------------------------------------------
def twin_name(cfg: DataConfig) -> str:
    """``synthetic-{N}-seed{S}[-<shortcut>-split<seed>-<train>-<val>-<test>][-<reader>]``.

    A shortcut twin's pixels follow its split (the test images are where the shortcut breaks), so
    its folder names the split too; a clean twin is split after reading, from the DataConfig. A
    twin whose reader is not the default names it (``-scan0.3-thor2``); the default adds nothing.
    """
    name = f"synthetic-{cfg.synthetic_images}-seed{cfg.synthetic_seed}"
    spec = shortcut_spec(cfg)
    if spec is not None:
        name += f"-{spec.tag()}{split_tag(cfg)}"
    reader = reader_spec(cfg)
    if reader is not None:
        name += f"-{reader.tag()}"
    return name


def split_tag(cfg: DataConfig) -> str:
    """``-split<seed>-<train>-<val>-<test>`` of a shortcut twin's split; empty for the default
    (which keeps the folder names of twins written before)."""
    if cfg.split_seed == 0 and tuple(cfg.split_fractions) == SPLIT_FRACTIONS:
        return ""
    shares = "-".join(f"{round(100 * f):g}" for f in cfg.split_fractions)
    return f"-split{cfg.split_seed}-{shares}"


def write_twin(out: Path, cfg: DataConfig) -> None:
    from trainables.data.split import SplitSpec
    from trainables.data.synthetic import write_synthetic

    write_synthetic(
        out, cfg.synthetic_images, cfg.synthetic_seed, shortcut=shortcut_spec(cfg),
        reader=reader_spec(cfg), split=SplitSpec(cfg.split_seed, tuple(cfg.split_fractions)),
    )  # fmt: skip


def shortcut_spec(cfg: DataConfig):
    """The shortcut the twin of ``cfg`` carries, or None (ValueError/KeyError for a bad one)."""
    from trainables.data.synthetic.shortcuts import ShortcutSpec

    if cfg.synthetic_shortcut is None:
        return None
    return ShortcutSpec(cfg.synthetic_shortcut, cfg.synthetic_shortcut_fraction, cfg.synthetic_shortcut_test)  # fmt: skip


def reader_spec(cfg: DataConfig):
    """How the twin of ``cfg`` simulates its reader, or None for the default reading."""
    from trainables.data.synthetic.reader import ReaderSpec

    spec = ReaderSpec(cfg.synthetic_scanning_share, cfg.synthetic_thoroughness)
    return None if spec.is_default() else spec
