"""Datasets are registry entries: a third dataset is this one module (the toy below, registered
from this test file: its reader, its gaze map and its twin), and the cache, the split, the trials
and the record take everything else from the entry. The two built-in ones keep their contracts."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.tiny import CPU1, tiny_config
from trainables.config import ConfigError, DataConfig
from trainables.data.datasets import DATASETS, get_dataset, list_datasets, register_dataset
from trainables.data.drawn import Drawn
from trainables.data.prepare import prepare_data
from trainables.fit import fit
from trainables.task import Task

# -- the toy dataset: discs and squares, each with one reader's fixations on the shape ---------
TOY = "toy-shapes"
TASK = Task(("disc", "square"), exclusive=True)
SIDE = 48


@dataclass(frozen=True, eq=False)
class ToyRecord:
    key: str
    patient: str
    label: int
    dicom_path: Path
    points: np.ndarray  # (n, 2) x, y native fixations


@dataclass(frozen=True)
class ToyIndex:
    records: tuple[ToyRecord, ...]
    exclusions: dict[str, int]
    source_files: tuple[Path, ...]


def read(cfg: DataConfig) -> ToyIndex:
    root = Path(cfg.data_root)
    table = pd.read_csv(root / "shapes.csv", dtype={"key": str, "patient": str})
    bad = ~table["label"].isin((0, 1))
    records = tuple(
        ToyRecord(
            r.key, r.patient, int(r.label), root / f"{r.key}.dcm", np.array([[r.x, r.y]] * 3, float)
        )
        for r in table[~bad].itertuples()
    )
    return ToyIndex(records, {"unknown_label": int(bad.sum())} if bad.any() else {}, (root / "shapes.csv",))  # fmt: skip


def prepared(cfg: DataConfig) -> DataConfig:
    return cfg


def content_settings(cfg: DataConfig) -> dict:
    return {}


def job(record: ToyRecord, cfg: DataConfig) -> np.ndarray:
    return record.points


def draw(points: np.ndarray, native_shape, transform, size: int) -> Drawn:
    u, v = transform.apply(points[:, 0], points[:, 1])
    yy, xx = np.mgrid[0:size, 0:size]
    gaze = np.exp(-((xx - u.mean()) ** 2 + (yy - v.mean()) ** 2) / 8.0)
    return Drawn((gaze / gaze.max()).astype(np.float32))


def labels(records) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.int64)


def split_file(cfg: DataConfig) -> None:
    return None


def dataset_split(index, keys):
    raise ValueError("the toy has no split of its own")


def twin_name(cfg: DataConfig) -> str:
    return f"toy-{cfg.synthetic_images}-seed{cfg.synthetic_seed}"


def write_twin(out: Path, cfg: DataConfig) -> None:
    rng = np.random.default_rng(cfg.synthetic_seed)
    rows = []
    for i in range(cfg.synthetic_images):
        label, (x, y) = i % 2, rng.integers(12, SIDE - 12, 2)
        yy, xx = np.mgrid[0:SIDE, 0:SIDE]
        shape = (np.hypot(xx - x, yy - y) < 6) if label == 0 else (np.maximum(abs(xx - x), abs(yy - y)) < 6)  # fmt: skip
        pixels = (40 + 180 * shape + rng.integers(0, 30, (SIDE, SIDE))).astype(np.uint8)
        _write_dicom(out / f"shape{i:03d}.dcm", pixels)
        rows.append(
            {"key": f"shape{i:03d}", "patient": f"pt{i:03d}", "label": label, "x": x, "y": y}
        )
    with open(out / "shapes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    ds = DicomDataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = *pixels.shape, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 8, 8, 7  # fmt: skip
    ds.PixelRepresentation, ds.PixelData = 0, pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def toy_registered():
    if TOY not in DATASETS:
        register_dataset(TOY, TASK, __name__, "test-only toy: discs vs squares")
    yield get_dataset(TOY)


def test_a_third_dataset_is_one_module(toy_registered, tmp_path):
    assert TOY in list_datasets() and {"egd-cxr", "reflacx"} <= set(list_datasets())
    cfg = DataConfig(dataset=TOY, data_dir=str(tmp_path), synthetic_images=40, image_size=32, split_fractions=(0.5, 0.25, 0.25))  # fmt: skip
    data = prepare_data(cfg, progress=False)
    assert data.task == TASK and data.dataset == TOY and len(data.labels) == 40
    assert (tmp_path / "cache").glob(f"{TOY}-*.npz")  # the cache is keyed and named per dataset
    assert next((tmp_path / "cache").glob("*.npz")).name.startswith(f"{TOY}-")
    res = fit(tiny_config(arm="set3-gbp", epochs=1, panels=2), data, tmp_path / "trial", placement=CPU1, log=lambda *_: None)  # fmt: skip
    assert res.status == "ok" and set(TASK.auc_keys) <= {k[len("test/") :] for k in res.test}
    pred = pd.read_csv(tmp_path / "trial" / "predictions" / "test.csv")
    assert list(pred.columns) == list(TASK.prediction_columns)  # prob_disc, prob_square
    assert set(pred["label_name"]) <= set(TASK.classes)


def test_an_unknown_dataset_is_a_config_error_listing_none_silently(tmp_path):
    with pytest.raises(ConfigError) as info:
        DataConfig(dataset="chexpert")
    assert info.value.field == "dataset"
    with pytest.raises(KeyError, match="egd-cxr, reflacx"):
        get_dataset("chexpert")


def test_the_builtin_tasks():
    egd, reflacx = get_dataset("egd-cxr").task, get_dataset("reflacx").task
    assert egd.exclusive and egd.classes == ("Normal", "CHF", "pneumonia")
    assert egd.auc_keys == ("auc_normal", "auc_chf", "auc_pneumonia", "auc_mean")  # the record's
    assert not reflacx.exclusive and reflacx.n == 15 and "Pleural abnormality" in reflacx.classes
    assert "auc_enlarged_cardiac_silhouette" in reflacx.auc_keys
    assert reflacx.label_columns[0] == "label_abnormal_mediastinal_contour"
    hot = reflacx.multi_hot(np.eye(15, dtype=np.int8)[:3])
    assert hot.shape == (3, 15) and egd.multi_hot(np.array([2, 0])).tolist() == [
        [0, 0, 1],
        [1, 0, 0],
    ]
    assert reflacx.stratum(np.array([[0] * 15, [1] * 15])).tolist() == [0, 3]


def test_reflacx_twin_prepares_multi_label_data_with_readers(tmp_path):
    cfg = DataConfig(dataset="reflacx", data_dir=str(tmp_path), synthetic_images=50, image_size=32)
    data = prepare_data(cfg, progress=False)
    assert data.labels.shape == (len(data.keys), 15) and set(np.unique(data.labels)) <= {0, 1}
    readers = data.readers
    multi = np.flatnonzero(readers.row >= 0)
    assert len(multi) >= 2 and readers.maps.shape[1:] == (5, 32, 32)
    for i in multi:  # each reader's map is max-normalised (a reading without gaze: NaN)
        maps, points, _ = readers.of(i)
        kept = maps[np.isfinite(maps).all(axis=(1, 2))]
        assert 2 <= len(kept) <= 5 and np.allclose(
            kept.reshape(len(kept), -1).max(1), 1.0, atol=1e-2
        )
        assert set(points[:, 0]) == set(range(len(kept))) and points[:, 1:].min() >= 0
    with_boxes = [i for i in range(len(data.keys)) if len(readers.of(i)[2])]
    assert with_boxes and all(
        data.labels[i].any() for i in with_boxes
    )  # ellipses of present findings
    # MIMIC's own split, on request: REFLACX's split column instead of a seeded one
    own = prepare_data(dataclasses.replace(cfg, dataset_split=True), progress=False)
    assert set(own.split.tolist()) <= {0, 1, 2} and not np.array_equal(own.split, data.split)
    import json

    summary = json.loads(json.dumps(data.summary_dict()))
    assert (
        summary["dataset"] == "reflacx"
        and "Support devices" in summary["splits"]["train"]["classes"]
    )


def test_reflacx_human_ceiling_and_a_model_scored_on_its_terms(tmp_path):
    from trainables.reader_eval import ceiling_frame, model_frame

    data = prepare_data(DataConfig(dataset="reflacx", data_dir=str(tmp_path), synthetic_images=80, image_size=32, split_fractions=(0.5, 0.1, 0.4)), progress=False)  # fmt: skip
    ceiling = ceiling_frame(data)
    assert len(ceiling) >= 1 and ceiling["readers"].between(2, 5).all()  # a discarded reading: 4
    assert ceiling["cc"].between(-1, 1).all() and ceiling["sauc"].between(0, 1).all()
    rows = data.indices("test")
    mean_of_readers = data.gaze[rows].astype(np.float32)
    flat = np.ones_like(mean_of_readers)
    frame = model_frame(
        data, rows, {("generator", "gbp"): mean_of_readers, ("decoder", "gbp"): flat}
    )
    by = frame.set_index(["map", "key"])
    multi = ceiling["key"].tolist()
    # the readers' own mean map agrees with them better than a flat map does
    assert by.loc["generator"].loc[multi, "cc"].mean() > 0.3
    assert by.loc["decoder"].loc[multi, "cc"].isna().all()  # a constant map has no correlation
    assert set(frame.columns) >= {"pointing", "energy", "area", "sauc"}


def test_reflacx_shortcut_twin_changes_only_planted_pixels_and_follows_its_split(tmp_path):
    """The evidence plans on --dataset reflacx: a shortcut twin is the clean twin plus a planted
    class signal, on the split it was written with (the test images are where it breaks)."""
    base = DataConfig(dataset="reflacx", data_dir=str(tmp_path), synthetic_images=40, image_size=32, split_fractions=(0.5, 0.1, 0.4))  # fmt: skip
    clean = prepare_data(base, progress=False)
    cut = dataclasses.replace(base, synthetic_shortcut="marker", synthetic_shortcut_fraction=1.0, synthetic_shortcut_test="absent")  # fmt: skip
    planted = prepare_data(cut, progress=False)
    assert planted.keys == clean.keys
    np.testing.assert_array_equal(planted.split, clean.split)  # split alike: paired evidence
    np.testing.assert_array_equal(planted.labels, clean.labels)
    np.testing.assert_array_equal(planted.gaze, clean.gaze)  # the readers never look at it
    np.testing.assert_array_equal(planted.readers.maps, clean.readers.maps)
    from trainables.data.split import read_split_file
    from trainables.data.synthetic import read_manifest

    root = tmp_path / "reflacx-synthetic-40-seed0-marker-p1-absent-split0-50-10-40"
    manifest = read_manifest(root)
    assert manifest["shortcut"]["kind"] == "marker" and manifest["shortcut_images"]["test"] == 0
    np.testing.assert_array_equal(planted.split, read_split_file(root / manifest["split_file"], planted.keys))  # fmt: skip
    changed = (planted.images != clean.images).reshape(len(clean.keys), -1).any(1)
    test = planted.split == 2
    assert changed[~test].all() and not changed[test].any()  # fraction 1: every train/val image
    # the marker is a small tag: elsewhere at most a grey level of rounding changes
    step = np.abs(planted.images.astype(int) - clean.images.astype(int))
    assert (step > 2).reshape(len(clean.keys), -1).mean(1).max() < 0.05


def test_reflacx_twin_takes_the_reader_knobs_through_prepare_data(tmp_path):
    """A scanning reader's gaze reaches the prepared maps: more of their mass in the film's
    corners than the default readers' (the twin's own files: test_reflacx_reader_realism.py)."""

    def corner_mass(share: float) -> float:
        cfg = DataConfig(dataset="reflacx", data_dir=str(tmp_path), synthetic_images=20, image_size=32, synthetic_scanning_share=share)  # fmt: skip
        gaze = prepare_data(cfg, progress=False).gaze.astype(float)
        corners = np.zeros(gaze.shape[-2:], bool)
        for rows in (slice(0, 8), slice(-8, None)):
            for cols in (slice(0, 8), slice(-8, None)):
                corners[rows, cols] = True
        return float((gaze[..., corners].sum((-1)) / gaze.sum((-2, -1))).mean())

    assert corner_mass(0.5) > 2 * corner_mass(0.0)


def test_part_of_the_training_split_keeps_each_images_readers(tmp_path):
    from trainables.data.subset import keep_train_images

    data = prepare_data(DataConfig(dataset="reflacx", data_dir=str(tmp_path), synthetic_images=60, image_size=32), progress=False)  # fmt: skip
    small = keep_train_images(data, 10, seed=3)
    kept = [data.keys.index(k) for k in small.keys]
    for new, old in enumerate(kept):
        a, b = small.readers.of(new), data.readers.of(old)
        assert (a[0] is None) == (b[0] is None)
        if a[0] is not None:
            np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(small.gaze, data.gaze[kept])
    assert small.exclusions["train_images_left_out"] == len(data.keys) - len(small.keys)
