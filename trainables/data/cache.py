"""Preprocessing cache: decode every DICOM and draw every gaze map once, at training size.

One uncompressed ``.npz`` per content under ``{data_dir}/cache/``, named by the dataset and a sha256
of the input files' identity (path, size, mtime_ns of the tables and of every DICOM used) and of
every setting that changes the content. Touch a DICOM or change ``image_size`` and a new file is
built; change nothing and the file is loaded without decoding anything.

What is drawn is the dataset's (``trainables.data.datasets``): its ``draw`` turns one record's
fixations into the gaze target (and, for several readers, each reader's map, the fixation points
and the expert ellipses) on the image's letterbox grid, in decoding worker processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from trainables.config import DataConfig
from trainables.data.cached import CachedData, Readers
from trainables.data.datasets import get_dataset
from trainables.data.dicom import DicomError, letterbox, read_dicom
from trainables.data.drawn import Drawn, stack_readers

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump whenever decoding or drawing changes what ends up in the cache
MAX_WORKERS = 8
_POOL_MIN_IMAGES = 64  # below this a process pool costs more to start than it saves


@dataclass
class CacheContent:
    """What the cache holds (the dataset, no split yet), plus how this call got it."""

    data: CachedData  # images, gaze maps, labels, keys, patients, exclusions, fingerprint
    built: bool = False  # True when this call decoded the DICOMs, False when it loaded the file
    decoded: int = 0  # DICOMs decoded by this call
    seconds: float = 0.0  # build time (0 when loaded)

    @property
    def rate(self) -> float:
        """Images per second of the build (0 when loaded)."""
        return self.decoded / self.seconds if self.seconds > 0 else 0.0


def _identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_fingerprint(index: Any, cfg: DataConfig) -> str:
    """sha256 over input file identities and every content-relevant setting (the dataset's own
    included: ``content_settings``)."""
    impl = get_dataset(cfg.dataset).impl()
    settings = {
        "version": CACHE_VERSION,
        "image_size": cfg.image_size,
        "image_dtype": cfg.image_dtype,
        **impl.content_settings(cfg),
        "data_root": str(Path(cfg.data_root).resolve()) if cfg.data_root else None,
        "mimic_root": str(Path(cfg.resolved_mimic_root()).resolve())
        if cfg.resolved_mimic_root()
        else None,
        "image_list": str(Path(cfg.image_list).resolve()) if cfg.image_list else None,
    }
    if cfg.dataset != "egd-cxr":  # EGD-CXR's caches keep the names they were written under
        settings["dataset"] = cfg.dataset
    files = [_identity(p) for p in index.source_files]
    files += [_identity(r.dicom_path) for r in index.records]
    blob = json.dumps({"settings": settings, "files": files}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def cache_path(cfg: DataConfig, fingerprint: str) -> Path:
    return Path(cfg.data_dir) / "cache" / f"{cfg.dataset}-{fingerprint[:24]}.npz"


@dataclass(frozen=True)
class _Task:
    """One image to decode and draw: picklable, for the worker processes."""

    dataset: str
    key: str
    dicom_path: Path
    size: int
    dtype: str
    job: Any  # the dataset's own drawing job (its fixations, pads, settings ...)


@dataclass(frozen=True)
class _Result:
    image: np.ndarray | None
    drawn: Drawn | None
    reason: str | None  # exclusion reason when image or gaze is None
    message: str = ""


def _prepare_one(task: _Task) -> _Result:
    """Decode, letterbox and draw one image (runs in worker processes)."""
    try:
        native = read_dicom(task.dicom_path, name=task.key)  # messages name the key, not the path
    except DicomError as exc:
        return _Result(None, None, "undecodable_dicom", exc.detail)  # no path: patient id
    image, transform = letterbox(native, task.size)
    drawn = get_dataset(task.dataset).impl().draw(task.job, native.shape, transform, task.size)
    if drawn.gaze is None:
        return _Result(None, drawn, drawn.reason or "no_fixation_on_image", f"{task.key}: {drawn.message}")  # fmt: skip
    if task.dtype == "uint8":
        stored = np.round(image * 255).astype(np.uint8)
    else:
        stored = image.astype(np.float16)
    return _Result(stored, drawn, None)


def _run(tasks: list[_Task], workers: int, progress: bool) -> list[_Result]:
    bar = {
        "total": len(tasks),
        "desc": "decoding DICOMs",
        "unit": "img",
        "disable": not (progress and sys.stderr.isatty()),
    }
    if workers > 1:
        # spawn: the caller may hold threads (torch, Ray) that make fork unsafe.
        ctx = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                return list(tqdm(pool.map(_prepare_one, tasks, chunksize=4), **bar))
        except BrokenProcessPool as err:
            # e.g. a script without an `if __name__ == "__main__":` guard (spawn re-imports it)
            logger.warning("decoding pool failed (%s); decoding in this process instead", err)
    return list(tqdm(map(_prepare_one, tasks), **bar))


def build_cache(index: Any, cfg: DataConfig, fingerprint: str, *, progress: bool = True, workers: int | None = None) -> CacheContent:  # fmt: skip
    """Decode and draw every indexed image; failures become counted exclusions."""
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
        if len(index.records) < _POOL_MIN_IMAGES:
            workers = 1
    entry = get_dataset(cfg.dataset)
    impl = entry.impl()
    tasks = [
        _Task(cfg.dataset, r.key, r.dicom_path, cfg.image_size, cfg.image_dtype, impl.job(r, cfg))
        for r in index.records
    ]
    t0 = time.perf_counter()
    images, drawn, kept = [], [], []
    counts: Counter[str] = Counter()
    for rec, res in zip(index.records, _run(tasks, workers, progress), strict=True):
        if res.drawn is not None:
            counts.update(res.drawn.counts)
        if res.reason is not None:
            counts[res.reason] += 1
            logger.warning("excluded %s as %s: %s", rec.key, res.reason, res.message)
            continue
        images.append(res.image)
        drawn.append(res.drawn)
        kept.append(rec)
    seconds = time.perf_counter() - t0
    if not kept:
        decoding = {k: v for k, v in counts.items() if v}
        raise ValueError(
            f"no usable image among {len(index.records)} indexed images (exclusions while "
            f"indexing: {dict(sorted(index.exclusions.items()))}; while decoding: {decoding})"
        )
    data = CachedData(
        images=np.stack(images),
        gaze=np.stack([d.gaze.astype(np.float16) for d in drawn]),
        labels=impl.labels(kept),
        keys=[r.key for r in kept],
        patients=[r.patient for r in kept],
        exclusions={k: v for k, v in counts.items() if v},
        fingerprint=fingerprint,
        task=entry.task,
        readers=stack_readers(drawn),
        dataset=cfg.dataset,
    )
    content = CacheContent(data, built=True, decoded=len(tasks), seconds=seconds)
    logger.info(
        "decoded %d DICOMs at %d px in %.1f s (%.1f images/s, %d workers)",
        len(tasks), cfg.image_size, seconds, content.rate, workers,
    )  # fmt: skip
    return content


def save_cache(content: CacheContent, path: Path) -> None:
    """Write atomically (temp file + rename), so a reader never sees a half-written cache."""
    data = content.data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            images=data.images,
            gaze=data.gaze,
            labels=data.labels,
            keys=np.array(data.keys, dtype=str),
            patients=np.array(data.patients, dtype=str),
            exclusions=np.array(json.dumps(data.exclusions)),
            fingerprint=np.array(data.fingerprint),
            **(data.readers.arrays() if data.readers is not None else {}),
        )
    os.replace(tmp, path)


# What a damaged .npz raises: truncated or zero-byte files, a bad CRC, a broken zip directory,
# a member that is not an array, a missing member.
_CORRUPT = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def load_cache(path: Path, fingerprint: str, dataset: str = "egd-cxr") -> CacheContent | None:
    """The cached content, or None when the file is absent or for other inputs.

    A corrupt file (truncated, empty, bad CRC ...) is reported, removed and None returned, so the
    caller rebuilds it instead of failing on it in every later run.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            # CachedData checks that every array has one row per image.
            data = CachedData(
                images=z["images"],
                gaze=z["gaze"],
                labels=z["labels"],
                keys=z["keys"].tolist(),
                patients=z["patients"].tolist(),
                exclusions=json.loads(str(z["exclusions"])),
                fingerprint=fingerprint,
                readers=Readers.from_arrays(z),
                dataset=dataset,
            )
        return CacheContent(data)
    except _CORRUPT as exc:
        logger.warning(
            "preprocessing cache %s is corrupt (%s: %s); removing it and rebuilding",
            path,
            type(exc).__name__,
            exc,
        )
        try:
            path.unlink(missing_ok=True)
        except OSError as err:  # save_cache replaces it anyway
            logger.warning("could not remove %s (%s)", path, err)
        return None


def load_or_build(
    index: Any,
    cfg: DataConfig,
    *,
    progress: bool = True,
    workers: int | None = None,
) -> CacheContent:
    """Load the cache for these inputs and settings, or build and save it.

    Args:
        index: the indexed images (the dataset's ``read``).
        cfg: data settings; ``cfg.data_root`` must be the folder the index was read from.
        progress: show a tqdm bar while decoding (only on a terminal).
        workers: decoding processes (default min(cpu count, 8); 1 = in this process).
    """
    fingerprint = cache_fingerprint(index, cfg)
    path = cache_path(cfg, fingerprint)
    content = load_cache(path, fingerprint, cfg.dataset)
    if content is not None:
        logger.info("loaded preprocessing cache %s (%d images)", path, len(content.data.labels))
        return content
    content = build_cache(index, cfg, fingerprint, progress=progress, workers=workers)
    save_cache(content, path)
    logger.info("wrote preprocessing cache %s", path)
    return content
