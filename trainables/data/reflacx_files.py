"""REFLACX's per-reading tables: ``fixations.csv``, ``anomaly_location_ellipses.csv`` and
``chest_bounding_box.csv`` under ``main_data/<id>/`` (DESIGN.md section 3b), and the tally the
reader counts exclusions with.

Read with the csv module (about 10x faster than pandas on the ~9,000 small files of the dataset).
A file whose header lacks a required column, or that is not UTF-8, is a ValueError naming it (as
``tables.read_csv_checked``): that is a broken download, not data to skip. Rows with missing or
non-numeric values are dropped and counted.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.data.reflacx_gaze import ReflacxFixations
from trainables.data.reflacx_labels import FINDINGS, MAX_CERTAINTY, merge_flags, to_finding

logger = logging.getLogger("trainables.data.reflacx")  # one logger for the reader and its files

FIXATIONS = "fixations.csv"
ELLIPSES = "anomaly_location_ellipses.csv"
CHEST_BOX = "chest_bounding_box.csv"
FIXATION_COLUMNS: tuple[str, ...] = (
    "timestamp_start_fixation",
    "timestamp_end_fixation",
    "x_position",
    "y_position",
    "pupil_area_normalized",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
    "window_width",
    "window_level",
    "xmin_shown_from_image",
    "ymin_shown_from_image",
    "xmax_shown_from_image",
    "ymax_shown_from_image",
    "xmin_in_screen_coordinates",
    "ymin_in_screen_coordinates",
    "xmax_in_screen_coordinates",
    "ymax_in_screen_coordinates",
)
# The columns the gaze recipe uses, in ReflacxFixations' field order.
FIXATION_REQUIRED: tuple[str, ...] = (
    FIXATION_COLUMNS[:4] + FIXATION_COLUMNS[5:7] + FIXATION_COLUMNS[9:13]
)
BOX_COLUMNS: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax")
ELLIPSE_COLUMNS: tuple[str, ...] = (*BOX_COLUMNS, "certainty")  # then one boolean per label
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
_EXAMPLES = 3  # ids named in a log line
_EXPECTED = frozenset({"gaze_discarded_readings"})  # part of the published data: logged at INFO


@dataclass(frozen=True, eq=False)
class Ellipses:
    """One reading's abnormality ellipses (each the ellipse inscribed in its box)."""

    boxes: np.ndarray  # (E, 4) float64 xmin, ymin, xmax, ymax in native pixels
    certainty: np.ndarray  # (E,) int8 0-5
    findings: np.ndarray  # (E, F) bool: the FINDINGS each ellipse is flagged for

    def __len__(self) -> int:
        return len(self.boxes)


class Notes:
    """The reader's tally: reason -> reading ids / dicom_ids (an id repeated once per row for row
    counts), counted and logged once per reason: ids only, never a path under the MIMIC root."""

    def __init__(self) -> None:
        self.ids: defaultdict[str, list[str]] = defaultdict(list)

    def add(self, reason: str, key: str, n: int = 1) -> None:
        if n > 0:
            self.ids[reason] += [key] * n

    def flush(self, counts: Counter[str], where: Path) -> None:
        for reason, ids in self.ids.items():
            counts[reason] += len(ids)
            level = logging.INFO if reason in _EXPECTED else logging.WARNING
            examples = list(dict.fromkeys(ids))[:_EXAMPLES]
            logger.log(level, "%s: %d counted as %s (e.g. %s)", where, len(ids), reason, examples)


def parse_flag(text: str) -> bool:
    """A boolean cell (``True`` / ``False`` as pandas writes them, or 1 / 0); ValueError else."""
    t = text.strip().lower()
    if t not in _TRUE | _FALSE:
        raise ValueError(f"not a boolean: {text!r}")
    return t in _TRUE


