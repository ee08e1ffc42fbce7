"""Reader for the REFLACX layout: one record per image, its readings, every exclusion counted.

REFLACX (PhysioNet ``reflacx-xray-localization`` 1.0.0; DESIGN.md section 3b) ships
``main_data/metadata_phase_{1,2,3}.csv`` (one row per reading) and, per reading,
``main_data/<id>/fixations.csv``, ``anomaly_location_ellipses.csv`` and ``chest_bounding_box.csv``;
the DICOMs come from MIMIC-CXR through the ``image`` column, resolved under the MIMIC root from its
``files/...`` part. There is no reader column: readings of one ``dicom_id`` are its radiologists.

Labels (:mod:`trainables.data.reflacx_labels`): each reading's label columns are merged onto one
finding list, a finding is present in a reading at certainty >= ``threshold`` (3), and an image
has the strict majority of its readings' labels (``image_labels``: 3 of 5 radiologists; one
reader: that reader's; an even split: absent). ``labelled`` marks the findings the image's phase
could express (phase 1 had no Enlarged hilum, Hiatal hernia, Interstitial lung disease).
Readings marked ``eye_tracking_data_discarded`` keep their labels and ellipses and have no gaze;
they vote on the labels like the others.

Counts in ``exclusions``. Readings dropped: ``invalid_reading_id`` (not ``P{1,2}NNRNNNNNN`` /
``P300RNNNNNN`` for its file's phase: ids become folder names and are never joined unchecked),
``duplicate_reading_id``, ``invalid_metadata_row`` (flag, size, certainty or id fields unreadable).
Images dropped, in this order: ``inconsistent_image_rows`` (readings of one dicom_id disagree on
image, patient, split or size), ``path_outside_mimic_root`` (no ``files/`` part, absolute, ``..``
or a symlink out: never opened), ``image_not_named_by_dicom_id``, ``missing_dicom``, and with
``require_gaze`` ``no_gaze`` (no reading with fixations). Gaze only (the reading stays):
``gaze_discarded_readings``, ``readings_without_fixations`` (no or empty fixations.csv). Rows:
``invalid_fixation_rows``, ``invalid_ellipse_rows``; files: ``missing_phase_files``,
``missing_ellipse_files``, ``missing_chest_boxes``, ``invalid_chest_boxes``,
``reading_folder_outside_main_data`` (a symlink out: not read). Logs name reading ids and
dicom_ids, never paths under the MIMIC root (they carry the patient id).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from trainables.data.reflacx_files import (
    CHEST_BOX,
    ELLIPSES,
    FIXATIONS,
    Ellipses,
    Notes,
    parse_flag,
    read_chest_box,
    read_ellipses,
    read_fixations,
)
from trainables.data.reflacx_gaze import ReflacxFixations
from trainables.data.reflacx_labels import (
    FINDINGS,
    MAX_CERTAINTY,
    OTHER,
    PHASE_LABELS,
    PHASES,
    PRESENT_CERTAINTY,
    QUALITY_ISSUE,
    boolean_columns,
    graded_columns,
    image_labels,
    labelled_mask,
    merge_certainties,
    present,
)
from trainables.data.tables import inside, read_csv_checked

logger = logging.getLogger(__name__)

MAIN_DATA = "main_data"
METADATA_BASE: tuple[str, ...] = (
    "id",
    "split",
    "eye_tracking_data_discarded",
    "image",
    "dicom_id",
    "subject_id",
    "image_size_x",
    "image_size_y",
)
# Every phase file carries both lists' columns (the other phase's empty): phase 1's, then those
# only phases 2-3 have. Alphabetical within each, "Other" included, as the published tables
# (their ellipse files and MIMIC-Eye's concatenation of them) order them; read by name anyway.
METADATA_LABEL_COLUMNS: tuple[str, ...] = (
    *PHASE_LABELS[1],
    *(c for c in PHASE_LABELS[2] if c not in PHASE_LABELS[1]),
)
METADATA_COLUMNS: tuple[str, ...] = (*METADATA_BASE, *METADATA_LABEL_COLUMNS)
READING_ID: dict[int, re.Pattern[str]] = {
    1: re.compile(r"P1[0-9]{2}R[0-9]{6}"),
    2: re.compile(r"P2[0-9]{2}R[0-9]{6}"),
    3: re.compile(r"P300R[0-9]{6}"),
}


def metadata_file(phase: int) -> str:
    """``metadata_phase_<phase>.csv``."""
    return f"metadata_phase_{phase}.csv"


def metadata_required(phase: int) -> tuple[str, ...]:
    """The columns a phase's metadata file must have: the base columns and its label columns."""
    return (*METADATA_BASE, *PHASE_LABELS[phase])


