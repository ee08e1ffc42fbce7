"""prepare_data end to end on the synthetic twin: CachedData contract, reuse, split options."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest

from trainables.config import SPLITS
from trainables.data.cached import CachedData
from trainables.data.prepare import ensure_synthetic, prepare_data, synthetic_root


@pytest.fixture
def cfg(synthetic_cfg, synthetic_root, tmp_path):
    """A fresh data_dir holding a copy of the session's twin (so no generation here)."""
    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_root, data_dir / synthetic_root.name)
    return dataclasses.replace(synthetic_cfg, data_dir=str(data_dir), image_size=40)


def test_prepare_returns_the_cached_data_contract(cfg, caplog, n_images):
    with caplog.at_level(logging.INFO, logger="trainables.data.prepare"):
        data = prepare_data(cfg, progress=False)
    assert isinstance(data, CachedData)
    assert data.images.shape == (n_images, 40, 40) and data.images.dtype == np.uint8
    assert data.gaze.dtype == np.float16 and data.split.dtype == np.int8
    assert set(data.split) == {0, 1, 2} and data.fingerprint
    assert data.exclusions["calibration_rows"] > 0 and data.exclusions["calibration_ids"] > 0
    for s in SPLITS:  # patients never straddle splits
        inside = {p for p, x in zip(data.patients, data.split, strict=True) if x == SPLITS.index(s)}
        outside = {
            p for p, x in zip(data.patients, data.split, strict=True) if x != SPLITS.index(s)
        }
        assert not inside & outside
    assert data.summary() in caplog.text
    again = prepare_data(cfg, progress=False)
    np.testing.assert_array_equal(again.images, data.images)
    np.testing.assert_array_equal(again.split, data.split)
    assert again.fingerprint == data.fingerprint


def test_split_seed_and_split_file(cfg, tmp_path):
    a = prepare_data(cfg, progress=False)
    b = prepare_data(dataclasses.replace(cfg, split_seed=5), progress=False)
    assert b.fingerprint == a.fingerprint and (a.split != b.split).any()
    wanted = np.arange(len(a.keys)) % 3
    path = tmp_path / "split.csv"
    path.write_text(
        "dicom_id,split\n"
        + "".join(f"{k},{SPLITS[s]}\n" for k, s in zip(a.keys, wanted, strict=True))
    )
    c = prepare_data(dataclasses.replace(cfg, split_file=str(path)), progress=False)
    np.testing.assert_array_equal(c.split, wanted)


def test_synthetic_twin_reused_when_complete_and_interrupted_runs_ignored(cfg, tmp_path):
    root = synthetic_root(cfg)
    stamp = (root / "master_sheet.csv").stat().st_mtime_ns
    assert ensure_synthetic(cfg) == root
    assert (root / "master_sheet.csv").stat().st_mtime_ns == stamp  # reused, not regenerated
    # An interrupted generation leaves only a temporary folder: it is never taken for the twin.
    small = dataclasses.replace(cfg, data_dir=str(tmp_path / "fresh"), synthetic_images=12)
    partial = tmp_path / "fresh" / f".{synthetic_root(small).name}.abc.tmp"
    partial.mkdir(parents=True)
    (partial / "master_sheet.csv").write_text("dicom_id\n")
    made = ensure_synthetic(small)
    assert made == synthetic_root(small) and made.name == "synthetic-12-seed0"
    assert (made / "fixations.csv").is_file()
    assert not [p for p in made.parent.iterdir() if p.name.endswith(".tmp") and p != partial]
