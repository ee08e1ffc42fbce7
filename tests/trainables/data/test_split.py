"""Patient-level split: disjoint patients, 80/10/10 or given shares, stratified, seeded; and the
split file."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.config import SPLITS
from trainables.data.split import patient_split, read_split_file


def _cohort(n_patients: int = 250, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Patients with 1-3 images each; a patient's images mostly share a class."""
    rng = np.random.default_rng(seed)
    labels, patients = [], []
    for p in range(n_patients):
        base = int(rng.integers(0, 3))
        for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
            labels.append(base if rng.random() < 0.8 else int(rng.integers(0, 3)))
            patients.append(f"p{p:05d}")
    return np.array(labels), patients


def test_no_patient_in_two_splits_and_80_10_10():
    labels, patients = _cohort()
    split = patient_split(labels, patients, seed=0)
    assert split.dtype == np.int8 and set(split) == {0, 1, 2}
    owner: dict[str, int] = {}
    for p, s in zip(patients, split, strict=True):
        assert owner.setdefault(p, int(s)) == s, f"patient {p} in two splits"
    fractions = np.bincount(split, minlength=3) / len(split)
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.03)


@pytest.mark.parametrize("fractions", [(0.5, 0.1, 0.4), (0.6, 0.2, 0.2)])
def test_other_fractions_are_followed_and_still_stratified(fractions):
    labels, patients = _cohort()
    split = patient_split(labels, patients, seed=0, fractions=fractions)
    np.testing.assert_allclose(np.bincount(split, minlength=3) / len(split), fractions, atol=0.03)
    overall = np.bincount(labels, minlength=3) / len(labels)
    for s in range(len(SPLITS)):
        mix = np.bincount(labels[split == s], minlength=3) / (split == s).sum()
        np.testing.assert_allclose(mix, overall, atol=0.05)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.2, 0.0), (0.5, 0.3, 0.3)])
def test_fractions_that_are_not_three_positive_shares_are_refused(fractions):
    labels, patients = _cohort(30)
    with pytest.raises(ValueError, match="fractions"):
        patient_split(labels, patients, fractions=fractions)
    from trainables.config import ConfigError, DataConfig

    with pytest.raises(ConfigError, match="split_fractions"):
        DataConfig(split_fractions=fractions)


def test_stratified_class_mix_in_every_split():
    labels, patients = _cohort()
    split = patient_split(labels, patients, seed=1)
    overall = np.bincount(labels, minlength=3) / len(labels)
    for s in range(len(SPLITS)):
        mix = np.bincount(labels[split == s], minlength=3) / (split == s).sum()
        np.testing.assert_allclose(mix, overall, atol=0.04)


def test_small_sets_still_get_every_split():
    # 24 images, 8 per class (smaller than sklearn's StratifiedGroupKFold accepts).
    labels, patients = np.arange(24) % 3, [f"p{i // 2 if i < 4 else i}" for i in range(24)]
    split = patient_split(labels, patients, seed=0)
    sizes = np.bincount(split, minlength=3)
    assert sizes[1] in (2, 3) and sizes[2] in (2, 3) and sizes.sum() == 24
    assert (split[0] == split[1]) and (split[2] == split[3])  # the two-image patients


def test_deterministic_and_seed_dependent():
    labels, patients = _cohort()
    a = patient_split(labels, patients, seed=3)
    np.testing.assert_array_equal(a, patient_split(labels, patients, seed=3))
    assert (a != patient_split(labels, patients, seed=4)).any()


def test_too_few_patients_or_mismatched_lengths():
    with pytest.raises(ValueError, match="at least 3 patients"):
        patient_split([0, 1, 2], ["p0", "p0", "p1"])
    with pytest.raises(ValueError, match="labels"):
        patient_split([0, 1], ["a"])


def _write(path, rows, header="dicom_id,split"):
    path.write_text("\n".join([header] + [f"{k},{s}" for k, s in rows]) + "\n")
    return path


def test_split_file_assigns_each_key(tmp_path):
    keys = ["a", "b", "c", "d"]
    path = _write(tmp_path / "s.csv", [("d", "test"), ("a", "train"), ("c", "val"), ("b", "train")])
    np.testing.assert_array_equal(read_split_file(path, keys), [0, 0, 1, 2])


@pytest.mark.parametrize(
    "rows,header,match",
    [
        ([("a", "train"), ("b", "holdout")], "dicom_id,split", "unknown split values"),
        ([("a", "train"), ("b", "val"), ("zz", "test")], "dicom_id,split", "not among.*zz"),
        ([("a", "train")], "dicom_id,split", "1 kept images have no split, e.g. \\['b'\\]"),
        ([("a", "train"), ("a", "val")], "dicom_id,split", "duplicate"),
        ([("a", "train"), ("b", "val")], "dicom_id,fold", "missing required columns \\['split'\\]"),
    ],
)
def test_split_file_errors_name_the_problem(tmp_path, rows, header, match):
    path = _write(tmp_path / "s.csv", rows, header)
    with pytest.raises(ValueError, match=match):
        read_split_file(path, ["a", "b"])


def test_a_split_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("dicom_id,split\na\u00e9,train\nb,val\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not UTF-8"):
        read_split_file(path, ["a", "b"])
