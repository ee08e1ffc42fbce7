"""Fixtures for every test folder."""

from __future__ import annotations

import os

import pytest

# study.storage_guard.KEY_ENV, spelled out: importing that module imports Ray.
STORAGE_KEY_ENV = "GAZE_STUDY_STORAGE_KEY"


@pytest.fixture(scope="session", autouse=True)
def storage_key(tmp_path_factory):
    """Studies run by the tests (and the benchmarks' simulated ones) sign their Tune storage with
    a key of their own, never the user's ``~/.config/gaze-study/storage.key``; subprocess studies
    inherit it through the environment."""
    before = os.environ.get(STORAGE_KEY_ENV)
    os.environ[STORAGE_KEY_ENV] = str(tmp_path_factory.mktemp("key") / "storage.key")
    yield os.environ[STORAGE_KEY_ENV]
    if before is None:
        os.environ.pop(STORAGE_KEY_ENV, None)
    else:
        os.environ[STORAGE_KEY_ENV] = before
