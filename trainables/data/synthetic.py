"""A synthetic twin of EGD-CXR + MIMIC-CXR: the same files, headers and quirks, made-up content.

Run as ``python -m trainables.data.synthetic OUT --images N --seed S``. Writes ``master_sheet.csv``
(59 columns, quoted multi-line free text, one-hot labels), ``fixations.csv`` and ``eye_gaze.csv``
(37 columns, calibration screens under truncated ids, Time restarting per image),
``bounding_boxes.csv`` (17 boxes per image) and real DICOMs under ``files/pXX/pID/sID/`` (MONOCHROME1
and 2, 12- and 16-bit, rescale and windowing, RLE / JPEG 2000 / JPEG baseline compression).

Images are chest-radiograph phantoms (body, lungs, heart, spine, ribs, clavicles, diaphragm,
lung texture). CHF enlarges the heart and adds bilateral perihilar haze (sometimes basal effusion);
pneumonia adds a mottled focal opacity in one lung zone; normal has neither. Strength and position
vary and a few percent of cases carry almost no signal, so the task is learnable, not trivial.
Simulated fixations survey the chest and dwell on the findings. The reader treats this folder
exactly like the real dataset.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from scipy.special import expit

from trainables.config import CLASSES
from trainables.data.egd import BOX_NAMES, GAZE_COLUMNS, MASTER_COLUMNS

logger = logging.getLogger(__name__)

SCREEN_W, SCREEN_H = 1920, 1080
_DRAW_FACTOR = 4  # anatomy drawn at 1/4 size and upsampled (16x cheaper); noise added at full size
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
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


def _ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    edge: float,
    p: float = 2.0,
) -> np.ndarray:
    r = (np.abs((x - cx) / ax) ** p + np.abs((y - cy) / ay) ** p) ** (1 / p)
    return expit((1.0 - r) / edge)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


@functools.cache
def _noise_tile() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((1280, 1280), dtype=np.float32) * 0.008


def heart_ellipse(case: Case) -> tuple[float, float, float, float]:
    """Heart centre and semi-axes (chest units); CHF cases have ``heart_scale`` > 1.1."""
    hs = case.heart_scale
    return 0.05 + 0.03 * (hs - 1), 0.14, 0.165 * hs, 0.13 * (1 + 0.4 * (hs - 1))


def render(case: Case, rng: np.random.Generator) -> np.ndarray:
    """The phantom as float32 (rows, columns) in [0, 1], bright = attenuating (MONOCHROME2)."""
    f = _DRAW_FACTOR
    h2, w2 = case.height // f, case.width // f
    cols = ((np.arange(w2, dtype=np.float32) + 0.5) * f - 0.5 - case.cx) / case.unit
    rows = ((np.arange(h2, dtype=np.float32) + 0.5) * f - 0.5 - case.cy) / case.unit
    x, y = cols[None, :], rows[:, None]
    body = _ellipse(x, y, 0.0, 0.14, 0.46, 0.72, 0.02, 2.6)
    lungs = np.maximum(
        _ellipse(x, y, -0.2, -0.03, 0.15, 0.32, 0.03, 2.4),
        _ellipse(x, y, 0.21, -0.01, 0.14, 0.31, 0.03, 2.4),
    )
    heart = _ellipse(x, y, *heart_ellipse(case), 0.04)
    hilum_d = np.minimum(np.hypot(x + 0.1, y + 0.03), np.hypot(x - 0.1, y + 0.03))
    vessels = np.exp(-hilum_d / 0.13)
    spine = np.exp(-((x / 0.035) ** 4)) * (0.8 + 0.2 * np.cos(2 * np.pi * y / 0.09) ** 2)
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (y + 0.55 - 0.55 * x**2) / 0.085)) ** 6
    clav = sum(
        np.exp(-(((y - (-0.37 - 0.2 * (np.abs(x) - 0.04))) / 0.018) ** 2))
        * ((np.abs(x) > 0.04) & (np.abs(x) < 0.34) & (np.sign(x) == s))
        for s in (-1, 1)
    )
    texture = _smooth_noise(rng, (h2, w2), 28) + 0.4 * _smooth_noise(rng, (h2, w2), 90)
    air = lungs * (1 - 0.85 * heart)
    img = (
        0.1
        + 0.42 * body
        - 0.36 * air
        + 0.12 * heart
        + 0.12 * spine * (1 - 0.6 * lungs)
        + 0.07 * ribs * body
        + 0.12 * clav
        + air * (0.1 * vessels * (0.6 + 0.4 * texture) + 0.025 * texture)
    )
    if case.haze > 0:  # bilateral perihilar ("bat-wing") haze
        img = img + 0.22 * case.haze * np.exp(-hilum_d / 0.12) * air * (1 + 0.3 * texture)
    if case.effusion > 0:  # fluid blunting both bases
        img = img + 0.15 * case.effusion * air * expit((y - 0.15) / 0.03)
    if case.opacity is not None:
        ox, oy, rad, amp = case.opacity
        blob = np.exp(-((x - ox) ** 2 + (y - oy) ** 2) / (2 * rad**2))
        img = img + amp * blob * air * np.clip(0.7 + 0.5 * texture, 0, None)
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15)  # exposure differences
    full = np.asarray(
        Image.fromarray(img.astype(np.float32)).resize(
            (case.width, case.height), Image.Resampling.BILINEAR
        )
    )
    # Detector noise (sd 0.008): a random crop of one shared tile, far cheaper than fresh draws.
    tile = _noise_tile()
    oy, ox = (int(rng.integers(0, t - n + 1)) for t, n in zip(tile.shape, full.shape, strict=True))
    noise = tile[oy : oy + full.shape[0], ox : ox + full.shape[1]]
    return np.clip(full + noise, 0, 1)


def _dataset(case: Case, image: np.ndarray, rng: np.random.Generator) -> Dataset:
    transfer, photometric, bits, rescale, window = case.variant
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[case.key])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[case.study])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[case.key, "series"])
    ds.PatientID, ds.StudyID, ds.Modality, ds.ViewPosition = case.patient, case.study, "DX", "PA"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = case.height, case.width, 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits == 8 else 16), bits, bits - 1
    ds.PixelRepresentation = 0
    top = 2**bits - 1
    gain = rng.uniform(0.75, 0.95)
    stored = np.round((rng.uniform(0.01, 0.04) + gain * image) * top).clip(0, top)
    if photometric == "MONOCHROME1":
        stored = top - stored
    stored = stored.astype(np.uint8 if bits == 8 else np.uint16)
    slope, intercept = 1.0, 0.0
    if rescale:
        slope, intercept = float(rng.choice([0.5, 2.0])), float(rng.choice([-1024.0, 512.0]))
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    if window:
        lo, hi = np.percentile(stored[::8, ::8], [1.0, 99.5]) * slope + intercept
        ds.WindowCenter, ds.WindowWidth = round((lo + hi) / 2, 1), round(max(hi - lo, 2.0), 1)
    if transfer == "jpeg8":
        buf = io.BytesIO()
        Image.fromarray(stored).save(buf, format="JPEG", quality=95)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        return ds
    ds.PixelData = stored.tobytes()
    if transfer == "j2k" and get_encoder(JPEG2000Lossless).is_available:
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif transfer in ("rle", "j2k"):  # no J2K encoder installed: RLE keeps the file compressed
        plugin = "pylibjpeg" if "pylibjpeg" in get_encoder(RLELossless).available_plugins else ""
        ds.compress(RLELossless, encoding_plugin=plugin, generate_instance_uid=False)
    return ds


def write_dicom(case: Case, root: Path, rng: np.random.Generator) -> Path:
    """Render and write one case under ``root/files/pXX/pID/sID/<dicom_id>.dcm``."""
    path = root / dicom_relpath(case)
    path.parent.mkdir(parents=True, exist_ok=True)
    _dataset(case, render(case, rng), rng).save_as(path, enforce_file_format=True)
    return path


def dicom_relpath(case: Case) -> str:
    return f"files/p{case.patient[:2]}/p{case.patient}/s{case.study}/{case.key}.dcm"


def _display(case: Case) -> tuple[int, int, int, int]:
    """Pads (top, bottom, left, right) of the aspect-preserving fit on the 1920x1080 screen."""
    s = min(SCREEN_W / case.width, SCREEN_H / case.height)
    sw, sh = round(case.width * s), round(case.height * s)
    left, top = (SCREEN_W - sw) // 2, (SCREEN_H - sh) // 2
    return top, SCREEN_H - sh - top, left, SCREEN_W - sw - left


def simulate_fixations(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One reading: survey of the chest, dwell on findings, a few glances off the image.

    Returns native edge coordinates ``x``, ``y`` (px from the top-left image edge), start and
    duration (s) per fixation, in viewing order.
    """
    n = int(np.clip(rng.poisson(44), 15, 90))
    survey = np.array(
        [
            (0.0, 0.0),
            (-0.2, -0.2),
            (-0.2, 0.0),
            (-0.22, 0.18),
            (0.2, -0.2),
            (0.21, 0.0),
            (0.24, 0.2),
            (0.04, 0.17),
            (0.0, -0.35),
            (-0.3, 0.27),
            (0.33, 0.28),
            (-0.1, -0.02),
            (0.12, -0.02),
        ]
    )
    pts = survey[rng.integers(0, len(survey), n)] + rng.normal(0, 0.05, (n, 2))
    pts[0] = rng.normal(0, 0.03, 2)
    dwell = np.zeros(n, bool)
    focus = []
    if case.opacity is not None:
        focus = [case.opacity[:2]]
    elif case.label == 1:
        hx, hy, ax, _ = heart_ellipse(case)
        focus = [(hx + ax, hy), (-0.11, -0.03), (0.11, -0.03)]
    if focus:
        k = rng.random(n) < rng.uniform(0.2, 0.4)
        k[0] = False
        dwell[k] = True
        pts[k] = np.asarray(focus)[rng.integers(0, len(focus), int(k.sum()))] + rng.normal(
            0, 0.035, (int(k.sum()), 2)
        )
    x, y = case.to_px(pts[:, 0], pts[:, 1])
    off = rng.random(n) < 0.03  # glances at the screen border, off the image
    x = np.where(off, rng.choice([-1.0, 1.0], n) * case.width * 0.6 + case.width / 2, x)
    dur = rng.lognormal(np.log(0.22), 0.45, n) * np.where(dwell, 1.6, 1.0)
    gaps = rng.uniform(0.02, 0.12, n)
    start = rng.uniform(0.05, 0.4) + np.concatenate([[0.0], np.cumsum(dur + gaps)[:-1]])
    return {"x": x, "y": y, "start": start, "dur": dur}


