"""A synthetic twin of REFLACX + MIMIC-CXR: the published layout, made-up content.

Run as ``python -m trainables.data.synthetic.reflacx OUT --images N --seed S``. Writes
``main_data/metadata_phase_{1,2,3}.csv`` (one row per reading; both label lists' columns, the
other phase's empty; certainties 0-5, booleans, ``Other`` free text), and per reading
``main_data/<id>/fixations.csv`` (17 columns: zoom / pan, angular resolution, windowing),
``anomaly_location_ellipses.csv``, ``chest_bounding_box.csv``, ``timestamps_transcription.csv`` and
``transcription.txt``; readings with ``eye_tracking_data_discarded`` True (about 1%, in phases 1-2
as in the real data) have only the ellipses and the chest box. Phases 1 and 2 have five readers
per image, phase 3 one (reading ids ``P{phase}{trial:02}R{6 digits}``, ``P300R{6 digits}``). The
DICOMs are written under ``files/pXX/pID/sID/<dicom_id>.dcm`` inside the twin folder, so it is
its own MIMIC root (the ``image`` column names ``physionet.org/files/mimic-cxr/2.0.0/files/...``).
The raw 1000 Hz ``gaze_data/`` is not written (nothing reads it). ``twin.json`` records what was
generated.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from trainables.config import SPLITS
from trainables.data.reflacx import MAIN_DATA, METADATA_COLUMNS, metadata_file
from trainables.data.reflacx_files import (
    BOX_COLUMNS,
    CHEST_BOX,
    ELLIPSE_COLUMNS,
    ELLIPSES,
    FIXATION_COLUMNS,
    FIXATIONS,
)
from trainables.data.reflacx_labels import (
    OTHER,
    PHASE_LABELS,
    QUALITY_ISSUE,
    SUPPORT_DEVICES,
    graded_columns,
)
from trainables.data.split import SplitSpec, patient_split
from trainables.data.synthetic import MANIFEST, MIMIC_LONG_SIDE, SPLIT_FILE
from trainables.data.synthetic.dicom_writer import dicom_relpath, write_dicom
from trainables.data.synthetic.reader import ReaderSpec, add_reader_args, reader_from_args
from trainables.data.synthetic.reflacx_cases import (
    PROFILES,
    TwinImage,
    chest_box,
    drawn_ellipse,
    grade,
    make_images,
    other_text,
    render_image,
)
from trainables.data.synthetic.reflacx_gaze import scan, simulate_reading, thorough, transcription
from trainables.data.synthetic.shortcuts import ShortcutSpec, list_shortcuts, plant

logger = logging.getLogger(__name__)

READERS_PER_MULTI_IMAGE = 5  # phases 1-2: every image read by all five radiologists
MIMIC_PREFIX = "physionet.org/files/mimic-cxr/2.0.0/"
TRANSCRIPT_WORDS = "timestamps_transcription.csv"
TRANSCRIPT = "transcription.txt"
DISCARDED_SHARE = 0.01
SCAN_STREAM = 22  # default_rng([seed, 22, image, reading]): the scanning reader's draws only


def _phase_1_name(finding: str, image: TwinImage) -> str:
    """The phase-1 column a merged finding is graded under: the twin's larger nodules (radius
    above 0.04 chest units) are masses, its pleural findings effusions."""
    if finding == "Lung nodule or mass":
        return "Mass" if image.nodule is not None and image.nodule[2] > 0.04 else "Nodule"
    return {"Pleural abnormality": "Pleural effusion"}.get(finding, finding)


def _read_image(image: TwinImage, profile_index: int, rng: np.random.Generator) -> dict:
    """One radiologist's labels, ellipses and chest box for an image."""
    profile = PROFILES[profile_index]
    shape = (image.case.height, image.case.width)
    labels = {c: 0 for c in graded_columns(image.phase)}
    ellipses, grades = [], []
    for finding in image.findings:
        column = _phase_1_name(finding.name, image) if image.phase == 1 else finding.name
        certainty = grade(finding, profile, rng)
        grades.append((column, certainty))
        labels[column] = max(labels[column], certainty)
        if certainty > 0:  # every selected label is drawn (the published protocol)
            ellipses += [(drawn_ellipse(b, shape, rng), certainty, column) for b in finding.boxes]
    device = image.device if rng.random() < 0.97 else not image.device
    labels[SUPPORT_DEVICES] = str(bool(device))
    if image.phase == 1:
        labels[QUALITY_ISSUE] = str(bool(rng.random() < 0.05))
    labels[OTHER] = other_text(rng)
    return {
        "profile": profile,
        "labels": labels,
        "grades": grades,
        "ellipses": ellipses,
        "chest_box": chest_box(image.case, rng),
    }


