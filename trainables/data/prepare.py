"""From a DataConfig to the CachedData trials train on: index, cache, split, in one call."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from trainables.config import DataConfig
from trainables.data.cache import load_or_build
from trainables.data.cached import CachedData
from trainables.data.datasets import get_dataset
from trainables.data.split import patient_split, read_split_file
from trainables.data.subset import keep_train_images

logger = logging.getLogger(__name__)


def synthetic_root(cfg: DataConfig) -> Path:
    """Where the synthetic twin of ``cfg``'s dataset lives (``{data_dir}/<its twin name>``)."""
    return Path(cfg.data_dir).resolve() / get_dataset(cfg.dataset).impl().twin_name(cfg)


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
            "generating the synthetic %s twin (%d images, seed %d) in %s",
            cfg.dataset, cfg.synthetic_images, cfg.synthetic_seed, root,
        )  # fmt: skip
        get_dataset(cfg.dataset).impl().write_twin(tmp, cfg)
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
    """``cfg`` with absolute paths and, when ``data_root`` is None, the synthetic twin filled in.

    Absolute paths matter because Ray trials chdir into their trial folder.
    """
    if cfg.data_root is None:
        root = str(ensure_synthetic(cfg))
        return dataclasses.replace(
            cfg, data_root=root, mimic_root=root, data_dir=str(Path(cfg.data_dir).resolve())
        )

    def absolute(p: str | None) -> str | None:
        return str(Path(p).resolve()) if p else None

    return dataclasses.replace(
        cfg,
        data_root=absolute(cfg.data_root),
        mimic_root=absolute(cfg.mimic_root),
        image_list=absolute(cfg.image_list),
        split_file=absolute(cfg.split_file),
        data_dir=str(Path(cfg.data_dir).resolve()),
    )


def prepare_data(cfg: DataConfig, *, progress: bool = True) -> CachedData:
    """Index the images, build or load the preprocessing cache, split by patient.

    Args:
        cfg: data settings. ``data_root=None`` uses (and on first use generates) the dataset's
            synthetic twin in ``{data_dir}/<twin name>``.
        progress: tqdm bar while decoding DICOMs (only on a terminal).

    Returns:
        CachedData with ``exclusions`` (index + decoding) and ``fingerprint`` filled.

    Raises:
        FileNotFoundError / ValueError: missing or malformed tables, a bad split file, or no
            usable image.
    """
    cfg = resolve_sources(cfg)
    impl = get_dataset(cfg.dataset).impl()
    index = impl.read(cfg)
    content = load_or_build(index, impl.prepared(cfg), progress=progress).data
    split_file = cfg.split_file or impl.split_file(cfg)
    if cfg.dataset_split:
        split = impl.dataset_split(index, content.keys)
    elif split_file:
        logger.info("using the split file %s", split_file)
        split = read_split_file(split_file, content.keys)
    else:
        strata = content.task.stratum(content.labels)
        split = patient_split(strata, content.patients, seed=cfg.split_seed, fractions=cfg.split_fractions)  # fmt: skip
    exclusions = Counter(index.exclusions)
    exclusions.update(content.exclusions)
    data = dataclasses.replace(content, split=split, exclusions=dict(exclusions))
    if cfg.train_images is not None:  # data efficiency: part of the training split only
        data = keep_train_images(data, cfg.train_images, cfg.train_images_seed)
    logger.info("%s", data.summary())
    return data