def _gaze_rows(
    case: Case,
    fx: dict[str, np.ndarray],
    session: int,
    media: int,
    tick0: float,
    rng: np.random.Generator,
    dicom_id: str | None = None,
) -> dict[str, np.ndarray]:
    """Fixation rows for one screen (an image, or its calibration screen under ``dicom_id``)."""
    top, bottom, left, right = _display(case)
    n = len(fx["x"])
    fpogx = np.round((left + fx["x"] * (SCREEN_W - left - right) / case.width) / SCREEN_W, 5)
    fpogy = np.round((top + fx["y"] * (SCREEN_H - top - bottom) / case.height) / SCREEN_H, 5)
    # X_ORIGINAL/Y_ORIGINAL from the rounded screen values, so they agree with the pad formula.
    xo = np.floor(case.width / (SCREEN_W - left - right) * (fpogx * SCREEN_W - left))
    yo = np.floor(case.height / (SCREEN_H - top - bottom) * (fpogy * SCREEN_H - top))
    t = fx["start"] + fx["dur"]
    sx, sy = (
        np.diff(fpogx * SCREEN_W, prepend=fpogx[0] * SCREEN_W),
        np.diff(fpogy * SCREEN_H, prepend=fpogy[0] * SCREEN_H),
    )
    cols = {
        "SESSION_ID": session,
        "MEDIA_ID": media,
        "DICOM_ID": dicom_id or case.key,
        "CNT": np.round(t * 60).astype(int) + 2,
        "Time (in secs)": np.round(t, 5),
        "TIMETICK(f=10000000)": np.round(tick0 + t * 1e7, 1),
        "FPOGX": fpogx,
        "FPOGY": fpogy,
        "FPOGS": np.round(fx["start"], 5),
        "FPOGD": np.round(fx["dur"], 5),
        "FPOGID": np.arange(n) + 2,
        "FPOGV": 1,
        "BPOGX": np.round(fpogx + rng.normal(0, 0.01, n), 5),
        "BPOGY": np.round(fpogy + rng.normal(0, 0.01, n), 5),
        "BPOGV": 1,
        "LPCX": np.round(rng.normal(0.378, 0.002, n), 5),
        "LPCY": np.round(rng.normal(0.594, 0.002, n), 5),
        "LPD": np.round(rng.normal(18.2, 0.3, n), 5),
        "LPS": np.round(rng.normal(1.05, 0.02, n), 5),
        "LPV": 1,
        "RPCX": np.round(rng.normal(0.637, 0.002, n), 5),
        "RPCY": np.round(rng.normal(0.598, 0.002, n), 5),
        "RPD": np.round(rng.normal(18.3, 0.3, n), 5),
        "RPS": np.round(rng.normal(1.06, 0.02, n), 5),
        "RPV": 1,
        "BKID": 0,
        "BKDUR": 0.0,
        "BKPMIN": rng.integers(15, 25, n),
        "LPMM": np.round(rng.normal(3.5, 0.1, n), 5),
        "LPMMV": 1,
        "RPMM": np.round(rng.normal(3.7, 0.1, n), 5),
        "RPMMV": 1,
        "SACCADE_MAG": np.round(np.hypot(sx, sy), 5),
        "SACCADE_DIR": np.round(np.degrees(np.arctan2(sy, sx)) % 360, 5),
        "VID_FRAME": 0.0,
        "X_ORIGINAL": xo.astype(int),
        "Y_ORIGINAL": yo.astype(int),
    }
    return {c: np.broadcast_to(cols[c], (n,)) for c in GAZE_COLUMNS}


