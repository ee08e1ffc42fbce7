"""REFLACX label merging and the image-label rule, against DESIGN.md section 3b's lists."""

from __future__ import annotations

import numpy as np
import pytest

from trainables.data.reflacx_labels import (
    FINDINGS,
    PHASE_1_TO_FINDING,
    PHASE_LABELS,
    image_labels,
    labelled_mask,
    merge_certainties,
    merge_flags,
    present,
)

# DESIGN 3b's label lists, spelled out here as an oracle independent of the module.
PHASE_1 = [
    "Airway wall thickening",
    "Atelectasis",
    "Consolidation",
    "Emphysema",
    "Enlarged cardiac silhouette",
    "Fibrosis",
    "Fracture",
    "Groundglass opacity",
    "Mass",
    "Nodule",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary edema",
    "Quality issue",
    "Support devices",
    "Wide mediastinum",
    "Other",
]
PHASE_23 = [
    "Abnormal mediastinal contour",
    "Acute fracture",
    "Atelectasis",
    "Consolidation",
    "Enlarged cardiac silhouette",
    "Enlarged hilum",
    "Groundglass opacity",
    "Hiatal hernia",
    "High lung volume / emphysema",
    "Interstitial lung disease",
    "Lung nodule or mass",
    "Pleural abnormality",
    "Pneumothorax",
    "Pulmonary edema",
    "Support devices",
    "Other",
]
MERGES = {
    "Emphysema": "High lung volume / emphysema",
    "Mass": "Lung nodule or mass",
    "Nodule": "Lung nodule or mass",
    "Pleural effusion": "Pleural abnormality",
    "Pleural thickening": "Pleural abnormality",
    "Wide mediastinum": "Abnormal mediastinal contour",
    "Fracture": "Acute fracture",
}


def _f(name: str) -> int:
    return FINDINGS.index(name)


def test_label_columns_are_the_published_lists():
    assert sorted(PHASE_LABELS[1]) == sorted(PHASE_1)
    assert sorted(PHASE_LABELS[2]) == sorted(PHASE_LABELS[3]) == sorted(PHASE_23)
    # One finding list: the phase 2-3 labels, without the non-findings.
    assert set(FINDINGS) == set(PHASE_23) - {"Other"}
    assert "Quality issue" not in FINDINGS and "Other" not in FINDINGS


def test_phase_1_merges_as_design_says():
    for source, target in MERGES.items():
        assert PHASE_1_TO_FINDING[source] == target
    for label in set(PHASE_1) & set(PHASE_23) - {"Other"}:  # shared names map to themselves
        assert PHASE_1_TO_FINDING[label] == label
    left_out = set(PHASE_1) - set(PHASE_1_TO_FINDING)
    assert left_out == {"Airway wall thickening", "Fibrosis", "Quality issue", "Other"}


def test_merged_certainty_is_the_maximum_of_its_sources():
    values = {"Mass": 2, "Nodule": 4, "Pleural thickening": 3, "Emphysema": 1, "Fibrosis": 5}
    got = merge_certainties(1, values | {"Support devices": 5})
    assert got[_f("Lung nodule or mass")] == 4
    assert got[_f("Pleural abnormality")] == 3
    assert got[_f("High lung volume / emphysema")] == 1
    assert got[_f("Support devices")] == 5
    assert got.sum() == 4 + 3 + 1 + 5  # Fibrosis has no finding to go to
    same = merge_certainties(3, {"Lung nodule or mass": 4, "Mass": 5})  # phase 3: no Mass column
    assert same[_f("Lung nodule or mass")] == 4 and same.sum() == 4


def test_ellipse_flags_merge_with_or():
    flags = {"Mass": np.array([True, False]), "Nodule": np.array([False, False])}
    flags |= {"Pleural effusion": np.array([False, True]), "Other": np.array([True, True])}
    got = merge_flags(1, flags, 2)
    assert got.shape == (2, len(FINDINGS))
    assert got[:, _f("Lung nodule or mass")].tolist() == [True, False]
    assert got[:, _f("Pleural abnormality")].tolist() == [False, True]
    assert got.sum() == 2  # "Other" is no finding


def test_present_threshold_and_labelled_mask():
    np.testing.assert_array_equal(present(np.array([0, 2, 3, 5])), [0, 0, 1, 1])
    np.testing.assert_array_equal(present(np.array([0, 2, 3, 5]), threshold=4), [0, 0, 0, 1])
    with pytest.raises(ValueError, match="threshold"):
        present(np.zeros(1), threshold=0)
    phase_1 = labelled_mask(1)
    unknown = {f for f, known in zip(FINDINGS, phase_1, strict=True) if not known}
    assert unknown == {"Enlarged hilum", "Hiatal hernia", "Interstitial lung disease"}
    assert labelled_mask(3).all()


def test_image_label_is_the_strict_majority():
    five = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(image_labels(five), [1, 0, 0])  # 3/5 yes, 2/5 no
    np.testing.assert_array_equal(image_labels(np.array([[0, 1, 1]])), [0, 1, 1])  # one reader
    np.testing.assert_array_equal(image_labels(five[:4]), [1, 0, 0])  # 2 of 4 is a tie: absent
    assert image_labels(five).dtype == np.int8
    with pytest.raises(ValueError):
        image_labels(np.zeros((0, 3)))
