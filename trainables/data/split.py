"""Patient-level train/val/test split (80/10/10 unless told), stratified by class, or read from a
file.

No patient appears in two splits (the paper split "by unique patient ID"). Stratification works on
images grouped by patient, so a patient with several images moves them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.config import SPLIT_FRACTIONS, SPLITS, split_fractions_ok
from trainables.data.tables import read_csv_checked

_EXAMPLES = 5


@dataclass(frozen=True)
class SplitSpec:
    """A seeded patient split (:func:`patient_split`): its seed and its train, val, test shares."""

    seed: int = 0
    fractions: tuple[float, ...] = SPLIT_FRACTIONS


def patient_split(
    labels: Sequence[int] | np.ndarray,
    patients: Sequence[str],
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
) -> np.ndarray:
    """Seeded, deterministic split by patient (``fractions`` train/val/test), stratified by class.

    Patients are visited in a seeded random order (patients with more images first) and each goes
    to the split whose class targets its images fill best, so every split's class mix follows the
    whole set as far as the patients allow. Written out rather than sklearn's
    ``StratifiedGroupKFold``, which refuses sets where every class has fewer than 10 images (the
    smoke-test twins) and only cuts 1/k fractions.

    Args:
        labels: class id per image.
        patients: patient id per image.
        seed: changes which patients land where.
        fractions: train, val, test shares (positive, summing to 1).

    Returns:
        (N,) int8 split ids, index into ``config.SPLITS`` (0 train, 1 val, 2 test).

    Raises:
        ValueError: lengths differ or there are fewer than 3 patients.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(patients):
        raise ValueError(f"patient_split: {len(labels)} labels but {len(patients)} patients")
    ids, group = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    if len(ids) < len(SPLITS):
        raise ValueError(f"patient_split needs at least {len(SPLITS)} patients, got {len(ids)}")
    per_patient = np.zeros((len(ids), int(labels.max()) + 1))
    np.add.at(per_patient, (group, labels), 1.0)
    if not split_fractions_ok(fractions):
        raise ValueError(
            f"patient_split: fractions must be 3 positive shares summing to 1, got {fractions}"
        )
    target = np.outer(fractions, per_patient.sum(0))  # (split, class) image counts wanted
    have = np.zeros_like(target)
    order = np.random.default_rng(seed).permutation(len(ids))
    order = order[np.argsort(-per_patient[order].sum(1), kind="stable")]
    assigned = np.empty(len(ids), dtype=np.int8)
    for g in order:
        # Remaining need of each split for this patient's classes, relative to the split's size.
        need = ((target - have) * per_patient[g]).sum(1) / target.sum(1)
        s = int(np.argmax(need))
        assigned[g] = s
        have[s] += per_patient[g]
    return assigned[group]


def read_split_file(path: str | Path, keys: Sequence[str]) -> np.ndarray:
    """Split ids for ``keys`` from a CSV with columns ``dicom_id,split`` (train/val/test).

    Raises:
        ValueError: missing columns, unknown split values, duplicate or unknown ids, or keys the
            file does not assign (the message names the file and a few ids).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found")
    df = read_csv_checked(path, ("dicom_id", "split"), dtype=str, keep_default_na=False)
    ids = df["dicom_id"].str.strip()
    values = df["split"].str.strip()
    bad = sorted(set(values) - set(SPLITS))
    if bad:
        raise ValueError(f"{path}: unknown split values {bad[:_EXAMPLES]}; valid: {SPLITS}")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(f"{path}: {len(dup)} duplicate ids, e.g. {dup.tolist()[:_EXAMPLES]}")
    key_set = set(keys)
    unknown = [k for k in ids if k not in key_set]
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} ids not among the {len(keys)} kept images, "
            f"e.g. {unknown[:_EXAMPLES]}"
        )
    lookup = dict(zip(ids, values, strict=True))
    absent = [k for k in keys if k not in lookup]
    if absent:
        raise ValueError(
            f"{path}: {len(absent)} kept images have no split, e.g. {absent[:_EXAMPLES]}"
        )
    return np.array([SPLITS.index(lookup[k]) for k in keys], dtype=np.int8)
