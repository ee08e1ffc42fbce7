"""Simulated REFLACX readings: fixations with zoom / pan, angular resolution, windowing; reports.

The display follows the published fixations: a 3840 x 2160 screen whose image area starts right
of the button column (x >= 660; the image shown from the top left, fit to the area), the eye
about 5,400 screen pixels away, so ~94 screen pixels per degree at the centre and ~110 at the
corners (a flat screen). ``angular_resolution_*`` is that, at the fixation's place on screen,
divided by the screen pixels per image pixel of the moment (fit x zoom): ~40 twin pixels per
degree unzoomed, ~13 at 3x zoom (MIMIC-size images: ~130 and ~45). A zoom shows part of the
image (``*_shown_from_image``) over the whole area (``*_in_screen_coordinates``); fixations stay
on what is shown, and now and then glance at the buttons, off the image (negative x).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainables.data.synthetic.gaze import SURVEY as EGD_SURVEY
from trainables.data.synthetic.reader import ReaderSpec
from trainables.data.synthetic.reflacx_cases import ReaderProfile, TwinImage

SCREEN_W, SCREEN_H = 3840, 2160
AREA = (660.0, 0.0, 3840.0, 2160.0)  # the image area on screen; the buttons sit left of it
EYE_DISTANCE = 5400.0  # screen pixels from the eye: 94 pixels per degree at the screen centre
ZOOMS = (1.5, 2.0, 3.0)
# Where a survey looks: the EGD twin's points, and the two apices.
SURVEY = np.concatenate([EGD_SURVEY, [(-0.28, -0.33), (0.28, -0.33)]])
CERTAINTY_WORDS = {1: "unlikely", 2: "less likely", 3: "possible", 4: "probable", 5: ""}


@dataclass(frozen=True)
class View:
    """A zoom / pan state: the image point at the area's top-left and screen px per image px."""

    origin_x: float
    origin_y: float
    scale: float

    def region(self, shape: tuple[int, int]) -> tuple[float, float, float, float]:
        """The part of the image on screen: x0, y0, x1, y1 in image pixels."""
        h, w = shape
        vw, vh = (AREA[2] - AREA[0]) / self.scale, (AREA[3] - AREA[1]) / self.scale
        x0, y0 = max(0.0, self.origin_x), max(0.0, self.origin_y)
        return x0, y0, min(float(w), self.origin_x + vw), min(float(h), self.origin_y + vh)

    def shown(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``*_shown_from_image``: the region in integer pixels (half-open)."""
        return tuple(round(v) for v in self.region(shape))

    def screen(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``*_in_screen_coordinates``: where the region is drawn (integer screen pixels)."""
        x0, y0, x1, y1 = self.region(shape)
        corners = (*self.to_screen(x0, y0), *self.to_screen(x1, y1))
        return tuple(
            round(float(np.clip(v, AREA[i % 2], AREA[2 + i % 2]))) for i, v in enumerate(corners)
        )

    def to_screen(self, x: float, y: float) -> tuple[float, float]:
        return AREA[0] + (x - self.origin_x) * self.scale, AREA[1] + (
            y - self.origin_y
        ) * self.scale

    def to_image(self, sx: float, sy: float) -> tuple[float, float]:
        return (sx - AREA[0]) / self.scale + self.origin_x, (
            sy - AREA[1]
        ) / self.scale + self.origin_y


def fit_view(shape: tuple[int, int]) -> View:
    """The unzoomed display: the whole image fit into the area."""
    h, w = shape
    return View(0.0, 0.0, min((AREA[2] - AREA[0]) / w, (AREA[3] - AREA[1]) / h))


def zoom_view(shape: tuple[int, int], centre: tuple[float, float], zoom: float) -> View:
    """Zoomed ``zoom`` x around ``centre``, panned to stay on the image where it can."""
    h, w = shape
    scale = fit_view(shape).scale * zoom
    vw, vh = (AREA[2] - AREA[0]) / scale, (AREA[3] - AREA[1]) / scale
    ox = float(np.clip(centre[0] - vw / 2, 0, max(0.0, w - vw)))
    oy = float(np.clip(centre[1] - vh / 2, 0, max(0.0, h - vh)))
    return View(ox, oy, scale)


def pixels_per_degree(view: View, sx: float, sy: float) -> tuple[int, int]:
    """Image pixels per degree of visual angle along x and y at screen point (sx, sy)."""
    dx, dy = sx - SCREEN_W / 2, sy - SCREEN_H / 2
    dxp, dyp = np.hypot(EYE_DISTANCE, dy), np.hypot(EYE_DISTANCE, dx)
    per_rad_x, per_rad_y = (dxp**2 + dx**2) / dxp, (dyp**2 + dy**2) / dyp
    return round(per_rad_x * np.pi / 180 / view.scale), round(per_rad_y * np.pi / 180 / view.scale)


def simulate_reading(
    image: TwinImage,
    profile: ReaderProfile,
    targets: Sequence[tuple[float, float, float, float]],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """One reading's fixations.csv columns (file order, published column names).

    Args:
        image: the twin image.
        profile: the reader's habits (fixation count, dwell, coverage, zooming).
        targets: boxes (native pixels) the reader dwells on: their own ellipses.
        rng: the reading's random stream.
    """
    case = image.case
    shape = (case.height, case.width)
    fit = fit_view(shape)
    n = int(np.clip(rng.poisson(profile.fixations), 12, 400))
    view, left, window = fit, 0, (1.0, 0.5)
    t = rng.uniform(0.8, 2.5)  # the recording (audio) starts before the first fixation
    out: dict[str, list] = {k: [] for k in ("start", "end", "x", "y", "ppd", "shown", "screen")}
    out["window"] = []
    for i in range(n):
        left -= 1
        if view is not fit and left <= 0:
            view = fit
        focus = _target(targets, rng) if targets else None
        if view is fit and i > 0 and rng.random() < profile.zoom:
            centre = focus[:2] if focus else case.to_px(*_survey(profile, rng))
            view = zoom_view(shape, centre, float(rng.choice(ZOOMS)))
            left = int(rng.geometric(1 / 8)) + 1
        if rng.random() < 0.02:  # the reader changes the window
            window = (rng.uniform(0.4, 1.2), rng.uniform(0.35, 0.65))
        zoomed = view is not fit
        on_target = not zoomed and focus is not None and rng.random() < profile.finding_share
        x, y = _place(view, zoomed, focus if on_target else None, profile, image, rng)
        sx, sy = view.to_screen(x, y)
        dur = rng.lognormal(np.log(profile.dwell), 0.45) * (1.5 if zoomed or on_target else 1.0)
        out["start"].append(t)
        out["end"].append(t + dur)
        t += dur + rng.uniform(0.02, 0.1)
        out["x"].append(round(x))
        out["y"].append(round(y))
        out["ppd"].append(pixels_per_degree(view, sx, sy))
        out["shown"].append(view.shown(shape))
        out["screen"].append(view.screen(shape))
        out["window"].append(window)
    return _columns(out, rng)


def thorough(profile: ReaderProfile, spec: ReaderSpec) -> ReaderProfile:
    """``profile`` as a reader of thoroughness ``t`` reads (``reader.ReaderSpec``): ``t`` times the
    expected number of fixations, each dwelling ``t`` times as long."""
    t = spec.thoroughness
    return dataclasses.replace(profile, fixations=profile.fixations * t, dwell=profile.dwell * t)


def scan(
    fix: dict[str, np.ndarray], share: float, shape: tuple[int, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The reading ``fix`` (``simulate_reading``'s columns) with ``round(share * m)`` of its ``m``
    fixations moved to points drawn uniformly over the whole film, corners included: the EGD
    twin's scanning reader (``reader.ReaderSpec``), for each REFLACX reader.

    Only fixations made on the unzoomed display move (a zoom shows part of the film, and its
    fixations stay on what it shows), never the first; when fewer are unzoomed, all of those move.
    A moved fixation's angular resolution is recomputed for its new place on screen; its time,
    duration and display columns are kept. ``rng`` is the reading's scanning stream, so the rest
    of the reading is the one drawn without scanning.
    """
    fit = fit_view(shape)
    whole = np.array(fit.shown(shape), float)
    shown = np.column_stack(
        [fix[f"{c}_shown_from_image"] for c in ("xmin", "ymin", "xmax", "ymax")]
    )
    unzoomed = np.flatnonzero((shown == whole).all(axis=1))
    unzoomed = unzoomed[unzoomed > 0]
    k = min(round(share * len(fix["x_position"])), len(unzoomed))
    if k == 0:
        return fix
    moved = np.sort(rng.choice(unzoomed, size=k, replace=False))
    x = np.round(rng.uniform(0.0, shape[1] - 1, k))
    y = np.round(rng.uniform(0.0, shape[0] - 1, k))
    out = {c: v.copy() for c, v in fix.items()}
    out["x_position"][moved], out["y_position"][moved] = x, y
    ppd = np.array([pixels_per_degree(fit, *fit.to_screen(a, b)) for a, b in zip(x, y)], float)
    out["angular_resolution_x_pixels_per_degree"][moved] = ppd[:, 0]
    out["angular_resolution_y_pixels_per_degree"][moved] = ppd[:, 1]
    return out


def _target(targets: Sequence[tuple[float, ...]], rng: np.random.Generator) -> tuple[float, ...]:
    x0, y0, x1, y1 = targets[int(rng.integers(len(targets)))]
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 4.0) / 4, max(y1 - y0, 4.0) / 4


def _survey(profile: ReaderProfile, rng: np.random.Generator) -> tuple[float, float]:
    p = SURVEY[int(rng.integers(len(SURVEY)))] * profile.coverage + rng.normal(0, 0.05, 2)
    return float(p[0]), float(p[1])


def _place(
    view: View,
    zoomed: bool,
    focus: tuple[float, ...] | None,
    profile: ReaderProfile,
    image: TwinImage,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Where a fixation lands (native pixels): around the shown part when zoomed, on ``focus``
    when given, in the survey otherwise; 1.5% glance at the buttons, left of the image area."""
    if rng.random() < 0.015:
        return view.to_image(rng.uniform(60, 600), rng.uniform(900, 1200))
    x0, y0, x1, y1 = view.shown((image.case.height, image.case.width))
    if zoomed:
        x, y = rng.normal((x0 + x1) / 2, (x1 - x0) / 5), rng.normal((y0 + y1) / 2, (y1 - y0) / 5)
    elif focus is not None:
        x, y = rng.normal(focus[0], focus[2]), rng.normal(focus[1], focus[3])
    else:
        x, y = image.case.to_px(*_survey(profile, rng))
    return float(np.clip(x, x0, x1 - 1)), float(np.clip(y, y0, y1 - 1))


def _columns(out: dict[str, list], rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(out["x"])
    ppd, shown = np.array(out["ppd"], float), np.array(out["shown"], float)
    screen, window = np.array(out["screen"], float), np.array(out["window"])
    return {
        "timestamp_start_fixation": np.round(out["start"], 3),
        "timestamp_end_fixation": np.round(out["end"], 3),
        "x_position": np.array(out["x"], float),
        "y_position": np.array(out["y"], float),
        "pupil_area_normalized": np.round(rng.normal(1.0, 0.08, n), 3),
        "angular_resolution_x_pixels_per_degree": ppd[:, 0],
        "angular_resolution_y_pixels_per_degree": ppd[:, 1],
        "window_width": np.round(window[:, 0], 5),
        "window_level": np.round(window[:, 1], 5),
        "xmin_shown_from_image": shown[:, 0],
        "ymin_shown_from_image": shown[:, 1],
        "xmax_shown_from_image": shown[:, 2],
        "ymax_shown_from_image": shown[:, 3],
        "xmin_in_screen_coordinates": screen[:, 0],
        "ymin_in_screen_coordinates": screen[:, 1],
        "xmax_in_screen_coordinates": screen[:, 2],
        "ymax_in_screen_coordinates": screen[:, 3],
    }


def transcription(
    grades: Sequence[tuple[str, int]], start: float, end: float
) -> tuple[str, list[tuple[str, float, float]]]:
    """The dictated report for (finding, certainty) pairs, and its words with timestamps.

    Periods are words, as the radiologists dictated them. Returns (text, [(word, start, end)]).
    """
    sentences = [
        f"{CERTAINTY_WORDS[c]} {name.lower()}".strip().capitalize() for name, c in grades if c > 0
    ] or ["No acute cardiopulmonary process"]
    words = [w for s in sentences for w in (*s.split(), ".")]
    edges = np.linspace(start, max(end, start + 0.3 * len(words)), len(words) + 1)
    timed = [(w, round(a, 3), round(b - 0.01, 3)) for w, a, b in zip(words, edges, edges[1:])]
    text = " ".join(s + "." for s in sentences)
    return text, timed
