"""Part of the training split (``DataConfig.train_images``): whole patients, seeded, nested, and
validation and test untouched."""

from __future__ import annotations

import dataclasses
import itertools
import shutil

import numpy as np
import pytest

from trainables.config import SPLITS, ConfigError, DataConfig
from trainables.data.prepare import prepare_data
from trainables.data.subset import LEFT_OUT, train_subset_rows

TRAIN, VAL, TEST = (SPLITS.index(s) for s in SPLITS)


def _table(n_patients: int = 30, seed: int = 0):
    """Patients with 1-3 images each, one class per patient, a third of them in val/test."""
    rng = np.random.default_rng(seed)
    patients, labels, split = [], [], []
    for p in range(n_patients):
        k = int(rng.integers(1, 4))
        patients += [f"p{p}"] * k
        labels += [p % 3] * k
        split += [TRAIN if (p // 3) % 3 else (VAL if p % 2 else TEST)] * k
    return np.array(labels), patients, np.array(split, dtype=np.int8)


def _train_patients(keep, patients, split):
    return {p for p, k, s in zip(patients, keep, split, strict=True) if k and s == TRAIN}


def test_subsets_nest_keep_whole_patients_and_every_val_test_row():
    labels, patients, split = _table()
    sizes = (3, 6, 12, 20)
    kept = [train_subset_rows(labels, patients, split, n, seed=1) for n in sizes]
    for n, keep in zip(sizes, kept, strict=True):
        assert keep[split != TRAIN].all()  # validation and test: every row
        train_rows = int((keep & (split == TRAIN)).sum())
        assert n <= train_rows < n + 3  # the last patient may bring up to 2 more images
        taken = _train_patients(keep, patients, split)
        # whole patients: a taken patient's every training image is kept
        assert all(keep[i] for i, p in enumerate(patients) if p in taken)
        if len(taken) >= 3:  # the classes take turns: any three patients hold all three
            assert set(labels[keep & (split == TRAIN)]) == {0, 1, 2}
    for small, large in itertools.pairwise(kept):
        assert _train_patients(small, patients, split) <= _train_patients(large, patients, split)


def test_subsets_are_seeded_and_alternate_the_classes():
    labels, patients, split = _table(60)
    a = train_subset_rows(labels, patients, split, 12, seed=0)
    again = train_subset_rows(labels, patients, split, 12, seed=0)
    b = train_subset_rows(labels, patients, split, 12, seed=1)
    np.testing.assert_array_equal(a, again)
    assert _train_patients(a, patients, split) != _train_patients(b, patients, split)
    # With one image per patient the classes take turns exactly.
    ones = [f"q{i}" for i in range(len(labels))]
    keep = train_subset_rows(labels, ones, split, 6, seed=3)
    counts = np.bincount(labels[keep & (split == TRAIN)], minlength=3)
    assert int((keep & (split == TRAIN)).sum()) == 6 and counts.max() - counts.min() <= 1


def test_a_multi_label_task_takes_turns_by_label_vector():
    labels, patients, split = _table()
    vectors = np.eye(3, dtype=np.int64)[labels]  # one-hot rows: the same classes, as vectors
    small, large = (train_subset_rows(vectors, patients, split, n, seed=4) for n in (6, 12))
    assert _train_patients(small, patients, split) <= _train_patients(large, patients, split)
    assert set(labels[large & (split == TRAIN)]) == {0, 1, 2}


def test_more_images_than_the_training_split_is_refused():
    labels, patients, split = _table()
    with pytest.raises(ValueError, match="training split holds"):
        train_subset_rows(labels, patients, split, int((split == TRAIN).sum()) + 1, seed=0)
    with pytest.raises(ConfigError, match="train_images"):
        DataConfig(train_images=1)


def test_prepare_data_keeps_validation_and_test_bit_identical(synthetic_cfg, synthetic_root, tmp_path):  # fmt: skip
    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_root, data_dir / synthetic_root.name)
    cfg = dataclasses.replace(synthetic_cfg, data_dir=str(data_dir), image_size=32)
    full = prepare_data(cfg, progress=False)
    parts = {
        n: prepare_data(
            dataclasses.replace(cfg, train_images=n, train_images_seed=2), progress=False
        )
        for n in (3, 6, 12)
    }
    for n, part in parts.items():
        for s in ("val", "test"):
            a, b = full.indices(s), part.indices(s)
            assert [full.keys[i] for i in a] == [part.keys[i] for i in b]
            np.testing.assert_array_equal(full.images[a], part.images[b])
            np.testing.assert_array_equal(full.gaze[a], part.gaze[b])
            np.testing.assert_array_equal(full.labels[a], part.labels[b])
        assert len(part.indices("train")) == n  # the twin: one image per patient
        assert part.exclusions[LEFT_OUT] == len(full.indices("train")) - n
        assert part.content_digest() != full.content_digest()
    train_keys = {n: {p.keys[i] for i in p.indices("train")} for n, p in parts.items()}
    assert train_keys[3] < train_keys[6] < train_keys[12] < set(full.keys)