def _calibration(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A 9-point calibration screen (targets over the whole display) before ``case``."""
    gx, gy = np.meshgrid([0.1, 0.5, 0.9], [0.1, 0.5, 0.9])
    top, bottom, left, right = _display(case)
    sx = (gx.ravel() * SCREEN_W - left) * case.width / (SCREEN_W - left - right)
    sy = (gy.ravel() * SCREEN_H - top) * case.height / (SCREEN_H - top - bottom)
    dur = rng.uniform(0.4, 0.9, 9)
    start = 0.2 + np.concatenate([[0.0], np.cumsum(dur + 0.3)[:-1]])
    return {"x": sx, "y": sy, "start": start, "dur": dur}


def gaze_tables(cases: list[Case], rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """fixations.csv and eye_gaze.csv (2 raw samples per fixation) for all cases, in sessions."""
    screens, tick, session, media = [], 6.9e11, 1, 0
    session_left = int(rng.integers(40, 90))
    for i, case in enumerate(cases):
        if session_left == 0:
            session, media, session_left = session + 1, 0, int(rng.integers(40, 90))
        if media == 0 or rng.random() < 0.04:  # calibrate at session start, now and then after
            cal = _calibration(case, rng)
            screens.append(_gaze_rows(case, cal, session, media, tick, rng, case.key[:-5]))
            media, tick = media + 1, tick + 1e8
        fx = simulate_fixations(case, rng)
        screens.append(_gaze_rows(case, fx, session, media, tick, rng))
        media, session_left = media + 1, session_left - 1
        tick += (fx["start"][-1] + fx["dur"][-1] + 2.0) * 1e7
    # One frame from whole columns: a DataFrame per screen costs ~10 ms each in pandas.
    fixations = pd.DataFrame({c: np.concatenate([s[c] for s in screens]) for c in GAZE_COLUMNS})
    dense = fixations.loc[fixations.index.repeat(2)].reset_index(drop=True)
    step = np.tile([0.5, 1.0], len(fixations))
    dense["Time (in secs)"] = np.round(dense["FPOGS"] + step * dense["FPOGD"], 5)
    return fixations, dense


def bounding_boxes(cases: list[Case]) -> pd.DataFrame:
    """17 anatomical boxes per image (native pixels) from each phantom's geometry."""
    boxes = {  # name -> (x1, x2, y1, y2) in chest units, before heart scaling
        "right lung": (-0.35, -0.05, -0.35, 0.29),
        "left lung": (0.07, 0.35, -0.32, 0.30),
        "right upper lung zone": (-0.35, -0.05, -0.35, -0.14),
        "right mid lung zone": (-0.35, -0.05, -0.14, 0.08),
        "right lower lung zone": (-0.35, -0.05, 0.08, 0.29),
        "left upper lung zone": (0.07, 0.35, -0.32, -0.11),
        "left mid lung zone": (0.07, 0.35, -0.11, 0.09),
        "left lower lung zone": (0.07, 0.35, 0.09, 0.30),
        "right costophrenic angle": (-0.36, -0.27, 0.2, 0.3),
        "left costophrenic angle": (0.27, 0.36, 0.2, 0.31),
        "right hilar structures": (-0.18, -0.05, -0.1, 0.08),
        "left hilar structures": (0.05, 0.18, -0.1, 0.08),
        "right clavicle": (-0.35, -0.03, -0.45, -0.33),
        "left clavicle": (0.03, 0.35, -0.45, -0.33),
        "trachea": (-0.025, 0.025, -0.55, -0.22),
        "upper mediastinum": (-0.08, 0.08, -0.45, -0.08),
    }
    rows = []
    for c in cases:
        hx, hy, ax, ay = heart_ellipse(c)
        named = dict(boxes, **{"cardiac silhouette": (hx - ax, hx + ax, hy - ay, hy + ay)})
        for name in BOX_NAMES:
            x1, x2, y1, y2 = named[name]
            (px1, px2), (py1, py2) = c.to_px(np.array([x1, x2]), np.array([y1, y2]))
            rows.append(
                (
                    c.key,
                    name,
                    *np.round(np.clip([px1, px2], 0, c.width - 1)),
                    *np.round(np.clip([py1, py2], 0, c.height - 1)),
                )
            )
    return pd.DataFrame(rows, columns=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"])


def write_synthetic(out: str | Path, n_images: int = 300, seed: int = 0) -> dict[str, float]:
    """Write the whole twin into ``out`` (created; existing files are overwritten).

    Args:
        out: folder to write.
        n_images: number of images (balanced classes).
        seed: everything drawn follows from it; the same seed gives the same files.

    Returns:
        counts and timing: images, fixation_rows, calibration_rows, seconds.
    """
    if n_images < 3:
        raise ValueError(f"the synthetic twin needs at least 3 images, got {n_images}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    cases = make_cases(n_images, seed)
    master = master_rows(
        cases, [dicom_relpath(c) for c in cases], [_display(c) for c in cases], rng
    )
    master.to_csv(out / "master_sheet.csv", index=False)
    fixations, dense = gaze_tables(cases, rng)
    fixations.to_csv(out / "fixations.csv", index=False)
    dense.to_csv(out / "eye_gaze.csv", index=False)
    bounding_boxes(cases).to_csv(out / "bounding_boxes.csv", index=False)
    # One process on purpose: spawned workers re-import pandas/pydicom, and on the 2-core dev
    # machine 300 images took 21 s with 2 workers against 12 s with one.
    for i, case in enumerate(cases):
        write_dicom(case, out, np.random.default_rng([seed, 2, i]))  # one stream per image
    calib = int((~fixations["DICOM_ID"].isin([c.key for c in cases])).sum())
    stats = {
        "images": n_images,
        "fixation_rows": len(fixations),
        "calibration_rows": calib,
        "seconds": time.perf_counter() - t0,
    }
    logger.info("synthetic EGD-CXR twin in %s: %s", out, stats)
    return stats


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m trainables.data.synthetic OUT --images N --seed S``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (EGD-CXR and MIMIC layout)")
    parser.add_argument("--images", type=int, default=300, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stats = write_synthetic(args.out, args.images, args.seed)
    print(
        f"wrote {stats['images']} images, {stats['fixation_rows']} fixation rows "
        f"({stats['calibration_rows']} calibration) to {args.out} in {stats['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
