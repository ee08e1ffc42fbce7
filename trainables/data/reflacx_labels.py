"""REFLACX's label columns, the one merged finding list, and the image-label rule (pure functions).

REFLACX (Bigolin Lanfredi et al., Sci. Data 2022) changed its label list between phase 1 and
phases 2-3 (DESIGN.md section 3b). Every reading is mapped onto ONE list of findings,
:data:`FINDINGS` (the phase 2-3 names, the list 2,557 of the 2,616 images were read with), by the
merge rules of :data:`PHASE_1_TO_FINDING`, written here once:

- Emphysema -> High lung volume / emphysema; Mass, Nodule -> Lung nodule or mass; Pleural
  effusion, Pleural thickening -> Pleural abnormality; Wide mediastinum -> Abnormal mediastinal
  contour; Fracture -> Acute fracture (the readers that merge the phases, DESIGN 3b). Where two
  phase-1 labels merge, the finding's certainty is their maximum (the metadata's own rule: a
  label's certainty is the maximum over the ellipses drawn for it).
- Airway wall thickening and Fibrosis (phase 1 only, 59 images) have no phase 2-3 counterpart and
  are left out: a finding unknowable for 98% of the images is no target.
- Enlarged hilum, Hiatal hernia and Interstitial lung disease were not offered in phase 1: a
  phase-1 image has 0 for them and ``labelled`` False (:func:`labelled_mask`).
- ``Support devices`` is a boolean column (presence only): True counts as certainty 5 ("consistent
  with") so one threshold serves every finding.
- ``Quality issue`` (phase 1, boolean) is about the image, not the patient, and ``Other`` is free
  text ("|"-separated): neither is a finding. Readings keep them as attributes.

A finding is present in a reading at certainty >= 3 ("possibly", the authors' convention;
:data:`PRESENT_CERTAINTY`). An image read by several radiologists has the label of the strict
majority of its readings (:func:`image_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Phase 1 certainty-graded (0-5) labels, and its boolean / free-text columns.
PHASE_1_GRADED: tuple[str, ...] = (
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
    "Wide mediastinum",
)
PHASE_23_GRADED: tuple[str, ...] = (
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
)
SUPPORT_DEVICES, QUALITY_ISSUE, OTHER = "Support devices", "Quality issue", "Other"
PHASE_1_BOOLEAN: tuple[str, ...] = (QUALITY_ISSUE, SUPPORT_DEVICES)
PHASE_23_BOOLEAN: tuple[str, ...] = (SUPPORT_DEVICES,)

# Every label column of a phase (the metadata has them all; DESIGN 3b's lists).
PHASE_LABELS: dict[int, tuple[str, ...]] = {
    1: tuple(sorted((*PHASE_1_GRADED, *PHASE_1_BOOLEAN, OTHER))),
    2: tuple(sorted((*PHASE_23_GRADED, *PHASE_23_BOOLEAN, OTHER))),
    3: tuple(sorted((*PHASE_23_GRADED, *PHASE_23_BOOLEAN, OTHER))),
}
PHASES: tuple[int, ...] = (1, 2, 3)

# The merged findings, in this order in every label vector.
FINDINGS: tuple[str, ...] = (*PHASE_23_GRADED, SUPPORT_DEVICES)
PHASE_1_TO_FINDING: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Consolidation": "Consolidation",
    "Emphysema": "High lung volume / emphysema",
    "Enlarged cardiac silhouette": "Enlarged cardiac silhouette",
    "Fracture": "Acute fracture",
    "Groundglass opacity": "Groundglass opacity",
    "Mass": "Lung nodule or mass",
    "Nodule": "Lung nodule or mass",
    "Pleural effusion": "Pleural abnormality",
    "Pleural thickening": "Pleural abnormality",
    "Pneumothorax": "Pneumothorax",
    "Pulmonary edema": "Pulmonary edema",
    "Wide mediastinum": "Abnormal mediastinal contour",
    SUPPORT_DEVICES: SUPPORT_DEVICES,
}  # Airway wall thickening, Fibrosis: no counterpart (left out); Quality issue, Other: not findings
PHASE_23_TO_FINDING: dict[str, str] = {f: f for f in FINDINGS}

MAX_CERTAINTY = 5  # 0 absent ... 3 possibly, 4 probably, 5 consistent with
PRESENT_CERTAINTY = 3  # the authors count a finding (and an ellipse) as present at >= 3


def _phase_1(phase: int) -> bool:
    if phase not in PHASES:
        raise ValueError(f"unknown REFLACX phase {phase}; valid: {PHASES}")
    return phase == 1


def to_finding(phase: int) -> dict[str, str]:
    """Label column -> merged finding, for the columns of ``phase`` that map onto one."""
    return PHASE_1_TO_FINDING if _phase_1(phase) else PHASE_23_TO_FINDING


def graded_columns(phase: int) -> tuple[str, ...]:
    """The certainty-graded (0-5) label columns of ``phase``."""
    return PHASE_1_GRADED if _phase_1(phase) else PHASE_23_GRADED


def boolean_columns(phase: int) -> tuple[str, ...]:
    """The presence-only (True/False) label columns of ``phase``."""
    return PHASE_1_BOOLEAN if _phase_1(phase) else PHASE_23_BOOLEAN


def labelled_mask(phase: int) -> np.ndarray:
    """(F,) bool: the findings that the label list of ``phase`` could express."""
    offered = set(to_finding(phase).values())
    return np.array([f in offered for f in FINDINGS])


def merge_certainties(phase: int, values: Mapping[str, int]) -> np.ndarray:
    """One reading's certainties over :data:`FINDINGS` from its label columns.

    Args:
        phase: the reading's phase (1, 2 or 3).
        values: label column -> certainty 0-5 (booleans as 0 / 5); columns that map onto no
            finding, and findings without a column, are ignored / 0.

    Returns:
        (F,) int8; merged labels take the maximum of their sources.
    """
    out = np.zeros(len(FINDINGS), dtype=np.int8)
    for column, finding in to_finding(phase).items():
        if column in values:
            j = FINDINGS.index(finding)
            out[j] = max(out[j], int(values[column]))
    return out


def merge_flags(phase: int, flags: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Ellipse label flags (column -> (n,) bool) -> (n, F) bool over :data:`FINDINGS` (OR)."""
    out = np.zeros((n, len(FINDINGS)), dtype=bool)
    for column, finding in to_finding(phase).items():
        if column in flags:
            out[:, FINDINGS.index(finding)] |= np.asarray(flags[column], dtype=bool)
    return out


def present(certainty: np.ndarray, threshold: int = PRESENT_CERTAINTY) -> np.ndarray:
    """0/1 int8 labels: certainty >= ``threshold`` (1..5)."""
    if not 1 <= threshold <= MAX_CERTAINTY:
        raise ValueError(f"certainty threshold must be in 1..{MAX_CERTAINTY}, got {threshold}")
    return (np.asarray(certainty) >= threshold).astype(np.int8)


def image_labels(reader_labels: np.ndarray) -> np.ndarray:
    """An image's labels from its readings' 0/1 labels: the strict majority of the readings.

    Five readers: present when 3 or more say so; one reader: that reader's label; an even split
    (e.g. 2 of 4 readings after one was excluded) counts as absent.

    Args:
        reader_labels: (R, F) 0/1, R >= 1.

    Returns:
        (F,) int8 0/1.
    """
    votes = np.asarray(reader_labels)
    if votes.ndim != 2 or votes.shape[0] < 1:
        raise ValueError(f"reader_labels must be (readers >= 1, findings), got {votes.shape}")
    return (2 * votes.astype(np.int64).sum(axis=0) > votes.shape[0]).astype(np.int8)
