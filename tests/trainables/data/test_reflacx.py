"""The REFLACX reader on the synthetic twin: every reading kept, every exclusion counted by id."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from trainables.data.dicom import read_dicom
from trainables.data.reflacx import read_reflacx, target_ellipses
from trainables.data.reflacx_labels import FINDINGS
from trainables.data.synthetic.reflacx import write_reflacx_twin

N_IMAGES, N_MULTI = 14, 4


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("reflacx") / "twin"
    stats = write_reflacx_twin(root, N_IMAGES, seed=3, multi_reader_images=N_MULTI)
    return root, stats


@pytest.fixture
def copy(twin, tmp_path) -> Path:
    dst = tmp_path / "twin"
    shutil.copytree(twin[0], dst, symlinks=True)
    return dst


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)


def _meta(root: Path, phase: int) -> Path:
    return root / "main_data" / f"metadata_phase_{phase}.csv"


def _edit(root: Path, phase: int, index: int, **changes: str) -> dict[str, str]:
    header, rows = _rows(_meta(root, phase))
    rows[index].update(changes)
    _write(_meta(root, phase), header, rows)
    return rows[index]


def test_round_trip_counts_match_the_writer(twin):
    root, stats = twin
    manifest = json.loads((root / "twin.json").read_text())
    index = read_reflacx(root)
    readings = [r for rec in index.records for r in rec.readings]
    assert len(index.records) == stats["images"] == N_IMAGES
    assert len(readings) == stats["readings"] == manifest["readings"] == 5 * N_MULTI + 10
    discarded = [r.id for r in readings if r.gaze_discarded]
    assert sorted(discarded) == manifest["discarded_readings"] and len(discarded) == 1
    assert index.exclusions == {"gaze_discarded_readings": 1}
    multi = [rec for rec in index.records if rec.phase < 3]
    assert len(multi) == N_MULTI and all(len(rec.readings) == 5 for rec in multi)
    assert all(len(rec.readings) == 1 for rec in index.records if rec.phase == 3)
    gone = next(r for r in readings if r.gaze_discarded)  # labels and ellipses, no gaze
    folder = root / "main_data" / gone.id
    assert not (folder / "fixations.csv").exists() and gone.fixations is None
    assert len(gone.ellipses) == len(_rows(folder / "anomaly_location_ellipses.csv")[1])
    assert gone.chest_box is not None and gone.certainty.shape == (len(FINDINGS),)
    assert sum(len(r.fixations) for r in readings if r.fixations) == stats["fixation_rows"]
    per_phase = {p: sum(len(x.readings) for x in index.records if x.phase == p) for p in (1, 2, 3)}
    assert per_phase == stats["readings_per_phase"]


def test_record_fields_match_the_files(twin):
    root, _ = twin
    index = read_reflacx(root)
    _, rows = _rows(_meta(root, 1))
    rec = next(r for r in index.records if r.phase == 1)
    mine = sorted((r for r in rows if r["dicom_id"] == rec.key), key=lambda r: r["id"])
    assert [r.id for r in rec.readings] == [r["id"] for r in mine]
    assert rec.patient == mine[0]["subject_id"] and rec.split == mine[0]["split"]
    assert rec.image_size == (int(mine[0]["image_size_y"]), int(mine[0]["image_size_x"]))
    assert rec.dicom_path == (root / mine[0]["image"].split("2.0.0/")[1]).resolve()
    assert read_dicom(rec.dicom_path).shape == rec.image_size
    # Certainties merged by hand: phase 1's Mass / Nodule -> Lung nodule or mass (maximum).
    for reading, raw in zip(rec.readings, mine, strict=True):
        nodule = max(int(raw["Mass"]), int(raw["Nodule"]))
        assert reading.certainty[FINDINGS.index("Lung nodule or mass")] == nodule
        pleural = max(int(raw["Pleural effusion"]), int(raw["Pleural thickening"]))
        assert reading.certainty[FINDINGS.index("Pleural abnormality")] == pleural
        assert reading.certainty[FINDINGS.index("Support devices")] == 5 * (
            raw["Support devices"] == "True"
        )
        assert reading.quality_issue == (raw["Quality issue"] == "True")
    votes = np.array(
        [[int(raw[c]) >= 3 for c in ("Consolidation", "Pulmonary edema")] for raw in mine]
    )
    want = (votes.sum(axis=0) >= 3).astype(int)  # 3 of 5 readers
    got = rec.labels[[FINDINGS.index("Consolidation"), FINDINGS.index("Pulmonary edema")]]
    np.testing.assert_array_equal(got, want)
    reading = next(r for r in rec.readings if r.fixations is not None)
    _, fix = _rows(root / "main_data" / reading.id / "fixations.csv")
    np.testing.assert_array_equal(reading.fixations.x, [float(r["x_position"]) for r in fix])
    np.testing.assert_array_equal(
        reading.fixations.ppd_y, [float(r["angular_resolution_y_pixels_per_degree"]) for r in fix]
    )
    np.testing.assert_array_equal(
        reading.fixations.shown_xmax, [float(r["xmax_shown_from_image"]) for r in fix]
    )
    _, ell = _rows(root / "main_data" / reading.id / "anomaly_location_ellipses.csv")
    np.testing.assert_array_equal(reading.ellipses.boxes[:, 2], [float(r["xmax"]) for r in ell])
    assert reading.ellipses.certainty.tolist() == [int(r["certainty"]) for r in ell]


def test_threshold_and_target_ellipses(twin):
    root, _ = twin
    strict, default = read_reflacx(root, threshold=5), read_reflacx(root)
    for a, b in zip(strict.records, default.records, strict=True):
        assert (a.labels <= b.labels).all()
        for r in a.readings:
            np.testing.assert_array_equal(r.labels, r.certainty >= 5)
    assert sum(r.labels.sum() for r in strict.records) < sum(
        r.labels.sum() for r in default.records
    )
    found = 0
    for rec in default.records:
        want = [
            box
            for r in rec.readings
            for box, c, flags in zip(r.ellipses.boxes, r.ellipses.certainty, r.ellipses.findings)
            if c >= 3 and (flags & rec.labels.astype(bool)).any()
        ]
        got = target_ellipses(rec)
        np.testing.assert_array_equal(got, np.reshape(want, (-1, 4)))
        found += len(got)
        for f in np.flatnonzero(rec.labels):
            assert len(target_ellipses(rec, finding=FINDINGS[f])) <= len(got)
    assert found > 0
    with pytest.raises(ValueError, match="threshold"):
        read_reflacx(root, threshold=6)


def test_bad_reading_ids_are_counted_and_never_joined(copy, caplog):
    header, rows = _rows(_meta(copy, 3))
    bad = [
        "../P300R000001",
        "P300R12345",
        "P300R\u0661\u0662\u0663\u0664\u0665\u0666",
        "P101R000001",
    ]
    for row, rid in zip(rows, bad, strict=False):
        row["id"] = rid
    _write(_meta(copy, 3), header, rows)
    with caplog.at_level(logging.WARNING, logger="trainables.data.reflacx"):
        index = read_reflacx(copy)
    assert index.exclusions["invalid_reading_id"] == len(bad)
    assert len(index.records) == N_IMAGES - len(bad)  # those phase-3 images had one reading
    assert "P300R12345" in caplog.text


def test_missing_phase_files_and_missing_columns(copy):
    _meta(copy, 2).unlink()
    index = read_reflacx(copy)
    assert index.exclusions["missing_phase_files"] == 1
    assert {r.phase for r in index.records} == {1, 3}
    header, rows = _rows(_meta(copy, 1))
    header.remove("Nodule")
    _write(_meta(copy, 1), header, [{k: v for k, v in r.items() if k != "Nodule"} for r in rows])
    with pytest.raises(ValueError, match=r"metadata_phase_1\.csv.*Nodule"):
        read_reflacx(copy)
    _meta(copy, 1).unlink()
    _meta(copy, 3).unlink()
    with pytest.raises(FileNotFoundError, match="metadata_phase"):
        read_reflacx(copy)


def test_fixation_file_without_a_required_column_raises(copy):
    rid = _rows(_meta(copy, 3))[1][0]["id"]
    path = copy / "main_data" / rid / "fixations.csv"
    header, rows = _rows(path)
    header.remove("angular_resolution_x_pixels_per_degree")
    _write(path, header, [{k: v for k, v in r.items() if k in header} for r in rows])
    with pytest.raises(ValueError, match=rf"{rid}/fixations\.csv.*angular_resolution_x"):
        read_reflacx(copy)


def test_paths_leaving_the_mimic_root_are_not_opened(copy, tmp_path, caplog):
    _, rows = _rows(_meta(copy, 3))
    outside = tmp_path / "outside"
    outside.mkdir()
    first = _edit(copy, 3, 0, image="/etc/hosts")
    dotdot = _edit(copy, 3, 1, image="physionet.org/files/mimic-cxr/2.0.0/files/../../secret.dcm")
    # A symlink out: the patient folder moved elsewhere and linked back into the tree.
    third = rows[2]
    rel = Path(third["image"].split("2.0.0/")[1])
    patient = copy / rel.parents[1]
    shutil.move(patient, outside / patient.name)
    patient.symlink_to(outside / patient.name, target_is_directory=True)
    _edit(copy, 3, 3, image="mimic-cxr/2.0.0/p10/x.dcm")  # no MIMIC files/ tree
    with caplog.at_level(logging.INFO, logger="trainables.data.reflacx"):
        index = read_reflacx(copy)
    assert index.exclusions["path_outside_mimic_root"] == 4
    keys = {r.key for r in index.records}
    assert not {first["dicom_id"], dotdot["dicom_id"], third["dicom_id"]} & keys
    # Log lines name ids, never paths (MIMIC paths carry the patient id).
    all_rows = [r for p in (1, 2, 3) for r in _rows(_meta(copy, p))[1]]
    assert not any(r["subject_id"] in caplog.text for r in all_rows)
    assert third["dicom_id"] in caplog.text


def test_missing_dicom_and_misnamed_image(copy):
    _, rows = _rows(_meta(copy, 3))
    (copy / rows[0]["image"].split("2.0.0/")[1]).unlink()
    wrong = rows[2]["image"].replace(rows[2]["dicom_id"], rows[3]["dicom_id"])
    _edit(copy, 3, 2, image=wrong)
    index = read_reflacx(copy)
    assert index.exclusions["missing_dicom"] == 1
    assert index.exclusions["image_not_named_by_dicom_id"] == 1
    assert len(index.records) == N_IMAGES - 2


def test_readings_without_fixations(copy):
    _, single = _rows(_meta(copy, 3))
    _, multi = _rows(_meta(copy, 1))
    kept = next(r for r in multi if r["eye_tracking_data_discarded"] == "False")
    for rid in (single[0]["id"], kept["id"]):
        path = copy / "main_data" / rid / "fixations.csv"
        path.write_text(path.read_text().splitlines()[0] + "\n")  # header only
    index = read_reflacx(copy)
    assert index.exclusions["readings_without_fixations"] == 2
    assert index.exclusions["no_gaze"] == 1  # the phase-3 image had no other reading
    assert single[0]["dicom_id"] not in {r.key for r in index.records}
    rec = next(r for r in index.records if r.key == kept["dicom_id"])
    assert len(rec.readings) == 5 and len(rec.gaze_readings) <= 4
    loose = read_reflacx(copy, require_gaze=False)
    assert len(loose.records) == N_IMAGES and "no_gaze" not in loose.exclusions


def test_invalid_rows_are_dropped_and_counted(copy):
    ids = [r["id"] for r in _rows(_meta(copy, 3))[1]]
    folders = [copy / "main_data" / rid for rid in ids]
    rid, folder = next(
        (i, f) for i, f in zip(ids, folders, strict=True)
        if _rows(f / "anomaly_location_ellipses.csv")[1]
    )  # fmt: skip
    header, fix = _rows(folder / "fixations.csv")
    fix[0]["x_position"] = "abc"
    fix[1]["timestamp_end_fixation"] = str(float(fix[1]["timestamp_start_fixation"]) - 1)
    _write(folder / "fixations.csv", header, fix)
    header, ell = _rows(folder / "anomaly_location_ellipses.csv")
    _write(folder / "anomaly_location_ellipses.csv", header, [*ell, dict(ell[0], certainty="7")])
    index = read_reflacx(copy)
    reading = next(r for rec in index.records for r in rec.readings if r.id == rid)
    assert index.exclusions["invalid_fixation_rows"] == 2
    assert len(reading.fixations) == len(fix) - 2
    assert index.exclusions["invalid_ellipse_rows"] == 1
    assert len(reading.ellipses) == len(ell)


def test_duplicate_ids_and_inconsistent_image_rows(copy):
    header, rows = _rows(_meta(copy, 3))
    _write(_meta(copy, 3), header, [*rows, rows[0]])
    header, multi = _rows(_meta(copy, 2))
    multi[0]["subject_id"] = "19999999"  # one of five readings disagrees about the patient
    _write(_meta(copy, 2), header, multi)
    index = read_reflacx(copy)
    assert index.exclusions["duplicate_reading_id"] == 1
    assert index.exclusions["inconsistent_image_rows"] == 1
    assert multi[0]["dicom_id"] not in {r.key for r in index.records}
    assert len(index.records) == N_IMAGES - 1


def test_unreadable_metadata_rows_drop_the_reading_only(copy):
    header, rows = _rows(_meta(copy, 1))
    image = rows[0]["dicom_id"]
    rows[0]["Consolidation"] = "7"  # certainties are 0-5
    rows[1]["eye_tracking_data_discarded"] = "maybe"
    rows[2]["image_size_x"] = ""
    _write(_meta(copy, 1), header, rows)
    index = read_reflacx(copy)
    assert index.exclusions["invalid_metadata_row"] == 3
    left = [r for r in rows[3:] if r["dicom_id"] == image]
    rec = next(r for r in index.records if r.key == image)  # the other readers still vote
    assert [r.id for r in rec.readings] == sorted(r["id"] for r in left)