def _write_csv(path: Path, header: tuple[str, ...] | list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _write_reading(
    folder: Path,
    image: TwinImage,
    reading: dict,
    rng: np.random.Generator,
    reader: ReaderSpec | None = None,
    scan_rng: np.random.Generator | None = None,
) -> int:
    """The reading's folder; returns its number of fixation rows (0 when gaze is discarded).
    ``reader`` (not the default) changes how the reading's radiologist looks: thoroughness scales
    the profile, scanning moves fixations with draws from ``scan_rng`` only."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = PHASE_LABELS[image.phase]
    rows = [
        [*box, certainty, *(str(c == column) for c in columns)]
        for box, certainty, column in reading["ellipses"]
    ]
    _write_csv(folder / ELLIPSES, (*ELLIPSE_COLUMNS, *columns), rows)
    _write_csv(folder / CHEST_BOX, BOX_COLUMNS, [list(reading["chest_box"])])
    if reading["discarded"]:
        return 0
    targets = [box for box, _, _ in reading["ellipses"]]
    profile = reading["profile"] if reader is None else thorough(reading["profile"], reader)
    fix = simulate_reading(image, profile, targets, rng)
    if reader is not None and reader.scanning_share > 0:
        shape = (image.case.height, image.case.width)
        fix = scan(fix, reader.scanning_share, shape, scan_rng)
    table = np.column_stack([fix[c] for c in FIXATION_COLUMNS]).tolist()  # floats, as published
    _write_csv(folder / FIXATIONS, FIXATION_COLUMNS, table)
    start, end = fix["timestamp_start_fixation"][0], fix["timestamp_end_fixation"][-1]
    text, words = transcription(reading["grades"], start, end)
    _write_csv(
        folder / TRANSCRIPT_WORDS, ("word", "timestamp_start_word", "timestamp_end_word"), words
    )
    (folder / TRANSCRIPT).write_text(text + "\n", encoding="utf-8")
    return len(fix["x_position"])


def _metadata_row(rid: str, image: TwinImage, reading: dict) -> list:
    case = image.case
    base = {
        "id": rid,
        "split": image.split,
        "eye_tracking_data_discarded": str(reading["discarded"]),
        "image": MIMIC_PREFIX + dicom_relpath(case),
        "dicom_id": case.key,
        "subject_id": case.patient,
        "image_size_x": case.width,
        "image_size_y": case.height,
    }
    values = {**base, **reading["labels"]}
    return [values.get(c, "") for c in METADATA_COLUMNS]  # the other phase's columns stay empty


def _reading_ids(images: list[TwinImage], rng: np.random.Generator) -> list[list[str]]:
    """Per image its reading ids: ``P{phase}{trial:02}R{6 digits}`` (trial = the reader, 1-5)
    in phases 1-2, ``P300R{6 digits}`` in phase 3; the 6 digits are unique across the twin."""
    counts = [READERS_PER_MULTI_IMAGE if im.phase < 3 else 1 for im in images]
    numbers = iter(rng.choice(10**6, size=sum(counts), replace=False))
    ids = []
    for image, k in zip(images, counts, strict=True):
        prefixes = [f"P{image.phase}{r + 1:02d}" for r in range(k)] if k > 1 else ["P300"]
        ids.append([f"{p}R{next(numbers):06d}" for p in prefixes])
    return ids


def _split_and_codes(
    images: list[TwinImage], shortcut: ShortcutSpec | None, split: SplitSpec, seed: int
) -> tuple[list[str], list[int | None]]:
    """The twin's patient split (per image: train / val / test; ``split.csv``, which training
    uses, so a clean twin and its shortcut twin are split alike) and each image's shortcut code
    (None without a shortcut). The code is the phantom's class (normal, heart failure,
    pneumonia), which the findings follow, so the shortcut predicts them as it predicts
    EGD-CXR's classes; the split is stratified by it too."""
    labels = np.array([im.case.label for im in images])
    patients = [im.case.patient for im in images]
    if len(set(patients)) < len(SPLITS):
        if shortcut is not None:
            raise ValueError(f"a shortcut twin needs >= {len(SPLITS)} patients to split, got {len(set(patients))}")  # fmt: skip
        return ["train"] * len(images), [None] * len(images)
    assigned = patient_split(labels, patients, seed=split.seed, fractions=split.fractions)
    splits = [SPLITS[k] for k in assigned]
    if shortcut is None:
        return splits, [None] * len(images)
    codes = [
        shortcut.code(int(label), sp, np.random.default_rng([seed, 14, i]))
        for i, (label, sp) in enumerate(zip(labels, splits, strict=True))
    ]
    return splits, codes


