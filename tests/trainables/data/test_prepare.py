"""prepare_data end to end on the synthetic twin: CachedData contract, reuse, split options."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.config import SPLITS
from trainables.data.cached import CachedData
from trainables.data.egd import FIXATIONS, MASTER_SHEET
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


def test_logs_of_a_build_with_bad_rows_name_no_patient(synthetic_cfg, egd_copy, tmp_path, caplog):
    """Every exclusion is logged by dicom_id; no patient (or study) id reaches the logs, although
    MIMIC paths (files/p10/p10000032/s5.../<dicom_id>.dcm) carry them."""
    master = pd.read_csv(egd_copy / MASTER_SHEET, dtype=str, keep_default_na=False)
    bad = {}
    row = master.loc[0]  # undecodable DICOM (decoding stage)
    (egd_copy / row["path"]).write_bytes(b"not a dicom at all")
    bad[row["dicom_id"]] = "undecodable_dicom"
    row = master.loc[1]  # missing DICOM (index stage)
    (egd_copy / row["path"]).unlink()
    bad[row["dicom_id"]] = "missing_dicom"
    master.loc[2, "path"] = "../" + master.loc[2, "path"]  # leaves the MIMIC root
    bad[master.loc[2, "dicom_id"]] = "path_outside_mimic_root"
    master.loc[3, "image_left_pad"] = "wide"
    bad[master.loc[3, "dicom_id"]] = "invalid_pads"
    master.loc[4, "Normal"], master.loc[4, "CHF"], master.loc[4, "pneumonia"] = "1", "1", "0"
    bad[master.loc[4, "dicom_id"]] = "label_not_one_hot"
    master.to_csv(egd_copy / MASTER_SHEET, index=False)
    gaze = pd.read_csv(egd_copy / FIXATIONS, dtype={"DICOM_ID": str})
    gaze[gaze["DICOM_ID"] != master.loc[5, "dicom_id"]].to_csv(egd_copy / FIXATIONS, index=False)
    bad[master.loc[5, "dicom_id"]] = "no_fixations"
    cfg = dataclasses.replace(
        synthetic_cfg, data_root=str(egd_copy), data_dir=str(tmp_path / "d"), image_size=32
    )
    with caplog.at_level(logging.DEBUG):
        data = prepare_data(cfg, progress=False)
    assert not set(bad) & set(data.keys)
    for key, reason in bad.items():
        assert data.exclusions[reason] >= 1
        assert any(key in m and reason in m for m in caplog.messages), (key, reason)
    text = caplog.text
    for pid in master["patient_id"]:
        assert pid not in text, f"patient id {pid} in the logs"
    for sid in master["study_id"]:
        assert sid not in text, f"study id {sid} in the logs"
    assert "files/p" not in text and str(egd_copy / "files") not in text
    assert not any(Path(p).parts[1] in text for p in master["path"])  # the pXX folders


def test_no_usable_image_error_gives_the_counts_of_both_stages(synthetic_cfg, egd_copy, tmp_path):
    master = pd.read_csv(egd_copy / MASTER_SHEET, dtype=str, keep_default_na=False)
    for i, rel in enumerate(master["path"]):
        if i % 2:
            (egd_copy / rel).unlink()  # index stage: missing_dicom
        else:
            (egd_copy / rel).write_bytes(b"garbage")  # decoding stage: undecodable_dicom
    cfg = dataclasses.replace(
        synthetic_cfg, data_root=str(egd_copy), data_dir=str(tmp_path / "d"), image_size=32
    )
    half = len(master) // 2
    with pytest.raises(ValueError, match="no usable image") as err:
        prepare_data(cfg, progress=False)
    assert f"'missing_dicom': {half}" in str(err.value)
    assert f"'undecodable_dicom': {len(master) - half}" in str(err.value)
    assert "calibration_rows" in str(err.value)
