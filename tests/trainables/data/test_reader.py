"""Reader realism on the twin: scanning fixations go where they are said to, thoroughness changes
counts and durations as documented, and the default twin is byte-identical to the one written
before the knob existed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.config import DataConfig
from trainables.data.prepare import ensure_synthetic, synthetic_root
from trainables.data.synthetic import gaze_tables, main, make_cases, write_synthetic
from trainables.data.synthetic.gaze import simulate_fixations
from trainables.data.synthetic.reader import ReaderSpec, read_as, reader_stream

# sha256 over (relative path, bytes) of every file of write_synthetic(out, 9, 5), as written by the
# code before the reader existed (main at 0478310): DICOMs, tables, split.csv and twin.json.
DEFAULT_TWIN_9_SEED_5 = "9aa48ff9d1742b1bcd84faef24fc20e8d91cf6e5ec8bb84cd145444eaddfd9f1"
CORNER = 0.12  # corner boxes of 12% of the side hold every planted marker (3% margin + 7% side)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _readings(spec: ReaderSpec, n: int = 24, seed: int = 3):
    """(case, default reading, reading of ``spec``) per case."""
    out = []
    for i, case in enumerate(make_cases(n, seed)):
        fx = simulate_fixations(case, np.random.default_rng([seed, 99, i]))
        out.append((case, fx, read_as(case, fx, spec, reader_stream(seed, i))))
    return out


def _reading_region(case, x, y) -> np.ndarray:
    """Inside the part of the chest the default reading covers (survey points and findings)."""
    u, v = (x - case.cx) / case.unit, (y - case.cy) / case.unit
    return (np.abs(u) <= 0.45) & (v >= -0.5) & (v <= 0.45)


def test_the_default_twin_is_byte_identical_to_the_one_before_the_reader(tmp_path):
    write_synthetic(tmp_path / "none", 9, 5)
    write_synthetic(tmp_path / "default", 9, 5, reader=ReaderSpec())
    assert _tree_hash(tmp_path / "none") == DEFAULT_TWIN_9_SEED_5
    assert _tree_hash(tmp_path / "default") == DEFAULT_TWIN_9_SEED_5
    assert "reader" not in json.loads((tmp_path / "none" / "twin.json").read_text())
    cfg = DataConfig(data_dir=str(tmp_path), synthetic_images=9, synthetic_seed=5)
    assert synthetic_root(cfg).name == "synthetic-9-seed5"  # folder names as before


def test_scanning_fixations_spread_over_the_film_corners_included():
    share = 0.4
    moved_x, moved_y, outside_expected, moved_outside = [], [], [], []
    for case, fx, scanned in _readings(ReaderSpec(scanning_share=share)):
        n = len(fx["x"])
        assert len(scanned["x"]) == n  # thoroughness 1: as many fixations
        np.testing.assert_array_equal(scanned["start"], fx["start"])
        np.testing.assert_array_equal(scanned["dur"], fx["dur"])
        moved = (scanned["x"] != fx["x"]) | (scanned["y"] != fx["y"])
        assert not moved[0]  # every reading starts in the centre
        assert moved.sum() == min(round(share * n), n - 1)
        x, y = scanned["x"][moved], scanned["y"][moved]
        assert (x >= 0).all() and (x < case.width).all() and (y >= 0).all()
        assert (y < case.height).all()
        moved_x.append(x / case.width)
        moved_y.append(y / case.height)
        moved_outside.append(~_reading_region(case, x, y))
        gx, gy = np.meshgrid(np.arange(case.width) + 0.5, np.arange(case.height) + 0.5)
        outside_expected.append(1.0 - _reading_region(case, gx, gy).mean())
    mx, my = np.concatenate(moved_x), np.concatenate(moved_y)
    assert len(mx) > 300
    # Uniform over the film: mean 0.5, sd 1/sqrt(12) on each axis.
    assert abs(mx.mean() - 0.5) < 0.05 and abs(my.mean() - 0.5) < 0.05
    assert abs(mx.std() - 12**-0.5) < 0.03 and abs(my.std() - 12**-0.5) < 0.03
    # Each corner box gets its area's share (4 * 0.12^2 = 5.8% for the four).
    in_corner = ((mx < CORNER) | (mx > 1 - CORNER)) & ((my < CORNER) | (my > 1 - CORNER))
    assert 0.025 < in_corner.mean() < 0.10
    for right in (False, True):
        for bottom in (False, True):
            assert (in_corner & ((mx > 0.5) == right) & ((my > 0.5) == bottom)).any()
    # Outside the region the default reading covers, in proportion to its area.
    assert abs(np.concatenate(moved_outside).mean() - np.mean(outside_expected)) < 0.06


def test_the_default_reading_never_reaches_the_corners():
    # What the knob is for: the default reading stays on the chest, away from the shortcuts.
    corner = []
    for case, fx, _ in _readings(ReaderSpec()):
        x, y = fx["x"] / case.width, fx["y"] / case.height
        on = (x >= 0) & (x < 1)
        corner.append((((x < CORNER) | (x > 1 - CORNER)) & ((y < CORNER) | (y > 1 - CORNER)))[on])
    assert np.concatenate(corner).sum() == 0


@pytest.mark.parametrize("thoroughness", [0.5, 2.0])
def test_thoroughness_scales_the_count_and_the_dwell(thoroughness):
    for _, fx, read in _readings(ReaderSpec(thoroughness=thoroughness), n=9):
        n = len(fx["x"])
        m = round(thoroughness * n)
        assert len(read["x"]) == m
        k = min(n, m)  # the default reading's fixations come first, where they were
        np.testing.assert_array_equal(read["x"][:k], fx["x"][:k])
        np.testing.assert_allclose(read["dur"][:k], thoroughness * fx["dur"][:k])
        assert (np.diff(read["start"]) > read["dur"][:-1]).all()  # in order, never overlapping
        assert read["start"][0] == fx["start"][0]
        total, default_total = read["dur"].sum(), fx["dur"].sum()
        assert 0.6 * thoroughness**2 < total / default_total < 1.6 * thoroughness**2


def test_the_reader_leaves_sessions_calibrations_and_images_as_they_were(tmp_path):
    cases = make_cases(24, seed=4)
    base, _ = gaze_tables(cases, np.random.default_rng(0))
    scan, _ = gaze_tables(cases, np.random.default_rng(0), ReaderSpec(0.3, 1.5), seed=4)
    assert list(scan.columns) == list(base.columns)
    ids = {c.key for c in cases}
    calib = ~base["DICOM_ID"].isin(ids)
    pd.testing.assert_frame_equal(
        base[calib].drop(columns="TIMETICK(f=10000000)").reset_index(drop=True),
        scan[~scan["DICOM_ID"].isin(ids)]
        .drop(columns="TIMETICK(f=10000000)")
        .reset_index(drop=True),
    )
    counts = scan["DICOM_ID"].value_counts()
    expected = base["DICOM_ID"].value_counts()
    assert all(counts[k] == round(1.5 * expected[k]) for k in ids)
    assert (scan.groupby("DICOM_ID")["SESSION_ID"].first() == base.groupby("DICOM_ID")[
        "SESSION_ID"
    ].first()).all()  # fmt: skip
    # A whole twin: the reader's knobs name the folder and twin.json; the images do not change.
    cfg = DataConfig(data_dir=str(tmp_path), synthetic_images=9, synthetic_seed=5)
    real = dataclasses.replace(cfg, synthetic_scanning_share=0.3, synthetic_thoroughness=2.0)
    assert synthetic_root(real).name == "synthetic-9-seed5-scan0.3-thor2"
    a, b = ensure_synthetic(cfg), ensure_synthetic(real)
    assert json.loads((b / "twin.json").read_text())["reader"] == {
        "scanning_share": 0.3,
        "thoroughness": 2.0,
    }
    for p in sorted((a / "files").rglob("*.dcm")):
        assert p.read_bytes() == (b / p.relative_to(a)).read_bytes()
    for name in ("master_sheet.csv", "bounding_boxes.csv", "split.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "fixations.csv").read_bytes() != (b / "fixations.csv").read_bytes()


def test_bad_reader_specs_are_refused_and_the_cli_takes_the_knobs(tmp_path):
    with pytest.raises(ValueError, match="scanning share"):
        ReaderSpec(scanning_share=1.5)
    with pytest.raises(ValueError, match="thoroughness"):
        ReaderSpec(thoroughness=0.0)
    assert ReaderSpec().tag() == "" and ReaderSpec(0.25, 0.5).tag() == "scan0.25-thor0.5"
    main([str(tmp_path / "t"), "--images", "3", "--scanning-share", "0.5"])
    manifest = json.loads((tmp_path / "t" / "twin.json").read_text())
    assert manifest["reader"] == {"scanning_share": 0.5, "thoroughness": 1.0}