@dataclass(frozen=True, eq=False)
class Reading:
    """One radiologist's reading of an image."""

    id: str  # REFLACX reading id (main_data/<id>/)
    phase: int
    certainty: np.ndarray  # (F,) int8 0-5 over FINDINGS (Support devices: 0 or 5)
    labels: np.ndarray  # (F,) int8 0/1: certainty >= the index's threshold
    fixations: ReflacxFixations | None  # None: gaze discarded, or no usable fixations
    ellipses: Ellipses
    chest_box: tuple[float, float, float, float] | None  # xmin, ymin, xmax, ymax
    gaze_discarded: bool  # eye_tracking_data_discarded
    quality_issue: bool  # phase 1's "Quality issue" (False in phases 2-3); not a finding
    other: tuple[str, ...]  # "Other" free-text labels ("|"-separated in the file); not findings


@dataclass(frozen=True, eq=False)
class ReflacxRecord:
    """One image: key, patient, merged labels, DICOM, MIMIC split and its readings."""

    key: str  # MIMIC dicom_id
    patient: str  # MIMIC subject_id (for splits only; never logged)
    labels: np.ndarray  # (F,) int8 0/1 over FINDINGS: strict majority of the readings
    labelled: np.ndarray  # (F,) bool: findings its phase's label list could express
    dicom_path: Path
    split: str  # MIMIC-CXR's split: train / validate / test
    image_size: tuple[int, int]  # (rows, columns) = (image_size_y, image_size_x)
    phase: int
    readings: tuple[Reading, ...]  # sorted by reading id

    @property
    def gaze_readings(self) -> tuple[Reading, ...]:
        """The readings with fixations."""
        return tuple(r for r in self.readings if r.fixations is not None)


@dataclass(frozen=True)
class ReflacxIndex:
    """The kept images, the exclusion counts, and every table file read (for a cache key)."""

    records: tuple[ReflacxRecord, ...]
    exclusions: dict[str, int]
    source_files: tuple[Path, ...]
    threshold: int  # certainty at which a finding counts as present


@dataclass(frozen=True)
class _Row:
    id: str
    phase: int
    dicom_id: str
    image: tuple[str, str, str, int, int]  # image path, subject_id, split, rows, columns
    discarded: bool
    certainty: np.ndarray
    quality_issue: bool
    other: tuple[str, ...]


def read_reflacx(
    root: str | Path,
    mimic_root: str | Path | None = None,
    *,
    threshold: int = PRESENT_CERTAINTY,
    require_gaze: bool = True,
) -> ReflacxIndex:
    """Index REFLACX: one record per usable image, exclusions counted by reason and logged by id.

    Args:
        root: the dataset folder (holding ``main_data/``).
        mimic_root: MIMIC-CXR root that the ``image`` column's ``files/...`` part is under
            (default: ``root``, as in the synthetic twin).
        threshold: certainty (1-5) at which a finding is present in a reading.
        require_gaze: drop (and count as ``no_gaze``) images without any reading's fixations.

    Returns:
        ReflacxIndex, records in metadata order (phase 1, 2, 3).

    Raises:
        FileNotFoundError: no metadata file at all. ValueError: a present table lacks required
            columns or is not UTF-8 (the message names the file).
    """
    if not 1 <= threshold <= MAX_CERTAINTY:
        raise ValueError(f"certainty threshold must be in 1..{MAX_CERTAINTY}, got {threshold}")
    root, counts, notes = Path(root), Counter[str](), Notes()
    main = root / MAIN_DATA
    mimic = (Path(mimic_root) if mimic_root is not None else root).resolve()
    sources: list[Path] = []
    rows: list[_Row] = []
    for phase in PHASES:
        path = main / metadata_file(phase)
        if not path.is_file():
            notes.add("missing_phase_files", metadata_file(phase))
            continue
        table = read_csv_checked(path, metadata_required(phase), dtype=str, keep_default_na=False)
        sources.append(path)
        rows += _metadata_rows(table.to_dict("records"), phase, notes)
    if not sources:
        raise FileNotFoundError(f"{main}: no metadata_phase_{{1,2,3}}.csv found")

    groups: dict[str, list[_Row]] = {}
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            notes.add("duplicate_reading_id", row.id)
            continue
        seen.add(row.id)
        groups.setdefault(row.dicom_id, []).append(row)

    records = []
    main_resolved = main.resolve()
    for key, group in groups.items():
        reason, dicom_path = _locate_image(key, group, mimic)
        if reason is not None:
            notes.add(reason, key)
            continue
        readings = tuple(
            _reading(r, main_resolved, threshold, notes, sources)
            for r in sorted(group, key=lambda r: r.id)
        )
        if require_gaze and not any(r.fixations is not None for r in readings):
            notes.add("no_gaze", key)
            continue
        _, subject, split, height, width = group[0].image
        records.append(
            ReflacxRecord(
                key=key,
                patient=subject,
                labels=image_labels(np.stack([r.labels for r in readings])),
                labelled=np.any([labelled_mask(r.phase) for r in readings], axis=0),
                dicom_path=dicom_path,
                split=split,
                image_size=(height, width),
                phase=group[0].phase,
                readings=readings,
            )
        )
    notes.flush(counts, root)
    logger.info(
        "REFLACX index %s: %d images, %d readings kept; counted %s",
        root,
        len(records),
        sum(len(r.readings) for r in records),
        dict(sorted(counts.items())) or "none",
    )
    return ReflacxIndex(tuple(records), dict(counts), tuple(sources), threshold)


