"""REFLACX as a dataset registry entry (``trainables.data.datasets``): reading, the drawing job of
one image, its gaze maps, and the synthetic twin.

The gaze target of an image is the mean of its readers' maps (each the authors' recipe:
``trainables.data.reflacx_gaze``), max-normalised; an image read by several radiologists also
keeps each reader's map (the human ceiling, the per-reader training option), every reader's
fixations on the grid (NSS, AUC-Judd, shuffled AUC), and the expert ellipses of its present
findings (the pointing game, the energy inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import DataConfig
from trainables.data.drawn import Drawn
from trainables.data.reflacx_gaze import (
    ReflacxFixations,
    fixation_pixels,
    max_normalise,
    mean_of_readers,
    reader_distributions,
)
from trainables.localization import boxes_to_grid

SPLIT_IDS = {"train": 0, "validate": 1, "test": 2}  # MIMIC-CXR's names -> ours


@dataclass(frozen=True)
class Job:
    """One image's readings with gaze, and the native boxes of its present findings' ellipses."""

    fixations: tuple[ReflacxFixations, ...]
    boxes: np.ndarray  # (E, 4) native pixels


def read(cfg: DataConfig):
    """The REFLACX index (``trainables.data.reflacx.read_reflacx``) of ``cfg``'s folders."""
    from trainables.data.reflacx import read_reflacx  # pandas, through egd's table reader

    return read_reflacx(cfg.data_root, cfg.resolved_mimic_root(), threshold=cfg.certainty_threshold)


def prepared(cfg: DataConfig) -> DataConfig:
    return cfg  # the recipe's sigma is each fixation's own pixels per degree: nothing to scale


def content_settings(cfg: DataConfig) -> dict[str, Any]:
    return {"certainty_threshold": cfg.certainty_threshold}


def job(record: Any, cfg: DataConfig) -> Job:
    from trainables.data.reflacx import target_ellipses

    fixations = tuple(r.fixations for r in record.gaze_readings)
    return Job(fixations, np.asarray(target_ellipses(record, cfg.certainty_threshold), float))


def draw(job: Job, native_shape: tuple[int, int], transform: Any, size: int) -> Drawn:
    """The mean of the readers' maps as the target; with several readers, each one's map."""
    maps = reader_distributions(job.fixations, transform, size)
    mean = mean_of_readers(maps)
    if mean is None:
        return Drawn(None, {}, "no_fixation_on_image", "no reader's fixation falls on the image")
    kept = [m for m in maps if m is not None]
    readers = np.stack([max_normalise(m) for m in kept]) if len(kept) > 1 else None
    on_image = [f for f, m in zip(job.fixations, maps, strict=True) if m is not None]
    points = [
        np.column_stack([np.full(len(p), r), p])
        for r, p in enumerate(fixation_pixels(f, transform) for f in on_image)
    ]
    return Drawn(
        max_normalise(mean),
        readers=readers,
        points=np.concatenate(points).astype(np.int16) if points else np.zeros((0, 3), np.int16),
        boxes=boxes_to_grid(job.boxes, transform).astype(np.float32),
    )


def labels(records: Any) -> np.ndarray:
    """(N, F) 0/1 findings of the kept records (the strict majority of their readers)."""
    return np.stack([r.labels for r in records]).astype(np.int8)


def split_file(cfg: DataConfig) -> str | None:
    """A twin's own split (``split.csv``: a clean twin and its shortcut twin split alike, the
    shortcut breaking on the test images); real data: None (a seeded split)."""
    from trainables.data.synthetic import read_manifest

    manifest = read_manifest(cfg.data_root)
    if manifest and manifest.get("split_file"):
        return str(Path(cfg.data_root) / manifest["split_file"])
    return None


def dataset_split(index: Any, keys: list[str]) -> np.ndarray:
    """MIMIC-CXR's own split of each kept image (``--set data.dataset_split=true``)."""
    by_key = {r.key: r.split for r in index.records}
    unknown = sorted({by_key[k] for k in keys} - set(SPLIT_IDS))
    if unknown:
        raise ValueError(f"REFLACX split values {unknown}; expected {', '.join(SPLIT_IDS)}")
    return np.array([SPLIT_IDS[by_key[k]] for k in keys], dtype=np.int8)


def twin_name(cfg: DataConfig) -> str:
    """``reflacx-synthetic-{N}-seed{S}[-multi{M}][-<shortcut>][-split<seed>-<train>-<val>-<test>][-<reader>]``
    (a twin is written with its split: ``split_file``)."""
    from trainables.data.egd_source import reader_spec, shortcut_spec, split_tag

    name = f"reflacx-synthetic-{cfg.synthetic_images}-seed{cfg.synthetic_seed}"
    if cfg.synthetic_multi_reader_images is not None:
        name += f"-multi{cfg.synthetic_multi_reader_images}"
    spec = shortcut_spec(cfg)
    name += (f"-{spec.tag()}" if spec else "") + split_tag(cfg)  # the twin holds its split
    reader = reader_spec(cfg)
    return name + (f"-{reader.tag()}" if reader else "")


def write_twin(out: Path, cfg: DataConfig) -> None:
    from trainables.data.egd_source import reader_spec, shortcut_spec
    from trainables.data.split import SplitSpec
    from trainables.data.synthetic.reflacx import write_reflacx_twin

    write_reflacx_twin(
        out, cfg.synthetic_images, cfg.synthetic_seed, shortcut=shortcut_spec(cfg),
        split=SplitSpec(cfg.split_seed, tuple(cfg.split_fractions)),
        multi_reader_images=cfg.synthetic_multi_reader_images, reader=reader_spec(cfg),
    )  # fmt: skip
