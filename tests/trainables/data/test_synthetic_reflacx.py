"""The REFLACX twin has the published layout (checked against DESIGN.md section 3b as written, not
against the package's constants) and readers that behave like readers."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest

from trainables.data.synthetic.reflacx import main, write_reflacx_twin
from trainables.data.synthetic.reflacx_cases import (
    PROFILES,
    Finding,
    grade,
    make_images,
    render_image,
)

N_IMAGES, N_MULTI, SEED = 16, 4, 5

# DESIGN 3b, spelled out.
BASE = "id,split,eye_tracking_data_discarded,image,dicom_id,subject_id,image_size_x,image_size_y"
FIXATIONS_HEADER = (
    "timestamp_start_fixation,timestamp_end_fixation,x_position,y_position,pupil_area_normalized,"
    "angular_resolution_x_pixels_per_degree,angular_resolution_y_pixels_per_degree,window_width,"
    "window_level,xmin_shown_from_image,ymin_shown_from_image,xmax_shown_from_image,"
    "ymax_shown_from_image,xmin_in_screen_coordinates,ymin_in_screen_coordinates,"
    "xmax_in_screen_coordinates,ymax_in_screen_coordinates"
)
PHASE_1 = {
    "Airway wall thickening", "Atelectasis", "Consolidation", "Emphysema",
    "Enlarged cardiac silhouette", "Fibrosis", "Fracture", "Groundglass opacity", "Mass", "Nodule",
    "Pleural effusion", "Pleural thickening", "Pneumothorax", "Pulmonary edema", "Quality issue",
    "Support devices", "Wide mediastinum", "Other",
}  # fmt: skip
PHASE_23 = {
    "Abnormal mediastinal contour", "Acute fracture", "Atelectasis", "Consolidation",
    "Enlarged cardiac silhouette", "Enlarged hilum", "Groundglass opacity", "Hiatal hernia",
    "High lung volume / emphysema", "Interstitial lung disease", "Lung nodule or mass",
    "Pleural abnormality", "Pneumothorax", "Pulmonary edema", "Support devices", "Other",
}  # fmt: skip
BOOLEAN = {1: {"Quality issue", "Support devices"}, 2: {"Support devices"}, 3: {"Support devices"}}
ID_FORMAT = {1: r"P1\d{2}R\d{6}", 2: r"P2\d{2}R\d{6}", 3: r"P300R\d{6}"}


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("reflacx-twin") / "twin"
    return root, write_reflacx_twin(root, N_IMAGES, seed=SEED, multi_reader_images=N_MULTI)


def _table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _columns(path: Path) -> dict[str, np.ndarray]:
    """A numeric table as column -> float array."""
    header, rows = _table(path)
    return {k: np.array([float(r[k]) for r in rows]) for k in header}


def _metadata(root: Path) -> dict[int, list[dict[str, str]]]:
    return {p: _table(root / "main_data" / f"metadata_phase_{p}.csv")[1] for p in (1, 2, 3)}


def test_metadata_layout(twin):
    root, stats = twin
    labels = PHASE_1 | PHASE_23
    for phase, own in ((1, PHASE_1), (2, PHASE_23), (3, PHASE_23)):
        header, rows = _table(root / "main_data" / f"metadata_phase_{phase}.csv")
        assert ",".join(header[:8]) == BASE and set(header[8:]) == labels
        assert len(header) == 8 + len(labels)
        assert len(rows) == stats["readings_per_phase"][phase]
        for row in rows:
            assert re.fullmatch(ID_FORMAT[phase], row["id"])
            assert row["eye_tracking_data_discarded"] in ("True", "False")
            assert row["split"] in ("train", "validate", "test")
            assert all(row[c] == "" for c in labels - own)  # the other phase's columns: empty
            for c in own - BOOLEAN[phase] - {"Other"}:
                assert row[c] in {"0", "1", "2", "3", "4", "5"}, (c, row[c])
            assert all(row[c] in ("True", "False") for c in BOOLEAN[phase])
            parts = re.fullmatch(
                r"physionet\.org/files/mimic-cxr/2\.0\.0/(files/p(\d\d)/p(\d{8})/s\d{8}/(.+)\.dcm)",
                row["image"],
            )
            assert parts and parts[4] == row["dicom_id"] and parts[3] == row["subject_id"]
            assert parts[2] == row["subject_id"][:2]
            assert (root / parts[1]).is_file()  # the twin folder is its own MIMIC root
    rows = [r for rs in _metadata(root).values() for r in rs]
    assert len({r["id"] for r in rows}) == len(rows) == stats["readings"]
    for subject in {r["subject_id"] for r in rows}:  # MIMIC splits by patient
        assert len({r["split"] for r in rows if r["subject_id"] == subject}) == 1
    assert any(r["Other"] for r in rows) or len(rows) < 60  # free text shows up now and then


def test_readings_per_image_and_discarded_gaze(twin):
    root, stats = twin
    meta = _metadata(root)
    for phase in (1, 2):
        per_image = Counter(r["dicom_id"] for r in meta[phase])
        assert set(per_image.values()) == {5}
        for rows in (
            [r for r in meta[phase] if r["dicom_id"] == k] for k in per_image
        ):  # one reading per radiologist: trials 01-05
            assert sorted(r["id"][2:4] for r in rows) == ["01", "02", "03", "04", "05"]
    assert Counter(r["dicom_id"] for r in meta[3]).most_common(1)[0][1] == 1
    assert sum(len(v) for v in meta.values()) == 5 * N_MULTI + (N_IMAGES - N_MULTI)
    discarded = [
        r for p in (1, 2, 3) for r in meta[p] if r["eye_tracking_data_discarded"] == "True"
    ]
    assert len(discarded) == stats["discarded"] == max(1, round(0.01 * stats["readings"]))
    assert all(r["id"][1] in "12" for r in discarded)  # as in REFLACX: phases 1-2 only
    for phase in (1, 2, 3):
        for row in meta[phase]:
            files = {p.name for p in (root / "main_data" / row["id"]).iterdir()}
            base = {"anomaly_location_ellipses.csv", "chest_bounding_box.csv"}
            gaze = {"fixations.csv", "timestamps_transcription.csv", "transcription.txt"}
            assert files == (base if row["eye_tracking_data_discarded"] == "True" else base | gaze)


def test_per_reading_tables(twin):
    root, _ = twin
    meta = _metadata(root)
    for phase in (1, 2, 3):
        own = PHASE_1 if phase == 1 else PHASE_23
        for row in meta[phase]:
            folder = root / "main_data" / row["id"]
            w, h = int(row["image_size_x"]), int(row["image_size_y"])
            header, ellipses = _table(folder / "anomaly_location_ellipses.csv")
            assert header[:5] == ["xmin", "ymin", "xmax", "ymax", "certainty"]
            assert set(header[5:]) == own
            for c in own - {"Other"} - BOOLEAN[phase]:  # metadata = max certainty of its ellipses
                drawn = [int(e["certainty"]) for e in ellipses if e[c] == "True"]
                assert int(row[c]) == max(drawn, default=0)
            for e in ellipses:
                assert 0 <= int(e["xmin"]) <= int(e["xmax"]) < w and 1 <= int(e["certainty"]) <= 5
                assert all(e[c] in ("True", "False") for c in own)
            header, box = _table(folder / "chest_bounding_box.csv")
            assert header == ["xmin", "ymin", "xmax", "ymax"] and len(box) == 1
            if row["eye_tracking_data_discarded"] == "True":
                continue
            with open(folder / "fixations.csv", encoding="utf-8") as fh:
                assert fh.readline().rstrip("\n") == FIXATIONS_HEADER
            f = _columns(folder / "fixations.csv")
            assert (f["timestamp_end_fixation"] > f["timestamp_start_fixation"]).all()
            assert (np.diff(f["timestamp_start_fixation"]) > 0).all()
            assert (0 <= f["xmin_shown_from_image"]).all() and (
                f["xmax_shown_from_image"] <= w
            ).all()
            assert (f["ymin_shown_from_image"] < f["ymax_shown_from_image"]).all()
            assert (f["ymax_shown_from_image"] <= h).all()
            assert (f["xmin_in_screen_coordinates"] >= 660).all()
            assert (f["xmax_in_screen_coordinates"] <= 3840).all()
            assert (f["ymax_in_screen_coordinates"] <= 2160).all()
            for k in ("x_position", "angular_resolution_x_pixels_per_degree"):
                assert (f[k] == np.round(f[k])).all()  # integers, as published
            header, words = _table(folder / "timestamps_transcription.csv")
            assert header == ["word", "timestamp_start_word", "timestamp_end_word"] and words
            text = (folder / "transcription.txt").read_text()
            assert text.split() and " ".join(w["word"] for w in words).replace(" .", ".") in text


def test_dicoms_and_manifest(twin):
    root, stats = twin
    rows = [r for rs in _metadata(root).values() for r in rs]
    for row in {r["dicom_id"]: r for r in rows}.values():
        ds = pydicom.dcmread(root / row["image"].split("2.0.0/")[1], stop_before_pixels=True)
        assert (ds.Columns, ds.Rows) == (int(row["image_size_x"]), int(row["image_size_y"]))
    manifest = json.loads((root / "twin.json").read_text())
    assert manifest["images"] == N_IMAGES and manifest["seed"] == SEED
    assert manifest["readings"] == stats["readings"]
    assert manifest["multi_reader_images"] == N_MULTI
    assert 0.2 < manifest["pixel_scale"] < 0.4  # ~1000 px images against MIMIC's ~3000


def test_readers_look_differently(twin):
    root, _ = twin
    meta = _metadata(root)
    by_trial: dict[str, list[dict]] = {}
    for row in meta[1] + meta[2]:
        if row["eye_tracking_data_discarded"] == "False":
            f = _columns(root / "main_data" / row["id"] / "fixations.csv")
            shown = f["xmax_shown_from_image"] - f["xmin_shown_from_image"]
            reading = {
                "n": len(shown),
                "dwell": (f["timestamp_end_fixation"] - f["timestamp_start_fixation"]).sum(),
                "zoom": np.mean(shown < int(row["image_size_x"])),
            }
            by_trial.setdefault(row["id"][2:4], []).append(reading)
    thorough, quick = by_trial["01"], by_trial["04"]  # PROFILES order
    assert PROFILES[0].name == "thorough" and PROFILES[3].name == "quick"
    assert min(r["n"] for r in thorough) > 2 * max(r["n"] for r in quick)
    assert np.mean([r["dwell"] for r in thorough]) > 3 * np.mean([r["dwell"] for r in quick])
    assert np.mean([r["zoom"] for r in thorough]) > np.mean([r["zoom"] for r in quick])
    counts = [np.mean([r["n"] for r in rows]) for _, rows in sorted(by_trial.items())]
    assert len(set(np.round(counts))) == 5  # five distinct habits


def test_angular_resolution_follows_display_and_zoom(twin):
    root, _ = twin
    row = next(r for r in _metadata(root)[3] if r["eye_tracking_data_discarded"] == "False")
    _, fix = _table(root / "main_data" / row["id"] / "fixations.csv")
    w, h = int(row["image_size_x"]), int(row["image_size_y"])
    fit = min(3180 / w, 2160 / h)  # screen pixels per image pixel, unzoomed
    for r in fix:
        shown = float(r["xmax_shown_from_image"]) - float(r["xmin_shown_from_image"])
        screen = float(r["xmax_in_screen_coordinates"]) - float(r["xmin_in_screen_coordinates"])
        scale = screen / shown  # fit x zoom
        ppd = float(r["angular_resolution_x_pixels_per_degree"])
        assert 94 / scale * 0.95 <= ppd <= 112 / scale * 1.05 + 1, (ppd, scale)
        assert scale >= fit * 0.99


def test_grades_follow_the_evidence():
    rng = np.random.default_rng(0)
    box = ((10.0, 10.0, 50.0, 50.0),)
    for profile in PROFILES:
        clear = [grade(Finding("Consolidation", 0.95, box), profile, rng) for _ in range(400)]
        absent = [grade(Finding("Consolidation", 0.0, box), profile, rng) for _ in range(400)]
        assert np.mean(np.array(clear) >= 3) > 0.95
        assert np.mean(np.array(absent) <= 2) > 0.97 and np.mean(np.array(absent) == 0) > 0.7
        assert max(absent) >= 1  # readers sometimes say "unlikely"
    weak = [grade(Finding("Consolidation", 0.55, box), PROFILES[1], rng) for _ in range(400)]
    assert 0.2 < np.mean(np.array(weak) >= 3) < 0.8  # weak findings split the readers


def test_planted_findings_are_drawn():
    images = make_images(40, 4, seed=2)
    with_nodule = next(im for im in images if im.nodule is not None and im.nodule[3] > 0.15)
    with_device = next(im for im in images if im.device)
    for image, (x, y) in (
        (with_nodule, with_nodule.nodule[:2]),
        (with_device, (0.02, -0.3)),  # the tube in the trachea
    ):
        plain = render_image(
            type(image)(image.case, image.phase, image.split, image.findings, None, False),
            np.random.default_rng(0),
        )
        drawn = render_image(image, np.random.default_rng(0))
        cx, cy = (round(v) for v in image.case.to_px(x, y))
        spot = np.s_[cy - 2 : cy + 3, cx - 2 : cx + 3]
        assert drawn[spot].mean() > plain[spot].mean() + 0.03
    phases = Counter(im.phase for im in images)
    assert phases == {1: 2, 2: 2, 3: 36}


def test_deterministic_per_seed_and_cli(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_reflacx_twin(a, 4, seed=1, multi_reader_images=1)
    main([str(b), "--images", "4", "--seed", "1", "--multi-reader-images", "1"])
    assert "wrote 4 images, 8 readings" in capsys.readouterr().out
    write_reflacx_twin(c, 4, seed=2, multi_reader_images=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".csv":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    meta = Path("main_data/metadata_phase_3.csv")
    assert (a / meta).read_bytes() != (c / meta).read_bytes()
    with pytest.raises(ValueError, match="multi_reader_images"):
        write_reflacx_twin(tmp_path / "d", 3, multi_reader_images=3)
