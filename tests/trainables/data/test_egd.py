"""The EGD-CXR reader: every image kept, every exclusion reason counted, logged, and named."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tiny import egd_task
from trainables.data.egd import (
    FIXATIONS,
    MASTER_SHEET,
    read_bounding_boxes,
    read_egd,
    read_image_list,
)

CLASSES = egd_task().classes


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _master(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / MASTER_SHEET, dtype=str, keep_default_na=False)


def _write_master(root: Path, df: pd.DataFrame) -> None:
    df.to_csv(root / MASTER_SHEET, index=False)


def test_keeps_every_image_and_counts_calibration_rows(synthetic_root):
    index = read_egd(synthetic_root)
    master = _raw_rows(synthetic_root / MASTER_SHEET)  # independent parse: the csv module
    gaze = _raw_rows(synthetic_root / FIXATIONS)
    ids = {r["dicom_id"] for r in master}
    calib = [r["DICOM_ID"] for r in gaze if r["DICOM_ID"] not in ids]
    assert calib and all(any(i.startswith(c) and len(i) == len(c) + 5 for i in ids) for c in calib)
    assert [r.key for r in index.records] == [r["dicom_id"] for r in master]
    assert index.exclusions == {"calibration_rows": len(calib), "calibration_ids": len(set(calib))}
    rec = index.records[0]
    rows = [r for r in gaze if r["DICOM_ID"] == rec.key]
    assert len(rec.fixations) == len(rows)
    np.testing.assert_allclose(rec.fixations.fpogx, [float(r["FPOGX"]) for r in rows])
    np.testing.assert_allclose(rec.fixations.y_original, [float(r["Y_ORIGINAL"]) for r in rows])
    row = master[0]
    assert rec.label == [int(row[c]) for c in CLASSES].index(1)
    assert rec.patient == row["patient_id"] and rec.dicom_path.is_file()
    assert tuple(rec.pads) == tuple(
        int(row[f"image_{s}_pad"]) for s in ("top", "bottom", "left", "right")
    )


def test_image_list_with_bom_and_crlf_keeps_exactly_the_listed_ids(
    synthetic_root, tmp_path, caplog, n_images
):
    ids = [r.key for r in read_egd(synthetic_root).records]
    listed = ids[::3] + ["00000000-11111111-22222222-33333333-44444444", "not-an-id"]
    lines = [",filename"] + [f"{i},{k}" for i, k in enumerate(listed, start=1)]
    path = tmp_path / "filenames.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    assert read_image_list(path) == listed
    with caplog.at_level(logging.WARNING, logger="trainables.data.egd"):
        index = read_egd(synthetic_root, image_list=path)
    assert [r.key for r in index.records] == ids[::3]
    assert index.exclusions["listed_id_not_found"] == 2
    assert index.exclusions["not_in_image_list"] == n_images - len(ids[::3])
    assert "not-an-id" in caplog.text and path in index.source_files


def _two_hot(root: Path) -> str:
    df = _master(root)
    df.loc[1, list(CLASSES)] = ["1", "1", "0"]
    _write_master(root, df)
    return df.loc[1, "dicom_id"]


def _unlabelled(root: Path) -> str:
    df = _master(root)
    df.loc[2, list(CLASSES)] = ["0", "", "0"]
    _write_master(root, df)
    return df.loc[2, "dicom_id"]


def _no_fixations(root: Path) -> str:
    key = _master(root).loc[3, "dicom_id"]
    gaze = pd.read_csv(root / FIXATIONS, dtype={"DICOM_ID": str})
    gaze[gaze["DICOM_ID"] != key].to_csv(root / FIXATIONS, index=False)
    return key


def _missing_dicom(root: Path) -> str:
    row = _master(root).loc[4]
    (root / row["path"]).unlink()
    return row["dicom_id"]


def _bad_pads(root: Path) -> str:
    df = _master(root)
    df.loc[5, "image_left_pad"] = "wide"
    _write_master(root, df)
    return df.loc[5, "dicom_id"]


def _duplicate_row(root: Path) -> str:
    df = _master(root)
    _write_master(root, pd.concat([df, df.iloc[[6]]], ignore_index=True))
    return ""  # the first copy is kept


@pytest.mark.parametrize(
    "edit,reason",
    [
        (_two_hot, "label_not_one_hot"),
        (_unlabelled, "label_not_one_hot"),
        (_no_fixations, "no_fixations"),
        (_missing_dicom, "missing_dicom"),
        (_bad_pads, "invalid_pads"),
        (_duplicate_row, "duplicate_master_row"),
    ],
)
def test_each_image_exclusion_is_counted_logged_and_named(egd_copy, caplog, edit, reason, n_images):
    key = edit(egd_copy)
    with caplog.at_level(logging.WARNING, logger="trainables.data.egd"):
        index = read_egd(egd_copy)
    assert index.exclusions[reason] == 1
    image_reasons = {"label_not_one_hot", "no_fixations", "missing_dicom", "invalid_pads"}
    assert sum(v for k, v in index.exclusions.items() if k in image_reasons) == (1 if key else 0)
    assert len(index.records) == n_images - (1 if key else 0)
    assert key not in {r.key for r in index.records} and reason in caplog.text
    if key:
        assert key in caplog.text


def _outside_copy(root: Path, row: pd.Series) -> Path:
    """A real DICOM of the twin copied next to (not inside) the MIMIC root."""
    outside = root.parent / "elsewhere" / Path(row["path"]).name
    outside.parent.mkdir(exist_ok=True)
    outside.write_bytes((root / row["path"]).read_bytes())
    return outside


def _dotdot_path(root: Path) -> str:
    df = _master(root)
    outside = _outside_copy(root, df.loc[7])
    df.loc[7, "path"] = f"../{outside.parent.name}/{outside.name}"
    _write_master(root, df)
    return df.loc[7, "dicom_id"]


def _absolute_path(root: Path) -> str:
    df = _master(root)
    df.loc[7, "path"] = str(_outside_copy(root, df.loc[7]))
    _write_master(root, df)
    return df.loc[7, "dicom_id"]


def _system_file(root: Path) -> str:
    df = _master(root)
    df.loc[7, "path"] = "../" * 12 + "etc/passwd"
    _write_master(root, df)
    return df.loc[7, "dicom_id"]


def _symlink_out(root: Path) -> str:
    row = _master(root).loc[7]
    outside = _outside_copy(root, row)
    (root / row["path"]).unlink()
    (root / row["path"]).symlink_to(outside)
    return row["dicom_id"]


@pytest.mark.parametrize("edit", [_dotdot_path, _absolute_path, _system_file, _symlink_out])
def test_paths_leaving_the_mimic_root_are_excluded(egd_copy, caplog, edit, n_images):
    key = edit(egd_copy)
    with caplog.at_level(logging.WARNING, logger="trainables.data.egd"):
        index = read_egd(egd_copy)
    assert index.exclusions["path_outside_mimic_root"] == 1
    assert len(index.records) == n_images - 1 and key not in {r.key for r in index.records}
    root = egd_copy.resolve()
    assert all(r.dicom_path.resolve().is_relative_to(root) for r in index.records)
    assert key in caplog.text and "path_outside_mimic_root" in caplog.text
    assert "elsewhere" not in caplog.text and "passwd" not in caplog.text  # ids, not paths


def test_a_dotdot_path_that_stays_inside_the_root_is_kept(egd_copy, n_images):
    df = _master(egd_copy)
    first = Path(df.loc[7, "path"]).parts[0]
    df.loc[7, "path"] = f"{first}/../{df.loc[7, 'path']}"
    _write_master(egd_copy, df)
    index = read_egd(egd_copy)
    assert len(index.records) == n_images and "path_outside_mimic_root" not in index.exclusions


def test_gaze_ids_not_in_master_and_bad_rows_are_counted(egd_copy, caplog, n_images):
    gaze = pd.read_csv(egd_copy / FIXATIONS, dtype={"DICOM_ID": str})
    stranger = gaze.iloc[:4].copy()
    stranger["DICOM_ID"] = "deadbeef-00000000-00000000-00000000-00000000"
    broken = gaze.iloc[:1].copy()
    broken["FPOGX"] = "n/a"
    pd.concat([gaze, stranger, broken]).to_csv(egd_copy / FIXATIONS, index=False)
    with caplog.at_level(logging.WARNING, logger="trainables.data.egd"):
        index = read_egd(egd_copy)
    assert index.exclusions["gaze_ids_not_in_master_sheet"] == 1
    assert index.exclusions["gaze_rows_not_in_master_sheet"] == 4
    assert index.exclusions["invalid_fixation_rows"] == 1
    assert len(index.records) == n_images and "deadbeef" in caplog.text


@pytest.mark.parametrize(
    "table,column",
    [
        (MASTER_SHEET, "CHF"),
        (MASTER_SHEET, "path"),
        (FIXATIONS, "FPOGD"),
        (FIXATIONS, "X_ORIGINAL"),
    ],
)
def test_missing_columns_name_the_file_and_columns(egd_copy, table, column):
    df = pd.read_csv(egd_copy / table, dtype=str, keep_default_na=False)
    df.drop(columns=[column]).to_csv(egd_copy / table, index=False)
    with pytest.raises(ValueError, match=rf"{table}.*missing required columns \['{column}'\]"):
        read_egd(egd_copy)


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="master_sheet.csv"):
        read_egd(tmp_path)


def test_bounding_boxes_have_the_published_columns(synthetic_root):
    boxes = read_bounding_boxes(synthetic_root / "bounding_boxes.csv")
    assert list(boxes.columns) == ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
    assert (boxes.groupby("dicom_id").size() == 17).all()


@pytest.mark.parametrize(
    "pads", [("0", "0", "960", "960"), ("540", "540", "0", "0"), ("0", "0", "1500", "1000")]
)
def test_pads_that_cover_the_screen_exclude_the_image(egd_copy, caplog, pads, n_images):
    df = _master(egd_copy)
    df.loc[8, ["image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"]] = pads
    _write_master(egd_copy, df)
    key = df.loc[8, "dicom_id"]
    with caplog.at_level(logging.WARNING, logger="trainables.data.egd"):
        index = read_egd(egd_copy)
    assert index.exclusions["pads_leave_no_image"] == 1
    assert len(index.records) == n_images - 1 and key not in {r.key for r in index.records}
    assert key in caplog.text and "pads_leave_no_image" in caplog.text


@pytest.mark.parametrize("table", [MASTER_SHEET, FIXATIONS])
@pytest.mark.parametrize("where", ["header", "body"])
def test_a_table_that_is_not_utf8_is_an_error_naming_the_file(egd_copy, table, where):
    path = egd_copy / table
    lines = path.read_bytes().split(b"\n")
    at = 0 if where == "header" else len(lines) // 2
    column = 0 if table == MASTER_SHEET else 2  # dicom_id / DICOM_ID: a column the reader uses
    fields = lines[at].split(b",")
    fields[column] += "\u00e9".encode("latin-1")  # e-acute in Latin-1: not UTF-8
    lines[at] = b",".join(fields)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=rf"{table}.*not UTF-8"):
        read_egd(egd_copy)
