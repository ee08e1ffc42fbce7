"""Shortcut twins: a class-correlated signal away from the findings and the gaze in train/val
images, broken in test; every other pixel identical to the clean twin."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from tests.tiny import egd_task
from trainables.config import DataConfig
from trainables.data.cache import load_or_build
from trainables.data.dicom import read_dicom
from trainables.data.egd import read_egd
from trainables.data.egd_source import shortcut_spec
from trainables.data.prepare import ensure_synthetic, prepare_data, resolve_sources
from trainables.data.synthetic import make_cases, read_manifest, render
from trainables.data.synthetic.gaze import simulate_fixations
from trainables.data.synthetic.shortcuts import (
    SHORTCUTS,
    ShortcutSpec,
    list_shortcuts,
    plant,
)

CLASSES = egd_task().classes

N = 30  # 10 per class; a handful of test images


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The clean twin and a marker twin of the same seed (test split: shortcut absent)."""
    base = DataConfig(data_dir=str(tmp_path_factory.mktemp("data")), synthetic_images=N)
    marker = dataclasses.replace(
        base, synthetic_shortcut="marker", synthetic_shortcut_test="absent"
    )
    return ensure_synthetic(base), ensure_synthetic(marker), base, marker


@pytest.mark.parametrize("kind", list_shortcuts())
def test_each_kind_draws_a_class_code_outside_the_chest_and_the_gaze(kind):
    cases = make_cases(6, seed=3)
    for case in cases[:3]:
        image = render(case, np.random.default_rng(0))
        drawn = [plant(image, kind, code, np.random.default_rng(1)) for code in range(len(CLASSES))]
        changed = [np.abs(d - image) > 0.05 for d in drawn]
        assert all(c.any() for c in changed), "nothing drawn"
        # The three classes' shortcuts are told apart by where or how bright they are.
        assert not np.allclose(drawn[0], drawn[1]) and not np.allclose(drawn[1], drawn[2])
        # Away from the findings and the gaze: every fixation of a reading is far from it.
        fx = simulate_fixations(case, np.random.default_rng(2))
        on = (fx["x"] >= 0) & (fx["x"] < case.width) & (fx["y"] >= 0) & (fx["y"] < case.height)
        for c in changed:
            rows, cols = np.nonzero(c)
            dist = np.hypot(
                cols[None, :] - fx["x"][on, None], rows[None, :] - fx["y"][on, None]
            ).min()
            assert dist > 0.04 * min(case.height, case.width)
        assert plant(image, kind, None, np.random.default_rng(1)) is image


def test_shortcut_twin_is_the_clean_twin_plus_the_shortcut_in_train_and_val(twins):
    clean_root, marker_root, _, _ = twins
    manifest = read_manifest(marker_root)
    assert manifest["shortcut"] == dataclasses.asdict(ShortcutSpec("marker", 0.9, "absent"))
    assert read_manifest(clean_root)["shortcut"] is None
    split = pd.read_csv(marker_root / manifest["split_file"]).set_index("dicom_id")["split"]
    assert (pd.read_csv(clean_root / "split.csv").set_index("dicom_id")["split"] == split).all()
    # The gaze files are byte-identical: the shortcut does not move the radiologist's eyes.
    assert (clean_root / "fixations.csv").read_bytes() == (
        marker_root / "fixations.csv"
    ).read_bytes()
    carried = {"train": 0, "val": 0, "test": 0}
    for rec in read_egd(marker_root).records:
        a = read_dicom(rec.dicom_path)
        b = read_dicom(clean_root / rec.dicom_path.relative_to(marker_root))
        differs = np.abs(a - b) > 0.05
        carried[split[rec.key]] += bool(differs.any())
        if differs.any():  # only a small corner region changed
            assert differs.mean() < 0.02
    assert carried["test"] == 0  # broken in test: absent
    n_trainval = int((split != "test").sum())
    assert carried["train"] + carried["val"] >= 0.7 * n_trainval
    assert manifest["shortcut_images"] == carried


def test_prepare_uses_the_twins_split_and_scales_sigma_to_its_size(twins):
    clean_root, marker_root, base, marker = twins
    data = prepare_data(marker, progress=False)
    split = pd.read_csv(marker_root / "split.csv").set_index("dicom_id")["split"]
    assert [("train", "val", "test")[s] for s in data.split] == [split[k] for k in data.keys]
    # gaze_sigma is in MIMIC pixels: a twin map equals one drawn with sigma * pixel_scale.
    scale = read_manifest(clean_root)["pixel_scale"]
    assert 0.2 < scale < 0.4
    clean = prepare_data(base, progress=False)
    resolved = resolve_sources(base)
    index = read_egd(clean_root)
    for sigma, same in ((base.gaze_sigma * scale, True), (base.gaze_sigma, False)):
        direct = load_or_build(
            index, dataclasses.replace(resolved, gaze_sigma=sigma), progress=False, workers=1
        )
        equal = np.allclose(direct.data.gaze.astype(np.float32), clean.gaze.astype(np.float32))
        assert equal == same, sigma


def test_a_twin_split_other_than_80_10_10_is_its_own_folder_and_pairs_with_its_clean_twin(
    tmp_path,
):
    shares = (0.5, 0.1, 0.4)
    base = DataConfig(data_dir=str(tmp_path), synthetic_images=N, split_fractions=shares)
    marker = dataclasses.replace(base, synthetic_shortcut="marker")
    default = dataclasses.replace(marker, split_fractions=(0.8, 0.1, 0.1))
    root = ensure_synthetic(marker)
    assert root != ensure_synthetic(default)  # its pixels follow its split: not the 80/10/10 twin
    assert read_manifest(root)["split_fractions"] == list(shares)
    shortcut, clean = prepare_data(marker, progress=False), prepare_data(base, progress=False)
    counts = np.bincount(shortcut.split, minlength=3)
    assert counts[2] >= 10 > counts[1]  # 40% of 30 images to test, 10% to val
    np.testing.assert_array_equal(shortcut.split, clean.split)  # paired test images
    plain = prepare_data(dataclasses.replace(base, split_fractions=(0.8, 0.1, 0.1)), progress=False)
    assert (plain.split != clean.split).any()  # the clean twin is split by the DataConfig too


def test_bad_specs_are_refused():
    with pytest.raises(KeyError, match="marker"):
        ShortcutSpec("sticker")
    with pytest.raises(ValueError, match="fraction"):
        ShortcutSpec("marker", fraction=1.5)
    with pytest.raises(ValueError, match="absent or shuffled"):
        ShortcutSpec("marker", test="flipped")  # type: ignore[arg-type]
    assert set(SHORTCUTS.names()) == set(list_shortcuts()) >= {"marker", "intensity", "border"}
    assert shortcut_spec(DataConfig()) is None


def test_cli_writes_a_shortcut_twin(tmp_path):
    from trainables.data.synthetic import main

    main([str(tmp_path / "t"), "--images", "9", "--seed", "2", "--shortcut", "border",
          "--shortcut-test", "shuffled"])  # fmt: skip
    manifest = json.loads((tmp_path / "t" / "twin.json").read_text())
    assert manifest["shortcut"]["kind"] == "border" and manifest["shortcut"]["test"] == "shuffled"
