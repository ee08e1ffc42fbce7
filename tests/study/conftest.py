"""Shared fixtures of the study tests: a tiny synthetic dataset through the real data layer, a
local Ray instance, and StudyConfigs that point every output into a temporary folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from study.presets import TINY_DECODER, TINY_ENCODER, StudyConfig, get_preset
from trainables.config import DataConfig, TrialConfig
from trainables.data.cached import CachedData
from trainables.data.prepare import prepare_data

PROJECT_DIR = Path(__file__).resolve().parents[2]
SYNTHETIC_IMAGES = 48  # 80/10/10 by patient: a handful of val and test images per class
IMAGE_SIZE = 32


def smoke_flags(
    tmp: Path, data_dir: str, study_name: str, arms: str, trials: int, epochs: int
) -> list[str]:
    """``python -m study`` flags of a tiny study on the test twin, one trial at a time, every
    output under ``tmp`` (the subprocess tests add --resume, --verbose, ...)."""
    return [
        "--smoke-test",
        "--study-name",
        study_name,
        "--arms",
        arms,
        "--trials-per-arm",
        str(trials),
        "--epochs",
        str(epochs),
        "--max-concurrent",
        "1",
        "--data-dir",
        data_dir,
        "--synthetic-images",
        str(SYNTHETIC_IMAGES),
        "--image-size",
        str(IMAGE_SIZE),
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--storage-path",
        str(tmp / "ray_results"),
        "--no-report",
    ]


@pytest.fixture(scope="session")
def data_config(tmp_path_factory) -> DataConfig:
    return DataConfig(
        data_dir=str(tmp_path_factory.mktemp("data")),
        synthetic_images=SYNTHETIC_IMAGES,
        image_size=IMAGE_SIZE,
    )


@pytest.fixture(scope="session")
def tiny_data(data_config) -> CachedData:
    """The synthetic twin at 32 px, made and cached once per session by the real data layer."""
    return prepare_data(data_config, progress=False)


def tiny_trial(**overrides) -> TrialConfig:
    """Tiny encoder and decoder at 32 px, 2 epochs: a trial takes seconds on one CPU core."""
    base = {
        "encoder": TINY_ENCODER,
        "decoder_channels": TINY_DECODER,
        "batch_size": 8,
        "eval_batch_size": 32,
        "epochs": 2,
        "bootstrap_resamples": 50,
        "panels": 3,
        "augment": False,
    }
    return TrialConfig(**{**base, **overrides})


def tiny_study(tmp: Path, data_config: DataConfig, **overrides) -> StudyConfig:
    """A smoke-sized StudyConfig with its MLflow store, Tune storage and outputs under ``tmp``."""
    cfg = dataclasses.replace(
        get_preset("smoke"),
        study_name="test-study",
        project_dir=str(tmp),
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        storage_path=str(tmp / "ray_results"),
        data=data_config,
        trial=tiny_trial(),
        max_failures=1,
        report=False,
    )
    return dataclasses.replace(cfg, **overrides)


def ray_runtime_env() -> dict:
    # Ray workers import trainables/ and study/ from the project root.
    path = os.pathsep.join(p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with two CPUs for one test module."""
    import ray

    ray.init(
        address="local",  # a fresh instance, never a cluster someone else started on this host
        num_cpus=2,
        include_dashboard=False,
        runtime_env=ray_runtime_env(),
        object_store_memory=200 * 1024**2,
    )
    yield
    ray.shutdown()
