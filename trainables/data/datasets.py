"""The dataset registry: a dataset is one entry (like arms, generators and search spaces).

An entry names its task (class names; exclusive or multi-label), its reader (files -> one record
per image with key, patient, labels, DICOM path, each reader's fixations and optional expert
ellipses; exclusions counted by reason), how a record's gaze maps are drawn, and its synthetic twin
(the same files and columns, made-up content), written on first use when no ``--data`` is given.
The heavy parts are named by module and imported when used, so listing datasets stays cheap.

Adding a dataset is one module that registers itself here (``register_dataset``); the cache, the
split, the trials, the record and analysis take everything else from the entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from trainables.registry import Registry
from trainables.task import Task


@dataclass(frozen=True)
class Dataset:
    """One registered dataset."""

    name: str
    task: Task
    module: str  # implements ``read(cfg) -> Index``, ``draw(job) -> Drawn``, ``write_twin(...)``
    summary: str = ""

    def impl(self) -> Any:
        """The module that reads, draws and writes the twin (imported on first use)."""
        return importlib.import_module(self.module)


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(name: str, task: Task, module: str, summary: str = "") -> Dataset:
    """Register a dataset; ``module`` provides ``read``, ``draw`` and ``write_twin``."""
    entry = Dataset(name, task, module, summary)
    DATASETS.add(name, entry)
    return entry


def get_dataset(name: str) -> Dataset:
    """The entry of ``name`` (KeyError listing the registered ones)."""
    _load()
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    _load()
    return DATASETS.names()


def task_of(name: str) -> Task:
    return get_dataset(name).task


def _load() -> None:
    """Register the built-in entries once (light: their classes only; readers load on use)."""
    if "egd-cxr" in DATASETS:
        return
    from trainables.data.reflacx_labels import FINDINGS  # numpy only

    register_dataset(
        "egd-cxr", Task(("Normal", "CHF", "pneumonia"), exclusive=True),
        "trainables.data.egd_source",
        "EGD-CXR (Karargyris et al. 2021): 1,083 MIMIC-CXR images, Normal / CHF / pneumonia, "
        "one radiologist's gaze",
    )  # fmt: skip
    register_dataset(
        "reflacx", Task(FINDINGS, exclusive=False), "trainables.data.reflacx_source",
        "REFLACX (Bigolin Lanfredi et al. 2022): 2,616 MIMIC-CXR images, 3,052 readings, five "
        "radiologists on 109 images, certainty-graded findings and their ellipses",
    )  # fmt: skip
