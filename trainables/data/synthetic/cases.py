"""The twin's cases: ids, labels, sizes, anatomy placement and findings, and the master sheet rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainables.data.datasets import task_of
from trainables.data.egd import MASTER_COLUMNS

CLASSES = task_of("egd-cxr").classes  # the EGD-CXR entry's classes

# One entry per encoding variant, cycled then shuffled so every variant appears once N >= 20:
# (transfer syntax, photometric, BitsStored, rescale slope/intercept, window).
VARIANTS: tuple[tuple[str, str, int, bool, bool], ...] = (
    ("raw", "MONOCHROME2", 12, False, False),
    ("raw", "MONOCHROME2", 16, False, False),
    ("raw", "MONOCHROME1", 12, False, False),
    ("raw", "MONOCHROME2", 12, True, False),
    ("raw", "MONOCHROME2", 12, False, True),
    ("raw", "MONOCHROME2", 16, True, True),
    ("raw", "MONOCHROME1", 16, False, True),
    ("raw", "MONOCHROME2", 12, False, False),
    ("raw", "MONOCHROME2", 16, False, False),
    ("raw", "MONOCHROME2", 12, False, True),
    ("raw", "MONOCHROME1", 12, True, False),
    ("raw", "MONOCHROME2", 12, False, False),
    ("raw", "MONOCHROME2", 16, False, True),
    ("rle", "MONOCHROME2", 12, False, False),
    ("rle", "MONOCHROME1", 16, False, True),
    ("rle", "MONOCHROME2", 16, True, False),
    ("j2k", "MONOCHROME2", 12, False, False),
    ("jpeg8", "MONOCHROME2", 8, False, False),
    ("raw", "MONOCHROME2", 12, True, True),
    ("raw", "MONOCHROME1", 12, False, False),
)


@dataclass(frozen=True)
class Case:
    """Everything drawn for one image: ids, size, anatomy placement and findings (in chest units:
    1 unit = ``unit`` pixels, x to the image right, y down, origin at the chest centre)."""

    key: str
    patient: str
    study: str
    label: int
    height: int
    width: int
    cx: float  # chest centre column (px)
    cy: float  # chest centre row (px)
    unit: float  # pixels per chest unit
    heart_scale: float  # cardiothoracic enlargement (CHF > 1.1)
    haze: float  # perihilar haze strength (CHF)
    effusion: float  # basal effusion strength (CHF)
    opacity: tuple[float, float, float, float] | None  # pneumonia (x, y, radius, strength)
    variant: tuple[str, str, int, bool, bool]

    def to_px(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple:
        return self.cx + np.asarray(x) * self.unit, self.cy + np.asarray(y) * self.unit


# Free text drawn per class: (diagnosis, ICD code) and exam indications (some with newlines,
# commas and quotes, as in the real sheet).
_DX = {
    0: [
        ("Chest pain, unspecified", "R07.9"),
        ("Syncope and collapse", "R55"),
        ("Shortness of breath", "R06.02"),
        ("HYPERTENSION NOS", "401.9"),
    ],
    1: [
        ("Heart failure, unspecified", "I50.9"),
        ("CONGESTIVE HEART FAILURE, UNSPEC", "428"),
        ("Acute on chronic systolic (congestive) heart failure", "I50.23"),
    ],
    2: [
        ("Pneumonia, unspecified organism", "J18.9"),
        ("PNEUMONIA,ORGANISM UNSPECIFIED", "486"),
        ("Lobar pneumonia, unspecified organism", "J18.1"),
    ],
}
_DX_OTHER = [
    ("Hypertension", "I10"),
    ("Type 2 diabetes mellitus without complications", "E11.9"),
    ("Hyperlipidemia, unspecified", "E78.5"),
    ("Atrial fibrillation", "I48.91"),
    ("Acute kidney failure, unspecified", "N17.9"),
    ("Chronic obstructive pulmonary disease, unspecified", "J44.9"),
]
_INDICATIONS = {
    0: [
        "___M with chest pain, r/o acute process",
        "History: ___F with syncope\nEval for acute cardiopulmonary process",
        'Dyspnea.  Evaluate for "infiltrate"',
    ],
    1: [
        "___F with CHF and  shortness of breath// ?Pulmonary edema",
        "___M with leg swelling,\ndyspnea on exertion. Eval for CHF",
        "History: ___F with hypertension, tachycardia",
    ],
    2: [
        "___M with fever, cough\nEval for pneumonia",
        "Productive cough, fever.\nr/o PNA",
        'History: ___F with hypoxia\n\nEvaluate for "consolidation", effusion',
    ],
}


def master_rows(
    cases: list[Case],
    paths: list[str],
    pads: list[tuple[int, int, int, int]],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """master_sheet.csv rows (all 59 columns, in order) for the cases."""
    rows = []
    for case, path, pad in zip(cases, paths, pads, strict=True):
        label = case.label
        dx = [_DX[label][rng.integers(len(_DX[label]))]]
        dx += [_DX_OTHER[j] for j in rng.permutation(len(_DX_OTHER))[: rng.integers(0, 4)]]
        row: dict[str, object] = {c: "" for c in MASTER_COLUMNS}
        decade = int(rng.integers(2, 9))
        row.update(
            dicom_id=case.key,
            path=path,
            study_id=case.study,
            patient_id=case.patient,
            stay_id=f"3{rng.integers(0, 10**7):07d}",
            gender=rng.choice(["F", "M"]),
            anchor_age=f"{decade}0 - {decade + 1}0",
            image_top_pad=pad[0],
            image_bottom_pad=pad[1],
            image_left_pad=pad[2],
            image_right_pad=pad[3],
            normal_reports=int(label == 0 and rng.random() < 0.9),
            cxr_exam_indication=_INDICATIONS[label][rng.integers(3)],
        )
        for i, (text, code) in enumerate(dx, start=1):
            row[f"dx{i}"], row[f"dx{i}_icd"] = text, code
        for k, name in enumerate(CLASSES):
            row[name] = int(label == k)
        findings = {
            "normal_anatomically": label == 0,
            "enlarged_cardiac_silhouette": case.heart_scale > 1.15,
            "pulmonary_edema__hazy_opacity": case.haze > 0.3,
            "vascular_redistribution": case.haze > 0.5,
            "pleural_effusion_or_thickening": case.effusion > 0.2,
            "consolidation": case.opacity is not None and case.opacity[3] > 0.08,
            "linear__patchy_atelectasis": rng.random() < 0.1,
        }
        for name in MASTER_COLUMNS[
            MASTER_COLUMNS.index("consolidation") : MASTER_COLUMNS.index("atelectasis__chx")
        ]:
            row[name] = int(findings.get(name, False))
        for name in ("cardiomegaly__chx", "edema__chx", "pneumonia__chx", "no_finding__chx"):
            row[name] = rng.choice(["", "", "1", "0", "-1"])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(MASTER_COLUMNS))


def _dicom_id(rng: np.random.Generator) -> str:
    digits = rng.integers(0, 16, 40)
    h = "".join("0123456789abcdef"[d] for d in digits)
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def make_cases(n_images: int, seed: int) -> list[Case]:
    """Draw ids, labels (balanced), sizes, anatomy and findings for ``n_images`` images."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_images) % len(CLASSES))
    variants = [VARIANTS[i] for i in rng.permutation(np.arange(n_images) % len(VARIANTS))]
    # A couple of patients (2 + n/50) have 2-3 images, as in MIMIC.
    n_multi = min(n_images // 3, 2 + n_images // 50)
    patients = [f"1{rng.integers(0, 10**7):07d}" for _ in range(n_images)]
    for j in range(n_multi):
        for k in range(1, 2 + j % 2):
            if 3 * j + k < n_images:
                patients[3 * j + k] = patients[3 * j]
    cases, keys = [], set()
    for i in range(n_images):
        key = _dicom_id(rng)
        while key in keys:
            key = _dicom_id(rng)
        keys.add(key)
        h = int(rng.integers(720, 1025))
        w = int(np.clip(round(h * rng.uniform(0.8, 1.25)), 640, 1024))
        unit = min(h, w) * rng.uniform(0.85, 1.0)
        label = int(labels[i])
        weak = rng.random() < 0.05  # the few ambiguous cases: almost no visible sign
        heart, haze, eff, opacity = rng.uniform(0.88, 1.08), 0.0, 0.0, None
        if label == 1:
            sev = rng.uniform(0.05, 0.25) if weak else rng.uniform(0.35, 1.0)
            heart = 1.02 + 0.45 * sev + rng.normal(0, 0.04)
            haze, eff = sev * rng.uniform(0.7, 1.0), sev * rng.uniform(0, 1) * (rng.random() < 0.5)
        elif label == 2:
            side = rng.choice([-1.0, 1.0])
            zone_y = rng.choice([-0.2, -0.04, 0.12]) + rng.normal(0, 0.03)
            x = side * (0.2 + rng.normal(0, 0.03))
            strength = rng.uniform(0.02, 0.05) if weak else rng.uniform(0.09, 0.22)
            opacity = (x, zone_y, rng.uniform(0.05, 0.1), strength)
        cases.append(
            Case(
                key=key,
                patient=patients[i],
                study=f"5{rng.integers(0, 10**7):07d}",
                label=label,
                height=h,
                width=w,
                cx=w / 2 + rng.normal(0, 0.02) * w,
                cy=h / 2 + rng.normal(0.03, 0.02) * h,
                unit=unit,
                heart_scale=float(heart),
                haze=float(haze),
                effusion=float(eff),
                opacity=opacity,
                variant=variants[i],
            )
        )
    return cases


def heart_ellipse(case: Case) -> tuple[float, float, float, float]:
    """Heart centre and semi-axes (chest units); CHF cases have ``heart_scale`` > 1.1."""
    hs = case.heart_scale
    return 0.05 + 0.03 * (hs - 1), 0.14, 0.165 * hs, 0.13 * (1 + 0.4 * (hs - 1))
