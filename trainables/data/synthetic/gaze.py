"""Simulated readings: fixations.csv and eye_gaze.csv rows, calibration screens, in sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.data.egd import GAZE_COLUMNS
from trainables.data.heatmaps import Pads, published_xy_original
from trainables.data.synthetic.cases import Case, heart_ellipse
from trainables.data.synthetic.reader import ReaderSpec, read_as, reader_stream

# Where a survey of the chest looks (chest units: x to the image right, y down from its centre);
# the REFLACX twin's readers look there too, and at the two apices.
SURVEY = np.array(
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

SCREEN_W, SCREEN_H = 1920, 1080


def display_pads(case: Case) -> tuple[int, int, int, int]:
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
    pts = SURVEY[rng.integers(0, len(SURVEY), n)] + rng.normal(0, 0.05, (n, 2))
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
    screen: tuple[int, int, float],
    rng: np.random.Generator,
    dicom_id: str | None = None,
) -> dict[str, np.ndarray]:
    """Fixation rows for one screen (``(session, media, first tick)``): an image, or
    (``dicom_id`` given) its calibration screen,
    whose fixations ``fx`` are then screen pixels and which the published mapping, finding no
    DICOM for the truncated id, maps with zero pads onto a 1920x1080 "image"."""
    session, media, tick0 = screen
    n = len(fx["x"])
    if dicom_id is None:
        pads = Pads(*display_pads(case))
        top, bottom, left, right = pads
        fpogx = np.round((left + fx["x"] * (SCREEN_W - left - right) / case.width) / SCREEN_W, 5)
        fpogy = np.round((top + fx["y"] * (SCREEN_H - top - bottom) / case.height) / SCREEN_H, 5)
        native = (case.height, case.width)
    else:
        fpogx, fpogy = np.round(fx["x"] / SCREEN_W, 5), np.round(fx["y"] / SCREEN_H, 5)
        pads, native = Pads(0, 0, 0, 0), (SCREEN_H, SCREEN_W)
    # From the rounded screen values, as the published script computed them from the file.
    xo, yo = published_xy_original(fpogx, fpogy, pads, native)
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


def _calibration(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A calibration screen: one dot in the centre of the display, fixated a few times (screen px).

    EGD-CXR's recalibration reads the last fixation of such a screen as the gaze on the centre.
    """
    n = int(rng.integers(2, 6))
    x = SCREEN_W / 2 + rng.normal(0, 12, n)
    y = SCREEN_H / 2 + rng.normal(0, 12, n)
    dur = rng.uniform(0.3, 0.9, n)
    start = 0.2 + np.concatenate([[0.0], np.cumsum(dur + 0.15)[:-1]])
    return {"x": x, "y": y, "start": start, "dur": dur}


def gaze_tables(
    cases: list[Case], rng: np.random.Generator, reader: ReaderSpec | None = None, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """fixations.csv and eye_gaze.csv (2 raw samples per fixation) for all cases, in sessions.

    With a non-default ``reader`` each reading is the default one read as that reader reads
    (:mod:`trainables.data.synthetic.reader`, from per-image streams of ``seed``); ``rng`` is used
    exactly as without it, so sessions, calibration screens and every default reading stay those
    of the default twin.
    """
    screens, tick, session, media = [], 6.9e11, 1, 0
    session_left = int(rng.integers(40, 90))
    for i, case in enumerate(cases):
        if session_left == 0:
            session, media, session_left = session + 1, 0, int(rng.integers(40, 90))
        if media == 0 or rng.random() < 0.04:  # calibrate at session start, now and then after
            cal = _calibration(rng)
            screens.append(_gaze_rows(case, cal, (session, media, tick), rng, case.key[:-5]))
            media, tick = media + 1, tick + 1e8
        fx = simulate_fixations(case, rng)
        rows = _gaze_rows(case, fx, (session, media, tick), rng)  # rng as in the default twin
        if reader is not None and not reader.is_default():
            own = reader_stream(seed, i)
            fx = read_as(case, fx, reader, own)
            rows = _gaze_rows(case, fx, (session, media, tick), own)
        screens.append(rows)
        media, session_left = media + 1, session_left - 1
        tick += (fx["start"][-1] + fx["dur"][-1] + 2.0) * 1e7
    # One frame from whole columns: a DataFrame per screen costs ~10 ms each in pandas.
    fixations = pd.DataFrame({c: np.concatenate([s[c] for s in screens]) for c in GAZE_COLUMNS})
    dense = fixations.loc[fixations.index.repeat(2)].reset_index(drop=True)
    step = np.tile([0.5, 1.0], len(fixations))
    dense["Time (in secs)"] = np.round(dense["FPOGS"] + step * dense["FPOGD"], 5)
    return fixations, dense
