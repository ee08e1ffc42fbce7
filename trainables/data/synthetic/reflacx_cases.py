"""The REFLACX twin's images and what each radiologist reports on them.

Images are the EGD twin's phantoms (:func:`make_cases`, :func:`render`), read as REFLACX findings:
an enlarged heart is ``Enlarged cardiac silhouette``, perihilar haze ``Pulmonary edema``, basal
fluid ``Pleural abnormality``, the focal opacity ``Consolidation``; this module adds a ``Lung
nodule or mass`` (a small dense blob) and ``Support devices`` (a tube), drawn after the phantom.
Each finding has an evidence strength in [0, 1] and true boxes. A reader grades each finding
from its evidence, their own bias and noise (certainty 0-5: present findings mostly 3-5, absent
ones mostly 0, sometimes 1-2), and draws one ellipse per graded box, jittered as people draw.
Five reader profiles, from thorough to quick, also set how the gaze moves (``reflacx_gaze``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainables.data.synthetic.cases import Case, heart_ellipse, make_cases
from trainables.data.synthetic.phantom import render

SPLIT_SHARES = {"train": 0.8, "validate": 0.1, "test": 0.1}  # per patient (usable splits, not
# MIMIC-CXR's real 97.7 / 0.8 / 1.5 shares)
CASE_SEED_OFFSET = 1_000_003  # the twin's images (and dicom_ids) differ from the EGD twin's
SENTENCE_OTHER = ("Scoliosis", "Granuloma", "Degenerative changes of the spine", "Hyperinflation")


@dataclass(frozen=True)
class ReaderProfile:
    """How one simulated radiologist reads: gaze behaviour and grading habit."""

    name: str
    fixations: float  # mean number of fixations per reading
    dwell: float  # median fixation duration (s)
    coverage: float  # spread of the survey around the chest (1 = the standard pattern)
    finding_share: float  # share of fixations spent on findings
    zoom: float  # chance per fixation of zooming in (thorough readers zoom more)
    bias: float  # added to the latent certainty (optimistic > 0, cautious < 0)


PROFILES: tuple[ReaderProfile, ...] = (
    ReaderProfile("thorough", 150.0, 0.28, 1.15, 0.35, 0.05, 0.3),
    ReaderProfile("systematic", 100.0, 0.24, 1.0, 0.30, 0.025, 0.0),
    ReaderProfile("focused", 70.0, 0.32, 0.7, 0.50, 0.035, 0.2),
    ReaderProfile("quick", 35.0, 0.18, 0.8, 0.25, 0.004, -0.3),
    ReaderProfile("cautious", 90.0, 0.22, 0.9, 0.30, 0.015, -0.5),
)


@dataclass(frozen=True)
class Finding:
    """A finding a reader may grade: evidence in [0, 1] and where it is (native pixel boxes)."""

    name: str  # a merged REFLACX finding (reflacx_labels.FINDINGS)
    evidence: float  # 0: not there (readers may still grade it 1-2)
    boxes: tuple[tuple[float, float, float, float], ...]  # xmin, ymin, xmax, ymax


@dataclass(frozen=True)
class TwinImage:
    """One twin image: the phantom case, its REFLACX phase, findings, and planted extras."""

    case: Case
    phase: int
    split: str  # MIMIC-style: train / validate / test (one per patient)
    findings: tuple[Finding, ...]  # graded findings, present or not (Support devices apart)
    nodule: tuple[float, float, float, float] | None  # x, y (chest units), radius, strength
    device: bool  # an endotracheal-like tube is drawn (Support devices)


def _box(case: Case, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    (px0, px1), (py0, py1) = case.to_px(np.array([x0, x1]), np.array([y0, y1]))
    return (
        float(np.clip(px0, 0, case.width - 1)),
        float(np.clip(py0, 0, case.height - 1)),
        float(np.clip(px1, 0, case.width - 1)),
        float(np.clip(py1, 0, case.height - 1)),
    )


def _around(case: Case, x: float, y: float, half: float) -> tuple[float, ...]:
    return _box(case, x - half, y - half, x + half, y + half)


def _findings(case: Case, nodule: tuple | None, rng: np.random.Generator) -> tuple[Finding, ...]:
    hx, hy, ax, ay = heart_ellipse(case)
    bases = ((-0.36, 0.12, -0.08, 0.32), (0.08, 0.12, 0.36, 0.33))
    zone = (rng.choice([-0.2, 0.2]), rng.choice([-0.2, -0.04, 0.12]))  # where a false call goes
    ox, oy, rad, amp = case.opacity if case.opacity is not None else (*zone, 0.07, 0.0)
    nx, ny, nrad, namp = nodule if nodule is not None else (*zone, 0.03, 0.0)
    return (
        Finding(
            "Enlarged cardiac silhouette",
            float(np.clip((case.heart_scale - 1.08) / 0.3, 0, 1)),
            (_box(case, hx - ax, hy - ay, hx + ax, hy + ay),),
        ),
        Finding(
            "Pulmonary edema",
            float(np.clip(case.haze / 0.8, 0, 1)),
            (_box(case, -0.3, -0.2, 0.3, 0.15),),
        ),
        Finding(
            "Pleural abnormality",
            float(np.clip(case.effusion / 0.6, 0, 1)),
            tuple(_box(case, *b) for b in bases),
        ),
        Finding(
            "Consolidation",
            float(np.clip((amp - 0.03) / 0.15, 0, 1)),
            (_around(case, ox, oy, 2.2 * rad),),
        ),
        Finding(
            "Lung nodule or mass",
            float(np.clip(namp / 0.2, 0, 1)),
            (_around(case, nx, ny, 2.5 * nrad),),
        ),
        Finding("Atelectasis", 0.0, (_box(case, *bases[int(rng.integers(2))]),)),
    )


def make_images(n_images: int, n_multi: int, seed: int) -> list[TwinImage]:
    """``n_images`` twin images; the first ``n_multi`` are phases 1 and 2 (five readers each,
    phase 1 taking the odd one), the rest phase 3 (one reader)."""
    cases = make_cases(n_images, CASE_SEED_OFFSET + seed)
    split_rng = np.random.default_rng([seed, 10])
    splits: dict[str, str] = {}
    images = []
    for i, case in enumerate(cases):
        rng = np.random.default_rng([seed, 11, i])
        nodule = None
        if rng.random() < 0.2:
            side = rng.choice([-1.0, 1.0])
            nodule = (
                side * rng.uniform(0.12, 0.28),
                rng.uniform(-0.25, 0.15),
                rng.uniform(0.018, 0.05),
                rng.uniform(0.05, 0.25),
            )
        if case.patient not in splits:
            splits[case.patient] = str(
                split_rng.choice(list(SPLIT_SHARES), p=list(SPLIT_SHARES.values()))
            )
        phase = 3 if i >= n_multi else (1 if i < (n_multi + 1) // 2 else 2)
        images.append(
            TwinImage(
                case=case,
                phase=phase,
                split=splits[case.patient],
                findings=_findings(case, nodule, rng),
                nodule=nodule,
                device=bool(rng.random() < 0.3),
            )
        )
    return images


def render_image(image: TwinImage, rng: np.random.Generator) -> np.ndarray:
    """The phantom (:func:`render`) with the nodule and the tube drawn on it, float32 [0, 1]."""
    case = image.case
    pixels = render(case, rng)
    cols = (np.arange(case.width, dtype=np.float32) - case.cx) / case.unit
    rows = (np.arange(case.height, dtype=np.float32) - case.cy) / case.unit
    x, y = cols[None, :], rows[:, None]
    if image.nodule is not None:
        nx, ny, rad, amp = image.nodule
        pixels = pixels + amp * np.exp(-((x - nx) ** 2 + (y - ny) ** 2) / (2 * rad**2))
    if image.device:  # a tube down the trachea, ending above the carina
        along = np.clip((y + 0.62) / 0.5, 0, 1)
        centre = 0.01 + 0.02 * along
        inside = (y > -0.62) & (y < -0.12)
        pixels = pixels + 0.25 * inside * np.exp(-(((x - centre) / 0.006) ** 2))
    return np.clip(pixels, 0, 1).astype(np.float32)


def grade(finding: Finding, profile: ReaderProfile, rng: np.random.Generator) -> int:
    """A reader's certainty 0-5 for a finding: 5.5 x evidence - 0.8 + bias + N(0, 0.7), rounded.

    Absent findings (evidence 0) come out 0 mostly and 1-2 now and then; clear ones 4-5; weak
    ones split the readers around the presence threshold of 3.
    """
    latent = 5.5 * finding.evidence - 0.8 + profile.bias + rng.normal(0, 0.7)
    return int(np.clip(np.round(latent), 0, 5))


def drawn_ellipse(
    box: tuple[float, ...], shape: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A reader's ellipse around ``box``: centre and size jittered, clipped, integer pixels."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) * rng.lognormal(0, 0.12), (y1 - y0) * rng.lognormal(0, 0.12)
    cx, cy = cx + rng.normal(0, 0.06 * w), cy + rng.normal(0, 0.06 * h)
    rows, cols = shape
    xs = np.clip(np.round([cx - w / 2, cx + w / 2]), 0, cols - 1)
    ys = np.clip(np.round([cy - h / 2, cy + h / 2]), 0, rows - 1)
    return int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1])


def chest_box(case: Case, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The reader's box around lungs and heart (chest_bounding_box.csv), jittered per reader."""
    jitter = rng.normal(0, 0.012, 4)
    x0, y0, x1, y1 = _box(
        case, -0.37 + jitter[0], -0.42 + jitter[1], 0.37 + jitter[2], 0.33 + jitter[3]
    )
    return round(x0), round(y0), round(x1), round(y1)


def other_text(rng: np.random.Generator) -> str:
    """The free-text ``Other`` column: empty mostly, else 1-2 labels joined by ``|``."""
    if rng.random() >= 0.08:
        return ""
    k = int(rng.integers(1, 3))
    return "|".join(SENTENCE_OTHER[j] for j in rng.permutation(len(SENTENCE_OTHER))[:k])
