"""Data-layer fixtures: one small synthetic EGD-CXR twin per session, copied when a test edits it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trainables.config import DataConfig
from trainables.data.prepare import ensure_synthetic

N_IMAGES = 24  # divisible by 3 (balanced classes) and >= 20 (every DICOM variant appears once)


@pytest.fixture(scope="session")
def synthetic_cfg(tmp_path_factory) -> DataConfig:
    """A DataConfig whose data_dir holds a generated 24-image twin (never modified by tests)."""
    cfg = DataConfig(
        data_dir=str(tmp_path_factory.mktemp("data")), synthetic_images=N_IMAGES, synthetic_seed=0
    )
    ensure_synthetic(cfg)
    return cfg


@pytest.fixture(scope="session")
def n_images() -> int:
    return N_IMAGES


@pytest.fixture(scope="session")
def synthetic_root(synthetic_cfg) -> Path:
    return ensure_synthetic(synthetic_cfg)


@pytest.fixture
def egd_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the twin that a test may corrupt (mtimes preserved)."""
    dst = tmp_path / "egd"
    shutil.copytree(synthetic_root, dst)
    return dst
