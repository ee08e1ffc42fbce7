"""From a DataConfig to the CachedData trials train on: index, cache, split, in one call."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from trainables.config import SPLIT_FRACTIONS, DataConfig
from trainables.data.cache import load_or_build
from trainables.data.cached import CachedData
from trainables.data.egd import read_egd
from trainables.data.split import SplitSpec, patient_split, read_split_file
from trainables.data.subset import keep_train_images
from trainables.data.synthetic import read_manifest, write_synthetic
from trainables.data.synthetic.reader import ReaderSpec
from trainables.data.synthetic.shortcuts import ShortcutSpec

logger = logging.getLogger(__name__)


def shortcut_spec(cfg: DataConfig) -> ShortcutSpec | None:
    """The shortcut the twin of ``cfg`` carries, or None (ValueError/KeyError for a bad one)."""
    if cfg.synthetic_shortcut is None:
        return None
    return ShortcutSpec(
        cfg.synthetic_shortcut, cfg.synthetic_shortcut_fraction, cfg.synthetic_shortcut_test
    )


def reader_spec(cfg: DataConfig) -> ReaderSpec | None:
    """How the twin of ``cfg`` simulates its reader, or None for the default reading."""
    spec = ReaderSpec(cfg.synthetic_scanning_share, cfg.synthetic_thoroughness)
    return None if spec.is_default() else spec


def synthetic_root(cfg: DataConfig) -> Path:
    """Where the synthetic twin for ``cfg`` lives:
    ``{data_dir}/synthetic-{N}-seed{S}[-<shortcut>-split<seed>-<train>-<val>-<test>][-<reader>]``.

    A shortcut twin's pixels follow its split (the test images are where the shortcut breaks), so
    its folder names the split too; a clean twin is split after reading, from the DataConfig. A
    twin whose reader is not the default names it (``-scan0.3-thor2``); the default adds nothing.
    """
    name = f"synthetic-{cfg.synthetic_images}-seed{cfg.synthetic_seed}"
    spec = shortcut_spec(cfg)
    if spec is not None:
        name += f"-{spec.tag()}"
        default = cfg.split_seed == 0 and tuple(cfg.split_fractions) == SPLIT_FRACTIONS
        if not default:  # the default keeps the folder names of twins written before
            shares = "-".join(f"{round(100 * f):g}" for f in cfg.split_fractions)
            name += f"-split{cfg.split_seed}-{shares}"
    reader = reader_spec(cfg)
    if reader is not None:
        name += f"-{reader.tag()}"
    return Path(cfg.data_dir).resolve() / name


def ensure_synthetic(cfg: DataConfig) -> Path:
    """Generate the synthetic twin on first use and return its folder.

    The twin is written into a temporary sibling folder and renamed into place when complete, so
    the final folder exists only if generation finished; an interrupted run is never reused.
    Concurrent callers each generate, the first rename wins, the others discard their copy.
    """
    root = synthetic_root(cfg)
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        logger.info(
            "generating the synthetic twin (%d images, seed %d) in %s",
            cfg.synthetic_images,
            cfg.synthetic_seed,
            root,
        )
        write_synthetic(
            tmp,
            cfg.synthetic_images,
            cfg.synthetic_seed,
            shortcut=shortcut_spec(cfg),
            reader=reader_spec(cfg),
            split=SplitSpec(cfg.split_seed, tuple(cfg.split_fractions)),
        )
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():
                raise
            logger.info("another process finished %s first; using it", root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def resolve_sources(cfg: DataConfig) -> DataConfig:
    """``cfg`` with absolute paths and, when ``egd_root`` is None, the synthetic twin filled in.

    Absolute paths matter because Ray trials chdir into their trial folder.
    """
    if cfg.egd_root is None:
        root = str(ensure_synthetic(cfg))
        return dataclasses.replace(
            cfg, egd_root=root, mimic_root=root, data_dir=str(Path(cfg.data_dir).resolve())
        )

    def absolute(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p else None

    return dataclasses.replace(
        cfg,
        egd_root=absolute(cfg.egd_root),
        mimic_root=absolute(cfg.mimic_root),
        image_list=absolute(cfg.image_list),
        split_file=absolute(cfg.split_file),
        data_dir=str(Path(cfg.data_dir).resolve()),
    )


def prepare_data(cfg: DataConfig, *, progress: bool = True) -> CachedData:
    """Index the images, build or load the preprocessing cache, split by patient.

    Args:
        cfg: data settings. ``egd_root=None`` uses (and on first use generates) the synthetic twin
            in ``{data_dir}/synthetic-{N}-seed{S}``.
        progress: tqdm bar while decoding DICOMs (only on a terminal).

    Returns:
        CachedData with ``exclusions`` (index + decoding) and ``fingerprint`` filled.

    Raises:
        FileNotFoundError / ValueError: missing or malformed tables, a bad split file, or no
            usable image.
    """
    cfg = resolve_sources(cfg)
    index = read_egd(cfg.egd_root, cfg.resolved_mimic_root(), cfg.image_list)
    manifest = read_manifest(cfg.egd_root)
    # The twin's images are smaller than MIMIC's: gaze_sigma is in MIMIC pixels everywhere.
    scale = float(manifest["pixel_scale"]) if manifest else 1.0
    cache_cfg = dataclasses.replace(cfg, gaze_sigma=cfg.gaze_sigma * scale)
    content = load_or_build(index, cache_cfg, progress=progress).data
    split_file = cfg.split_file
    if split_file is None and manifest and manifest.get("shortcut"):
        # A shortcut twin's test split is where its shortcut is broken: use the split it was
        # written with, not one drawn again.
        split_file = str(Path(cfg.egd_root) / manifest["split_file"])
        logger.info("shortcut twin: using its split file %s", split_file)
    if split_file:
        split = read_split_file(split_file, content.keys)
    else:
        split = patient_split(
            content.labels, content.patients, seed=cfg.split_seed, fractions=cfg.split_fractions
        )
    exclusions = Counter(index.exclusions)
    exclusions.update(content.exclusions)
    data = dataclasses.replace(content, split=split, exclusions=dict(exclusions))
    if cfg.train_images is not None:  # data efficiency: part of the training split only
        data = keep_train_images(data, cfg.train_images, cfg.train_images_seed)
    logger.info("%s", data.summary())
    return data
