"""The REFLACX twin takes the EGD twin's reader knobs (issue 19): a scanning share moves fixations
over the whole film, corners included, and thoroughness scales the count and the dwell; both land
in the published fixations.csv, and the default writes the twin byte for byte as without them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.config import DataConfig
from trainables.data import reflacx_source
from trainables.data.synthetic import MANIFEST
from trainables.data.synthetic.reader import ReaderSpec
from trainables.data.synthetic.reflacx import main, write_reflacx_twin
from trainables.data.synthetic.reflacx_gaze import fit_view, pixels_per_degree

N_IMAGES, N_MULTI, SEED = 16, 4, 5
SHARE = 0.5
CORNER = 0.2  # corner boxes of side 0.2 x the image: 4 x 0.04 = 16% of the film


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("reflacx-readers")
    specs = {
        "base": None,
        "default": ReaderSpec(),
        "scan": ReaderSpec(SHARE, 1.0),
        "thorough": ReaderSpec(0.0, 2.0),
    }
    for name, spec in specs.items():
        write_reflacx_twin(base / name, N_IMAGES, SEED, multi_reader_images=N_MULTI, reader=spec)
    return {name: base / name for name in specs}


def _readings(root: Path) -> list[tuple[str, int, int, pd.DataFrame]]:
    """(id, width, height, fixations) of every reading with gaze, from the twin's files."""
    meta = pd.concat(
        [pd.read_csv(p) for p in sorted((root / "main_data").glob("metadata_phase_*.csv"))]
    )
    out = []
    for _, row in meta.iterrows():
        path = root / "main_data" / row["id"] / "fixations.csv"
        if path.exists():
            out.append((row["id"], row["image_size_x"], row["image_size_y"], pd.read_csv(path)))
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_default_reader_writes_the_same_twin_byte_for_byte(twins):
    assert _digest(twins["default"]) == _digest(twins["base"])
    assert "reader" not in json.loads((twins["base"] / MANIFEST).read_text())


def test_scanning_moves_its_share_of_unzoomed_fixations_over_the_whole_film(twins):
    base, scan = _readings(twins["base"]), _readings(twins["scan"])
    assert [r[0] for r in base] == [r[0] for r in scan]
    position = ["x_position", "y_position"]
    ppd = ["angular_resolution_x_pixels_per_degree", "angular_resolution_y_pixels_per_degree"]
    shown = [f"{c}_shown_from_image" for c in ("xmin", "ymin", "xmax", "ymax")]
    moved_xy, moved_total = [], 0
    for (rid, w, h, before), (_, _, _, after) in zip(base, scan, strict=True):
        assert len(after) == len(before), rid  # the same reading, some fixations elsewhere
        moved = np.flatnonzero((after[position].values != before[position].values).any(axis=1))
        unzoomed = np.flatnonzero((before[shown].values == [0, 0, w, h]).all(axis=1))
        eligible = unzoomed[unzoomed > 0]
        assert len(moved) == min(round(SHARE * len(before)), len(eligible)), rid
        assert set(moved) <= set(eligible), rid  # never the first, never during a zoom
        # Time, duration, window and display columns are the reading's own.
        rest = [c for c in before.columns if c not in position + ppd]
        pd.testing.assert_frame_equal(after[rest], before[rest])
        xy = after[position].values[moved]
        assert ((xy >= 0) & (xy < [w, h])).all(), rid
        # A moved fixation's angular resolution is that of its new place on the unzoomed screen.
        view = fit_view((h, w))
        expect = [pixels_per_degree(view, *view.to_screen(x, y)) for x, y in xy]
        np.testing.assert_array_equal(after[ppd].values[moved], np.array(expect).reshape(-1, 2))
        moved_xy.append(xy / [w, h])
        moved_total += len(moved)
    xy = np.concatenate(moved_xy)
    assert moved_total > 500
    # Uniform over the film: the corners get their share of the area (16%), +-4 binomial SDs.
    sd = np.sqrt(0.16 * 0.84 / len(xy))
    assert abs(_in_corner(xy).mean() - 4 * CORNER**2) < 4 * sd
    # ... where the default readers almost never look.
    all_base = np.concatenate([f[position].values / [w, h] for _, w, h, f in base])
    assert _in_corner(all_base).mean() < 0.05


def _in_corner(xy: np.ndarray) -> np.ndarray:
    """Which of the points (x, y as fractions of the film) lie in a corner box of side CORNER."""
    edge = (xy < CORNER) | (xy > 1 - CORNER)
    return edge[:, 0] & edge[:, 1]


def test_thoroughness_doubles_the_fixations_and_their_dwell(twins):
    def summary(root):
        readings = _readings(root)
        counts = [len(f) for *_, f in readings]
        dwell = np.concatenate(
            [(f.timestamp_end_fixation - f.timestamp_start_fixation).values for *_, f in readings]
        )
        return np.mean(counts), np.median(dwell)

    (n1, d1), (n2, d2) = summary(twins["base"]), summary(twins["thorough"])
    assert 1.7 < n2 / n1 < 2.3
    assert 1.7 < d2 / d1 < 2.3
    assert json.loads((twins["thorough"] / MANIFEST).read_text())["reader"] == {
        "scanning_share": 0.0,
        "thoroughness": 2.0,
    }


def test_the_data_config_names_and_writes_the_reader_twin(tmp_path):
    cfg = DataConfig(dataset="reflacx", synthetic_images=6, synthetic_scanning_share=0.25)
    name = reflacx_source.twin_name(cfg)
    assert name.endswith("-scan0.25")
    assert name != reflacx_source.twin_name(DataConfig(dataset="reflacx", synthetic_images=6))
    reflacx_source.write_twin(tmp_path / name, cfg)
    manifest = json.loads((tmp_path / name / MANIFEST).read_text())
    assert manifest["reader"]["scanning_share"] == 0.25


def test_the_cli_takes_the_reader_options(tmp_path, capsys):
    main([str(tmp_path / "t"), "--images", "6", "--thoroughness", "0.5"])
    assert json.loads((tmp_path / "t" / MANIFEST).read_text())["reader"]["thoroughness"] == 0.5
