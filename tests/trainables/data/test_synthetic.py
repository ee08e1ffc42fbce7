"""The synthetic twin reproduces EGD-CXR's files, headers and quirks, and its findings are where
the labels say."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from trainables.data.egd import read_egd
from trainables.data.heatmaps import Pads, published_on_image
from trainables.data.synthetic import (
    dicom_relpath,
    gaze_tables,
    main,
    make_cases,
    master_rows,
    render,
)

# The published headers, spelled out here as an oracle independent of the package's constants.
MASTER_HEADER = (
    "dicom_id,path,study_id,patient_id,stay_id,gender,anchor_age,image_top_pad,image_bottom_pad,"
    "image_left_pad,image_right_pad,dx1,dx1_icd,dx2,dx2_icd,dx3,dx3_icd,dx4,dx4_icd,dx5,dx5_icd,"
    "dx6,dx6_icd,dx7,dx7_icd,dx8,dx8_icd,dx9,dx9_icd,normal_reports,Normal,CHF,pneumonia,"
    "consolidation,enlarged_cardiac_silhouette,linear__patchy_atelectasis,"
    "lobar__segmental_collapse,not_otherwise_specified_opacity___pleural__parenchymal_opacity__,"
    "pleural_effusion_or_thickening,pulmonary_edema__hazy_opacity,normal_anatomically,"
    "elevated_hemidiaphragm,hyperaeration,vascular_redistribution,atelectasis__chx,"
    "cardiomegaly__chx,consolidation__chx,edema__chx,enlarged_cardiomediastinum__chx,"
    "fracture__chx,lung_lesion__chx,lung_opacity__chx,no_finding__chx,pleural_effusion__chx,"
    "pleural_other__chx,pneumonia__chx,pneumothorax__chx,support_devices__chx,cxr_exam_indication"
)
GAZE_HEADER = (
    "SESSION_ID,MEDIA_ID,DICOM_ID,CNT,Time (in secs),TIMETICK(f=10000000),FPOGX,FPOGY,FPOGS,"
    "FPOGD,FPOGID,FPOGV,BPOGX,BPOGY,BPOGV,LPCX,LPCY,LPD,LPS,LPV,RPCX,RPCY,RPD,RPS,RPV,BKID,BKDUR,"
    "BKPMIN,LPMM,LPMMV,RPMM,RPMMV,SACCADE_MAG,SACCADE_DIR,VID_FRAME,X_ORIGINAL,Y_ORIGINAL"
)


def _header(path: Path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().rstrip("\n")


def test_headers_are_exact(synthetic_root):
    assert len(MASTER_HEADER.split(",")) == 59 and len(GAZE_HEADER.split(",")) == 37
    assert _header(synthetic_root / "master_sheet.csv") == MASTER_HEADER
    assert _header(synthetic_root / "fixations.csv") == GAZE_HEADER
    assert _header(synthetic_root / "eye_gaze.csv") == GAZE_HEADER
    assert _header(synthetic_root / "bounding_boxes.csv") == "dicom_id,bbox_name,x1,x2,y1,y2"


def test_master_sheet_quirks_and_labels(synthetic_root, n_images):
    text = (synthetic_root / "master_sheet.csv").read_text()
    with open(synthetic_root / "master_sheet.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_images < text.count("\n") - 1  # quoted newlines inside records
    assert any("\n" in r["cxr_exam_indication"] for r in rows)
    assert any('"' in r["cxr_exam_indication"] for r in rows)
    onehot = np.array([[int(r[c]) for c in ("Normal", "CHF", "pneumonia")] for r in rows])
    assert (onehot.sum(1) == 1).all()
    assert np.ptp(onehot.sum(0)) <= 1  # balanced classes
    per_patient = Counter(r["patient_id"] for r in rows)
    assert max(per_patient.values()) >= 2  # some patients have several images
    for r in rows:
        assert r["path"] == (
            f"files/p{r['patient_id'][:2]}/p{r['patient_id']}/s{r['study_id']}/{r['dicom_id']}.dcm"
        )
        assert (synthetic_root / r["path"]).is_file()


def test_gaze_files_timing_calibration_and_boxes(synthetic_root):
    master = pd.read_csv(synthetic_root / "master_sheet.csv", dtype=str)
    gaze = pd.read_csv(synthetic_root / "fixations.csv", dtype={"DICOM_ID": str})
    dense = pd.read_csv(synthetic_root / "eye_gaze.csv", dtype={"DICOM_ID": str})
    assert len(dense) > len(gaze)
    np.testing.assert_allclose(gaze["Time (in secs)"], gaze["FPOGS"] + gaze["FPOGD"], atol=2e-5)
    ids = set(master["dicom_id"])
    real = gaze[gaze["DICOM_ID"].isin(ids)]
    for _, g in real.groupby("DICOM_ID", sort=False):  # Time restarts and increases per image
        assert g["Time (in secs)"].iloc[0] < 1.5 and (np.diff(g["Time (in secs)"]) > 0).all()
    calib = set(gaze["DICOM_ID"]) - ids
    assert calib and all(any(i[:-5] == c for i in ids) for c in calib)
    # Calibration screens: one dot in the centre of the display, as in EGD-CXR.
    cal_rows = gaze[gaze["DICOM_ID"].isin(calib)]
    assert (abs(cal_rows["FPOGX"] - 0.5) < 0.05).all() and (
        abs(cal_rows["FPOGY"] - 0.5) < 0.05
    ).all()
    np.testing.assert_array_equal(cal_rows["X_ORIGINAL"], np.trunc(cal_rows["FPOGX"] * 1920))
    assert set(dense["DICOM_ID"]) == set(gaze["DICOM_ID"])
    pads = master.set_index("dicom_id")[
        ["image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"]
    ].astype(int)
    off = np.concatenate([
        ~published_on_image(g["FPOGX"], g["FPOGY"], Pads(*pads.loc[key]))
        for key, g in real.groupby("DICOM_ID", sort=False)
    ])  # fmt: skip
    assert 0 < off.mean() < 0.1  # a few glances off the image
    # ... written as the published mapping writes them: computed from -1, which truncates to 0
    # for these images (smaller than their display), so off-image rows read (0, 0).
    off_rows = pd.concat([
        g[~published_on_image(g["FPOGX"], g["FPOGY"], Pads(*pads.loc[key]))]
        for key, g in real.groupby("DICOM_ID", sort=False)
    ])  # fmt: skip
    assert (off_rows["X_ORIGINAL"] <= 0).all() and (off_rows["Y_ORIGINAL"] <= 0).all()
    boxes = pd.read_csv(synthetic_root / "bounding_boxes.csv")
    per_image = boxes.groupby("dicom_id")["bbox_name"].nunique()
    assert set(per_image.index) == ids and (per_image == 17).all()


def test_dicoms_cover_the_encodings(synthetic_root):
    seen = Counter()
    for path in (synthetic_root / "files").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen[ds.PhotometricInterpretation] += 1
        seen[f"bits{ds.BitsStored}"] += 1
        seen[ds.file_meta.TransferSyntaxUID] += 1
        seen["rescale"] += "RescaleSlope" in ds
        seen["window"] += "WindowCenter" in ds
        assert 640 <= ds.Rows <= 1024 and 640 <= ds.Columns <= 1024
    for key in (
        "MONOCHROME1",
        "MONOCHROME2",
        "bits12",
        "bits16",
        RLELossless,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        "rescale",
        "window",
    ):
        assert seen[key] > 0, f"no synthetic DICOM with {key}"


def test_findings_are_drawn_where_the_labels_say():
    cases = make_cases(30, seed=7)
    pneumonia = next(c for c in cases if c.opacity is not None and c.opacity[3] > 0.1)
    with_, without = (
        render(c, np.random.default_rng(0))
        for c in (pneumonia, dataclasses.replace(pneumonia, opacity=None))
    )
    r, c = np.unravel_index(np.argmax(with_ - without), with_.shape)
    ox, oy, rad, _ = pneumonia.opacity
    cx, cy = pneumonia.to_px(ox, oy)
    assert np.hypot(c - cx, r - cy) < 2 * rad * pneumonia.unit
    chf = next(c for c in cases if c.label == 1 and c.haze > 0.4)
    diff = render(chf, np.random.default_rng(0)) - render(
        dataclasses.replace(chf, haze=0.0, effusion=0.0), np.random.default_rng(0)
    )
    for side in (-0.12, 0.12):  # bilateral perihilar haze
        hx, hy = chf.to_px(side, -0.03)
        assert diff[int(hy) - 10 : int(hy) + 10, int(hx) - 10 : int(hx) + 10].mean() > 0.02
    normal = [c.heart_scale for c in cases if c.label == 0]
    assert np.median([c.heart_scale for c in cases if c.label == 1]) > max(normal)


def test_deterministic_per_seed():
    a, b, c = make_cases(6, 1), make_cases(6, 1), make_cases(6, 2)
    assert [x.key for x in a] == [x.key for x in b] != [x.key for x in c]


def test_reader_count_logic_at_full_size(tmp_path):
    # 1,083 images (the real dataset size): tables written for real, DICOMs as empty placeholders
    # (the reader only checks that they exist), calibration rows counted independently.
    cases = make_cases(1083, seed=11)
    rng = np.random.default_rng(0)
    paths = [dicom_relpath(c) for c in cases]
    master_rows(cases, paths, [(0, 0, 420, 420)] * len(cases), rng).to_csv(
        tmp_path / "master_sheet.csv", index=False
    )
    fixations, _ = gaze_tables(cases, rng)
    needed = ["DICOM_ID", "FPOGX", "FPOGY", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL"]  # keeps it fast
    fixations[needed].to_csv(tmp_path / "fixations.csv", index=False)
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).touch()
    index = read_egd(tmp_path)
    keys = {c.key for c in cases}
    calib = fixations[~fixations["DICOM_ID"].isin(keys)]["DICOM_ID"]
    assert len(index.records) == 1083
    assert index.exclusions == {"calibration_rows": len(calib), "calibration_ids": calib.nunique()}
    assert len(calib) > 0


def test_cli_writes_a_readable_twin(tmp_path, capsys):
    out = tmp_path / "twin"
    main([str(out), "--images", "3", "--seed", "1"])
    assert "wrote 3 images" in capsys.readouterr().out
    assert len(read_egd(out).records) == 3