def read_table(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a per-reading table; ValueError naming the file when columns are
    missing or it is not UTF-8 (as ``read_csv_checked``; the csv module, 10x faster than pandas
    on ~9,000 small files)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing required columns {missing} (header: {header[:8]})")
    return header, [r for r in rows if any(v.strip() for v in r)]


def _numbers(header: list[str], rows: list[list[str]], columns: tuple[str, ...]) -> np.ndarray:
    """(rows, columns) float64; NaN where a value is missing or not a number."""
    idx = [header.index(c) for c in columns]
    out = np.full((len(rows), len(idx)), np.nan)
    for i, row in enumerate(rows):
        for j, k in enumerate(idx):
            try:
                out[i, j] = float(row[k])
            except (IndexError, ValueError):
                pass
    return out


def read_fixations(
    path: Path, rid: str, notes: Notes, sources: list[Path]
) -> ReflacxFixations | None:
    """A reading's fixations, or None when the file is missing or no row is usable. Rows with a
    missing or non-finite value, end < start, pixels per degree <= 0 or an empty shown region
    are dropped and counted (``invalid_fixation_rows``)."""
    if not path.is_file():
        return None
    header, rows = read_table(path, FIXATION_REQUIRED)
    sources.append(path)
    v = _numbers(header, rows, FIXATION_REQUIRED)
    ok = np.isfinite(v).all(axis=1) & (v[:, 1] >= v[:, 0]) & (v[:, 4] > 0) & (v[:, 5] > 0)
    ok &= (v[:, 8] > v[:, 6]) & (v[:, 9] > v[:, 7])  # a shown region with area
    notes.add("invalid_fixation_rows", rid, int((~ok).sum()))
    return ReflacxFixations(*v[ok].T.copy()) if ok.any() else None


def read_ellipses(
    path: Path | None, rid: str, phase: int, notes: Notes, sources: list[Path]
) -> Ellipses:
    """A reading's ellipses, label flags merged onto FINDINGS (empty when the file is missing:
    counted). Rows with unreadable coordinates, a certainty outside 0-5, an inverted box or a
    flag that is not a boolean are dropped and counted (``invalid_ellipse_rows``)."""
    empty = Ellipses(np.zeros((0, 4)), np.zeros(0, np.int8), np.zeros((0, len(FINDINGS)), bool))
    if path is None or not path.is_file():
        notes.add("missing_ellipse_files", rid)
        return empty
    header, rows = read_table(path, ELLIPSE_COLUMNS)
    sources.append(path)
    v = _numbers(header, rows, ELLIPSE_COLUMNS)
    labels = [c for c in to_finding(phase) if c in header]
    flags = np.zeros((len(rows), len(labels)), bool)
    ok = np.isfinite(v).all(axis=1) & (v[:, 2] >= v[:, 0]) & (v[:, 3] >= v[:, 1])
    ok &= np.isin(v[:, 4], np.arange(MAX_CERTAINTY + 1))
    for i, r in enumerate(rows):
        try:  # an empty cell is an unflagged label (the other phase's columns are empty)
            flags[i] = [parse_flag(r[header.index(c)].strip() or "false") for c in labels]
        except (IndexError, ValueError):
            ok[i] = False
    notes.add("invalid_ellipse_rows", rid, int((~ok).sum()))
    found = merge_flags(phase, dict(zip(labels, flags[ok].T, strict=True)), int(ok.sum()))
    return Ellipses(v[ok, :4].copy(), v[ok, 4].astype(np.int8), found)


def read_chest_box(
    path: Path | None, rid: str, notes: Notes, sources: list[Path]
) -> tuple[float, float, float, float] | None:
    """(xmin, ymin, xmax, ymax) of the reading's chest box (its first row), or None (counted)."""
    if path is None or not path.is_file():
        notes.add("missing_chest_boxes", rid)
        return None
    header, rows = read_table(path, BOX_COLUMNS)
    sources.append(path)
    v = _numbers(header, rows[:1], BOX_COLUMNS)
    if len(v) == 0 or not np.isfinite(v).all():
        notes.add("invalid_chest_boxes", rid)
        return None
    return tuple(float(x) for x in v[0])