def write_reflacx_twin(
    out: str | Path,
    n_images: int = 40,
    seed: int = 0,
    *,
    multi_reader_images: int | None = None,
    shortcut: ShortcutSpec | None = None,
    split: SplitSpec | None = None,
    reader: ReaderSpec | None = None,
) -> dict[str, object]:
    """Write the REFLACX twin into ``out`` (created; existing files are overwritten).

    Args:
        out: folder to write (REFLACX layout, and its own MIMIC-CXR root).
        n_images: number of images (>= 2).
        seed: everything drawn follows from it; the same seed gives the same files.
        multi_reader_images: images of phases 1-2 (five readers each; default 4% of the images,
            at least 2, as REFLACX's 109 of 2,616); the rest are phase 3 (one reader).
        shortcut: a planted class-correlated shortcut (``shortcuts.ShortcutSpec``) drawn on the
            images of the twin's split (the test images are where it breaks); the gaze, the
            labels and every other pixel stay as without it.
        split: the twin's patient split, written to ``split.csv`` (default seed 0, the default
            fractions).
        reader: every radiologist's scanning share and thoroughness (``reader.ReaderSpec``, as
            for the EGD twin; each reader keeps its own habits besides); None or the default
            spec writes the twin as without it, byte for byte.

    Returns:
        images, readings, readings per phase, multi_reader_images, discarded, fixation_rows,
        seconds.
    """
    n_multi = (
        max(2, round(n_images * 109 / 2616)) if multi_reader_images is None else multi_reader_images
    )
    if n_images < 2 or not 0 <= n_multi < n_images:
        raise ValueError(
            f"need n_images >= 2 and 0 <= multi_reader_images < n_images, got {n_images}, {n_multi}"
        )
    reader = None if reader is None or reader.is_default() else reader
    t0 = time.perf_counter()
    out = Path(out)
    (out / MAIN_DATA).mkdir(parents=True, exist_ok=True)
    images = make_images(n_images, n_multi, seed)
    ids = _reading_ids(images, np.random.default_rng([seed, 20]))
    multi = [rid for im, group in zip(images, ids, strict=True) if im.phase < 3 for rid in group]
    n_discarded = max(1, round(DISCARDED_SHARE * sum(map(len, ids)))) if multi else 0
    chosen = np.random.default_rng([seed, 21]).permutation(len(multi))[:n_discarded]
    discarded = {multi[k] for k in chosen}
    metadata: dict[int, list[list]] = {1: [], 2: [], 3: []}
    fixation_rows = 0
    split = split or SplitSpec()
    splits, codes = _split_and_codes(images, shortcut, split, seed)
    for i, (image, group) in enumerate(zip(images, ids, strict=True)):
        pixels = np.random.default_rng([seed, 12, i])
        drawn = render_image(image, pixels)
        if codes[i] is not None:
            drawn = plant(drawn, shortcut.kind, codes[i], np.random.default_rng([seed, 15, i]))
        write_dicom(image.case, out, pixels, image=drawn)
        for r, rid in enumerate(group):
            rng = np.random.default_rng([seed, 13, i, r])
            profile = r if image.phase < 3 else int(rng.integers(len(PROFILES)))
            reading = _read_image(image, profile, rng) | {"discarded": rid in discarded}
            scan_rng = (
                np.random.default_rng([seed, SCAN_STREAM, i, r]) if reader is not None else None
            )
            fixation_rows += _write_reading(
                out / MAIN_DATA / rid, image, reading, rng, reader, scan_rng
            )
            metadata[image.phase].append(_metadata_row(rid, image, reading))
    for phase, rows in metadata.items():
        _write_csv(out / MAIN_DATA / metadata_file(phase), METADATA_COLUMNS, rows)
    per_phase = {p: len(rows) for p, rows in metadata.items()}
    manifest = {
        "generator": "trainables.data.synthetic.reflacx",
        "images": n_images,
        "multi_reader_images": n_multi,
        "readers_per_multi_reader_image": READERS_PER_MULTI_IMAGE,
        "readings": sum(per_phase.values()),
        "readings_per_phase": per_phase,
        "discarded_readings": sorted(discarded),
        "seed": seed,
        "reader_profiles": [p.name for p in PROFILES],
        "mimic_root": ".",  # the DICOMs are under files/ in this folder
        # Twin pixels per MIMIC-CXR pixel (angular resolutions are in twin pixels already).
        "pixel_scale": float(
            np.mean([max(im.case.height, im.case.width) for im in images]) / MIMIC_LONG_SIDE
        ),
    }
    _write_csv(out / SPLIT_FILE, ("dicom_id", "split"), [[im.case.key, sp] for im, sp in zip(images, splits, strict=True)])  # fmt: skip
    manifest |= {
        "split_file": SPLIT_FILE,
        "split_seed": split.seed,
        "split_fractions": list(split.fractions),
    }
    if reader is not None:
        manifest["reader"] = dataclasses.asdict(reader)
    if shortcut is not None:
        manifest |= {
            "shortcut": dataclasses.asdict(shortcut),
            "shortcut_images": {
                s: sum(c is not None for c, sp in zip(codes, splits, strict=True) if sp == s)
                for s in SPLITS
            },
        }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    stats = {
        "images": n_images,
        "readings": manifest["readings"],
        "readings_per_phase": per_phase,
        "multi_reader_images": n_multi,
        "discarded": len(discarded),
        "shortcut_images": sum(c is not None for c in codes),
        "fixation_rows": fixation_rows,
        "seconds": time.perf_counter() - t0,
    }
    logger.info("synthetic REFLACX twin in %s: %s", out, stats)
    return stats


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m trainables.data.synthetic.reflacx OUT --images N --seed S``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (REFLACX and MIMIC layout)")
    parser.add_argument("--images", type=int, default=40, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--multi-reader-images", type=int, default=None, help="phase 1-2 images (5 readers each)"
    )
    parser.add_argument("--shortcut", choices=list_shortcuts(), default=None, help="plant a class-correlated shortcut")  # fmt: skip
    parser.add_argument("--shortcut-fraction", type=float, default=0.9, help="train/val images carrying it")  # fmt: skip
    parser.add_argument("--shortcut-test", choices=("absent", "shuffled"), default="absent", help="test images: none, or a random class's")  # fmt: skip
    add_reader_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stats = write_reflacx_twin(
        args.out, args.images, args.seed, multi_reader_images=args.multi_reader_images,
        shortcut=ShortcutSpec(args.shortcut, args.shortcut_fraction, args.shortcut_test) if args.shortcut else None,
        reader=reader_from_args(args),
    )  # fmt: skip
    print(
        f"wrote {stats['images']} images, {stats['readings']} readings "
        f"({stats['discarded']} with gaze discarded) to {args.out} in {stats['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
