"""Reader for the EGD-CXR layout: one record per image, every exclusion counted and logged.

EGD-CXR (PhysioNet ``egd-cxr`` 1.0.0) ships ``master_sheet.csv`` (labels, patients, display pads,
MIMIC path), ``fixations.csv`` (one row per fixation), ``eye_gaze.csv`` (raw gaze) and
``bounding_boxes.csv``; the DICOMs come from MIMIC-CXR through the ``path`` column. All dataset
quirks live here: the master sheet has quoted newlines (parse with a CSV reader), calibration screens
appear in the gaze files under truncated ids, some gaze ids are not in the master sheet, and the
paper's image list (``filenames.csv``) has a BOM and CRLF line ends.

Images are excluded in this order, each counted once under the first reason it meets:
``unsafe_key`` (a ``dicom_id`` outside ``keys.KEY_RULE``: keys become file names and figure text;
logged by row number only), ``duplicate_master_row``, ``not_in_image_list``, ``label_not_one_hot``, ``invalid_pads``,
``pads_leave_no_image`` (left + right >= 1920 or top + bottom >= 1080), ``no_fixations``, ``path_outside_mimic_root`` (absolute, ``..`` or a symlink leaving the MIMIC root),
``missing_dicom``. Log lines name images by ``dicom_id``, never by path: MIMIC paths
(``files/p10/p10000032/...``) carry the patient id. Row-level counts: ``calibration_rows`` / ``calibration_ids``,
``gaze_rows_not_in_master_sheet`` / ``gaze_ids_not_in_master_sheet``, ``invalid_fixation_rows``,
and ``listed_id_not_found`` (ids of the image list missing from the master sheet).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.data.datasets import task_of
from trainables.data.heatmaps import SCREEN_HEIGHT, SCREEN_WIDTH, Fixations, Pads
from trainables.data.keys import KEY_RULE, UNSAFE_KEY, is_safe_key
from trainables.data.tables import inside, read_csv_checked

logger = logging.getLogger(__name__)
CLASSES = task_of("egd-cxr").classes  # the entry's classes: the master sheet's label columns

MASTER_SHEET = "master_sheet.csv"
FIXATIONS = "fixations.csv"
EYE_GAZE = "eye_gaze.csv"
BOUNDING_BOXES = "bounding_boxes.csv"

# The published headers, in order (master sheet: 59 columns; fixations and eye_gaze: 37).
MASTER_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "path",
    "study_id",
    "patient_id",
    "stay_id",
    "gender",
    "anchor_age",
    "image_top_pad",
    "image_bottom_pad",
    "image_left_pad",
    "image_right_pad",
    *(c for i in range(1, 10) for c in (f"dx{i}", f"dx{i}_icd")),
    "normal_reports",
    "Normal",
    "CHF",
    "pneumonia",
    "consolidation",
    "enlarged_cardiac_silhouette",
    "linear__patchy_atelectasis",
    "lobar__segmental_collapse",
    "not_otherwise_specified_opacity___pleural__parenchymal_opacity__",
    "pleural_effusion_or_thickening",
    "pulmonary_edema__hazy_opacity",
    "normal_anatomically",
    "elevated_hemidiaphragm",
    "hyperaeration",
    "vascular_redistribution",
    *(
        f"{f}__chx"
        for f in (
            "atelectasis",
            "cardiomegaly",
            "consolidation",
            "edema",
            "enlarged_cardiomediastinum",
            "fracture",
            "lung_lesion",
            "lung_opacity",
            "no_finding",
            "pleural_effusion",
            "pleural_other",
            "pneumonia",
            "pneumothorax",
            "support_devices",
        )
    ),
    "cxr_exam_indication",
)
GAZE_COLUMNS: tuple[str, ...] = (
    "SESSION_ID",
    "MEDIA_ID",
    "DICOM_ID",
    "CNT",
    "Time (in secs)",
    "TIMETICK(f=10000000)",
    "FPOGX",
    "FPOGY",
    "FPOGS",
    "FPOGD",
    "FPOGID",
    "FPOGV",
    "BPOGX",
    "BPOGY",
    "BPOGV",
    "LPCX",
    "LPCY",
    "LPD",
    "LPS",
    "LPV",
    "RPCX",
    "RPCY",
    "RPD",
    "RPS",
    "RPV",
    "BKID",
    "BKDUR",
    "BKPMIN",
    "LPMM",
    "LPMMV",
    "RPMM",
    "RPMMV",
    "SACCADE_MAG",
    "SACCADE_DIR",
    "VID_FRAME",
    "X_ORIGINAL",
    "Y_ORIGINAL",
)
BOX_NAMES: tuple[str, ...] = tuple(
    sorted(
        [
            f"{side} {part}"
            for side in ("left", "right")
            for part in (
                "clavicle",
                "costophrenic angle",
                "hilar structures",
                "lower lung zone",
                "lung",
                "mid lung zone",
                "upper lung zone",
            )
        ]
        + ["cardiac silhouette", "trachea", "upper mediastinum"]
    )
)

PAD_COLUMNS = ("image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad")
MASTER_REQUIRED = ("dicom_id", "path", "patient_id", *PAD_COLUMNS, *CLASSES)
FIXATION_COLUMNS = ("FPOGX", "FPOGY", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL")
FIXATION_REQUIRED = ("DICOM_ID", *FIXATION_COLUMNS)
BOUNDING_BOX_COLUMNS = ("dicom_id", "bbox_name", "x1", "x2", "y1", "y2")
CALIBRATION_SUFFIX = 5  # calibration screens use a real dicom_id minus its last 5 characters
_EXAMPLES = 3  # ids named in a log line


@dataclass(frozen=True, eq=False)
class EgdRecord:
    """One image: key, patient, class id, DICOM file, display pads and fixations."""

    key: str  # MIMIC dicom_id
    patient: str  # MIMIC patient_id (for the split only; never logged)
    label: int  # index into the egd-cxr task's classes
    dicom_path: Path
    pads: Pads
    fixations: Fixations


@dataclass(frozen=True)
class EgdIndex:
    """The kept images, the exclusion counts, and the table files they were read from."""

    records: tuple[EgdRecord, ...]
    exclusions: dict[str, int]
    source_files: tuple[Path, ...]  # master sheet, fixations, image list (for the cache key)


def read_image_list(path: str | Path) -> list[str]:
    """Read a ``filenames.csv``-style list (header ``,filename``; BOM and CRLF allowed)."""
    df = read_csv_checked(Path(path), ["filename"], dtype=str, keep_default_na=False)
    return [s.strip() for s in df["filename"] if s.strip()]


def read_bounding_boxes(path: str | Path) -> pd.DataFrame:
    """Read ``bounding_boxes.csv`` (``dicom_id,bbox_name,x1,x2,y1,y2``, native pixels)."""
    return read_csv_checked(
        Path(path), BOUNDING_BOX_COLUMNS, dtype={"dicom_id": str, "bbox_name": str}
    )


def read_egd(
    egd_root: str | Path, mimic_root: str | Path | None = None, image_list: str | Path | None = None
) -> EgdIndex:
    """Index EGD-CXR: one record per usable image, exclusions counted by reason and logged.

    Args:
        egd_root: folder with ``master_sheet.csv`` and ``fixations.csv``.
        mimic_root: MIMIC-CXR root the ``path`` column is relative to (default: ``egd_root``).
        image_list: optional ``filenames.csv``-style list; only listed ids are kept.

    Returns:
        EgdIndex with records in master-sheet order.

    Raises:
        FileNotFoundError / ValueError: a table is missing or lacks required columns.
    """
    egd_root = Path(egd_root)
    mimic_root = Path(mimic_root) if mimic_root is not None else egd_root
    master_path, fix_path = egd_root / MASTER_SHEET, egd_root / FIXATIONS
    counts: Counter[str] = Counter()

    # Everything as text first: ids must not become numbers, and bad numbers are counted below.
    master = read_csv_checked(master_path, MASTER_REQUIRED, dtype=str, keep_default_na=False)
    master["dicom_id"] = master["dicom_id"].str.strip()
    all_ids = set(master["dicom_id"])  # an unsafe id's gaze rows are its own, not foreign ones
    master = _drop_unsafe_keys(master, master_path, counts)
    dup = master["dicom_id"].duplicated()
    _exclude(counts, "duplicate_master_row", master.loc[dup, "dicom_id"], master_path)
    master = master.loc[~dup].reset_index(drop=True)

    gaze = _read_fixations(fix_path, counts)
    gaze_ids = pd.unique(gaze["DICOM_ID"])
    _count_foreign_gaze_ids(
        gaze, [g for g in gaze_ids if g not in all_ids], all_ids, counts, fix_path
    )
    rows_by_id = {
        k: v for k, v in gaze.groupby("DICOM_ID", sort=False).indices.items() if k in all_ids
    }

    sources = [master_path, fix_path]
    if image_list is not None:
        listed = read_image_list(image_list)
        sources.append(Path(image_list))
        listed_set = set(listed)
        _exclude(counts, "listed_id_not_found", sorted(listed_set - all_ids), Path(image_list))
        keep = master["dicom_id"].isin(listed_set)
        _exclude(counts, "not_in_image_list", master.loc[~keep, "dicom_id"], Path(image_list))
        master = master.loc[keep].reset_index(drop=True)

    labels = _one_hot_labels(master, master_path, counts)
    pads = _pads(master, labels, master_path, counts)
    columns = {c: gaze[c].to_numpy(np.float64) for c in FIXATION_COLUMNS}
    records: list[EgdRecord] = []
    no_fix: list[str] = []
    outside: list[str] = []
    missing: list[str] = []
    root = mimic_root.resolve()
    for i, row in enumerate(master[["dicom_id", "patient_id", "path"]].itertuples(index=False)):
        if labels[i] < 0 or pads[i] is None:
            continue
        rows = rows_by_id.get(row.dicom_id)
        if rows is None:
            no_fix.append(row.dicom_id)
            continue
        dicom_path = inside(root, row.path.strip())
        if dicom_path is None:
            outside.append(row.dicom_id)
            continue
        if not dicom_path.is_file():
            missing.append(row.dicom_id)  # the path names the patient: log the id only
            continue
        fix = Fixations(*(columns[c][rows] for c in FIXATION_COLUMNS))
        records.append(
            EgdRecord(
                row.dicom_id, row.patient_id.strip(), int(labels[i]), dicom_path, pads[i], fix
            )
        )
    _exclude(counts, "no_fixations", no_fix, fix_path)
    _exclude(counts, "path_outside_mimic_root", outside, master_path)
    _exclude(counts, "missing_dicom", missing, mimic_root)
    logger.info(
        "EGD-CXR index %s: %d images kept; excluded %s",
        egd_root,
        len(records),
        dict(sorted(counts.items())) or "none",
    )
    return EgdIndex(tuple(records), dict(counts), tuple(sources))


def _drop_unsafe_keys(master: pd.DataFrame, path: Path, counts: Counter[str]) -> pd.DataFrame:
    """The rows whose dicom_id follows ``KEY_RULE``; the others counted and logged by row number
    (the id itself may be a path, mathtext or control characters, of any length)."""
    safe = master["dicom_id"].map(is_safe_key)
    if not safe.all():
        rows = (np.flatnonzero(~safe.to_numpy()) + 1).tolist()
        counts[UNSAFE_KEY] += len(rows)
        logger.warning(
            "%s: %d excluded as %s (dicom_id not %s; data rows %s)",
            path, len(rows), UNSAFE_KEY, KEY_RULE, rows[:_EXAMPLES],
        )  # fmt: skip
    return master.loc[safe].reset_index(drop=True)


def _read_fixations(path: Path, counts: Counter[str]) -> pd.DataFrame:
    gaze = read_csv_checked(
        path,
        FIXATION_REQUIRED,
        usecols=list(FIXATION_REQUIRED),
        dtype={"DICOM_ID": str},
        keep_default_na=False,
    )
    gaze["DICOM_ID"] = gaze["DICOM_ID"].str.strip()
    for c in FIXATION_COLUMNS:
        gaze[c] = pd.to_numeric(gaze[c], errors="coerce")
    bad = gaze[list(FIXATION_COLUMNS)].isna().any(axis=1) | (gaze["DICOM_ID"] == "")
    if bad.any():
        counts["invalid_fixation_rows"] += int(bad.sum())
        logger.warning(
            "%s: %d fixation rows with empty or non-numeric values dropped (lines %s)",
            path,
            int(bad.sum()),
            (np.flatnonzero(bad)[:_EXAMPLES] + 2).tolist(),
        )
    return gaze.loc[~bad].reset_index(drop=True)


def _count_foreign_gaze_ids(
    gaze: pd.DataFrame, foreign: list[str], real_ids: set[str], counts: Counter[str], path: Path
) -> None:
    """Split gaze ids absent from the master sheet into calibration screens and unknown ids."""
    truncated = {k[:-CALIBRATION_SUFFIX] for k in real_ids if len(k) > CALIBRATION_SUFFIX}
    calib = [g for g in foreign if g in truncated]
    unknown = [g for g in foreign if g not in truncated]
    per_id = gaze["DICOM_ID"].value_counts()
    if calib:
        counts["calibration_ids"] += len(calib)
        counts["calibration_rows"] += int(per_id[calib].sum())
        logger.info(
            "%s: %d calibration rows under %d truncated ids dropped (e.g. %s)",
            path,
            counts["calibration_rows"],
            len(calib),
            calib[:_EXAMPLES],
        )
    if unknown:
        counts["gaze_ids_not_in_master_sheet"] += len(unknown)
        counts["gaze_rows_not_in_master_sheet"] += int(per_id[unknown].sum())
        logger.warning(
            "%s: %d gaze ids (%d rows) not in the master sheet dropped (e.g. %s)",
            path,
            len(unknown),
            int(per_id[unknown].sum()),
            unknown[:_EXAMPLES],
        )


def _one_hot_labels(master: pd.DataFrame, path: Path, counts: Counter[str]) -> np.ndarray:
    """Class id per row, or -1 (counted) when Normal/CHF/pneumonia is not exactly one-hot."""
    onehot = master[list(CLASSES)].apply(lambda s: pd.to_numeric(s.str.strip(), errors="coerce"))
    values = onehot.to_numpy(np.float64)
    ok = np.isin(values, (0.0, 1.0)).all(axis=1) & (np.nansum(values, axis=1) == 1)
    _exclude(counts, "label_not_one_hot", master.loc[~ok, "dicom_id"], path)
    return np.where(ok, np.nanargmax(np.nan_to_num(values, nan=-1.0), axis=1), -1)


def _pads(
    master: pd.DataFrame, labels: np.ndarray, path: Path, counts: Counter[str]
) -> list[Pads | None]:
    """Display pads per row, or None when a pad is not a non-negative integer or the pads leave
    no room for the image on the 1920x1080 screen (counted for rows whose label is valid, so no
    image is counted twice)."""
    values = master[list(PAD_COLUMNS)].apply(
        lambda s: pd.to_numeric(s.str.strip(), errors="coerce")
    )
    arr = values.to_numpy(np.float64)
    ok = np.isfinite(arr).all(axis=1) & (arr >= 0).all(axis=1) & (arr == np.round(arr)).all(axis=1)
    _exclude(counts, "invalid_pads", master.loc[~ok & (labels >= 0), "dicom_id"], path)
    # Pads that leave no screen area for the image make the screen-to-image mapping divide by
    # zero or flip sign: the row is wrong, the image cannot be placed.
    top, bottom, left, right = (arr[:, PAD_COLUMNS.index(c)] for c in PAD_COLUMNS)
    fits = (left + right < SCREEN_WIDTH) & (top + bottom < SCREEN_HEIGHT)
    no_room = ok & ~fits
    _exclude(counts, "pads_leave_no_image", master.loc[no_room & (labels >= 0), "dicom_id"], path)
    ok &= fits
    return [Pads(*(int(v) for v in a)) if good else None for a, good in zip(arr, ok, strict=True)]


def _exclude(counts: Counter[str], reason: str, ids: Iterable[str], where: Path) -> None:
    ids = list(ids)
    if ids:
        counts[reason] += len(ids)
        logger.warning("%s: %d excluded as %s (e.g. %s)", where, len(ids), reason, ids[:_EXAMPLES])