def target_ellipses(
    record: ReflacxRecord, threshold: int | None = None, finding: str | None = None
) -> np.ndarray:
    """(E, 4) native boxes of the ellipses, from every reading, that localise the image's present
    findings: certainty >= ``threshold`` (default 3; pass ``index.threshold`` when the index was
    read with another) and flagged for a finding the image's label says is present (or, with
    ``finding``, for that present finding only). Map them with ``localization.boxes_to_grid``."""
    threshold = PRESENT_CERTAINTY if threshold is None else threshold
    wanted = record.labels.astype(bool)
    if finding is not None:
        wanted = wanted & (np.asarray(FINDINGS) == finding)
    boxes = [
        r.ellipses.boxes[
            (r.ellipses.certainty >= threshold) & (r.ellipses.findings & wanted).any(1)
        ]
        for r in record.readings
    ]
    return np.concatenate(boxes) if boxes else np.zeros((0, 4))


def _metadata_rows(table: list[dict[str, str]], phase: int, notes: Notes) -> list[_Row]:
    out = []
    for raw in table:
        rid = raw["id"].strip()
        if not READING_ID[phase].fullmatch(rid):
            notes.add("invalid_reading_id", rid)
            continue
        try:
            out.append(_metadata_row(raw, rid, phase))
        except ValueError:
            notes.add("invalid_metadata_row", rid)
    return out


def _metadata_row(raw: dict[str, str], rid: str, phase: int) -> _Row:
    """One metadata row; ValueError when a field the index needs is unreadable."""
    values = {c: _certainty(raw[c]) for c in graded_columns(phase)}
    flags = {c: parse_flag(raw[c]) for c in boolean_columns(phase)}
    values.update({c: MAX_CERTAINTY * int(v) for c, v in flags.items()})
    size = (int(raw["image_size_y"].strip()), int(raw["image_size_x"].strip()))
    dicom_id, subject = raw["dicom_id"].strip(), raw["subject_id"].strip()
    if min(size) < 1 or not dicom_id or not subject:
        raise ValueError("empty id or non-positive size")
    image = (raw["image"].strip(), subject, raw["split"].strip(), *size)
    other = tuple(s.strip() for s in raw[OTHER].split("|") if s.strip())
    return _Row(
        rid,
        phase,
        dicom_id,
        image,
        parse_flag(raw["eye_tracking_data_discarded"]),
        merge_certainties(phase, values),
        flags.get(QUALITY_ISSUE, False),
        other,
    )


def _certainty(text: str) -> int:
    value = float(text.strip())
    if not 0 <= value <= MAX_CERTAINTY or value != round(value):  # nan and inf fail too
        raise ValueError(f"certainty {text!r} not an integer 0-{MAX_CERTAINTY}")
    return int(value)


def _mimic_relpath(image: str) -> str:
    """The ``files/...`` part of an ``image`` value (after its last ``files`` component), or ''."""
    parts = PurePosixPath(image.replace("\\", "/")).parts
    if image.startswith("/") or "files" not in parts:
        return ""  # absolute, or no MIMIC files/ tree: inside refuses ''
    last = len(parts) - 1 - parts[::-1].index("files")
    return str(PurePosixPath(*parts[last:]))


def _locate_image(key: str, group: list[_Row], mimic: Path) -> tuple[str | None, Path | None]:
    """(exclusion reason or None, the DICOM path) of an image's readings."""
    if any(r.image != group[0].image for r in group):
        return "inconsistent_image_rows", None
    rel = _mimic_relpath(group[0].image[0])
    path = inside(mimic, rel)
    if path is None:
        return "path_outside_mimic_root", None
    if PurePosixPath(rel).name != f"{key}.dcm":
        return "image_not_named_by_dicom_id", None
    return (None, path) if path.is_file() else ("missing_dicom", None)


def _reading(row: _Row, main: Path, threshold: int, notes: Notes, sources: list[Path]) -> Reading:
    folder = inside(main, row.id)  # the id is checked; a symlinked folder must not lead out
    if folder is None:
        notes.add("reading_folder_outside_main_data", row.id)
    fixations = None
    if row.discarded:
        notes.add("gaze_discarded_readings", row.id)
    else:
        fixations = read_fixations(folder / FIXATIONS, row.id, notes, sources) if folder else None
        if fixations is None:
            notes.add("readings_without_fixations", row.id)
    return Reading(
        id=row.id,
        phase=row.phase,
        certainty=row.certainty,
        labels=present(row.certainty, threshold),
        fixations=fixations,
        ellipses=read_ellipses(
            folder / ELLIPSES if folder else None, row.id, row.phase, notes, sources
        ),
        chest_box=read_chest_box(folder / CHEST_BOX if folder else None, row.id, notes, sources),
        gaze_discarded=row.discarded,
        quality_issue=row.quality_issue,
        other=row.other,
    )
