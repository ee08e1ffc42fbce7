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
Simulated fixations survey the chest and dwell on the findings; calibration screens are one centred
dot, and X_ORIGINAL/Y_ORIGINAL are written exactly as EGD-CXR's published mapping writes them. The
reader treats this folder exactly like the real dataset.

Beyond the dataset: ``split.csv`` (the patient split), ``twin.json`` (size, seed, pixel scale
relative to MIMIC-CXR, shortcut) and, optionally, a planted class-correlated shortcut
(``--shortcut marker|intensity|border``, :mod:`trainables.data.synthetic.shortcuts`), and a more
realistic reader (``--scanning-share S --thoroughness T``, :mod:`trainables.data.synthetic.reader`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.config import SPLITS
from trainables.data.split import SplitSpec, patient_split
from trainables.data.synthetic.boxes import bounding_boxes
from trainables.data.synthetic.cases import Case, make_cases, master_rows
from trainables.data.synthetic.dicom_writer import dicom_relpath, write_dicom
from trainables.data.synthetic.gaze import display_pads, gaze_tables
from trainables.data.synthetic.phantom import render
from trainables.data.synthetic.reader import ReaderSpec, add_reader_args, reader_from_args
from trainables.data.synthetic.shortcuts import ShortcutSpec, list_shortcuts, plant

__all__ = [
    "MANIFEST",
    "Case",
    "ReaderSpec",
    "ShortcutSpec",
    "bounding_boxes",
    "dicom_relpath",
    "gaze_tables",
    "main",
    "make_cases",
    "master_rows",
    "read_manifest",
    "render",
    "write_dicom",
    "write_synthetic",
]

logger = logging.getLogger(__name__)

MANIFEST = "twin.json"
SPLIT_FILE = "split.csv"
MIMIC_LONG_SIDE = 3000  # MIMIC-CXR DICOMs are mostly 2544 x 3056 (either way round)


def write_synthetic(
    out: str | Path,
    n_images: int = 300,
    seed: int = 0,
    *,
    shortcut: ShortcutSpec | None = None,
    reader: ReaderSpec | None = None,
    split: SplitSpec | None = None,
) -> dict[str, float]:
    """Write the whole twin into ``out`` (created; existing files are overwritten).

    Besides the EGD-CXR files it writes ``split.csv`` (the patient-level split, ``split``),
    and ``twin.json`` (what was generated: size, seed, the pixel scale relative to MIMIC-CXR, the
    shortcut, and the reader when not the default). With ``shortcut`` the images of the train and
    validation splits carry it as the spec says and the test images do not (or carry a random
    class's); every other pixel, and the gaze, is identical to the twin without it (the shortcut
    draws from its own random stream). With a non-default ``reader`` only the gaze files change
    (:mod:`trainables.data.synthetic.reader`; its own streams too): the images are the same.

    Args:
        out: folder to write.
        n_images: number of images (balanced classes).
        seed: everything drawn follows from it; the same seed gives the same files.
        shortcut: a planted class-correlated shortcut (``shortcuts.ShortcutSpec``), or None.
        reader: how the simulated radiologist reads (``reader.ReaderSpec``); None or the default
            spec writes the default readings.
        split: the patient split the shortcut follows (and ``split.csv`` records); None: seed 0,
            80/10/10.

    Returns:
        counts and timing: images, fixation_rows, calibration_rows, shortcut_images, seconds.
    """
    if n_images < 3:
        raise ValueError(f"the synthetic twin needs at least 3 images, got {n_images}")
    t0 = time.perf_counter()
    split = split or SplitSpec()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    cases = make_cases(n_images, seed)
    master = master_rows(
        cases, [dicom_relpath(c) for c in cases], [display_pads(c) for c in cases], rng
    )
    master.to_csv(out / "master_sheet.csv", index=False)
    fixations, dense = gaze_tables(cases, rng, reader, seed)
    fixations.to_csv(out / "fixations.csv", index=False)
    dense.to_csv(out / "eye_gaze.csv", index=False)
    bounding_boxes(cases).to_csv(out / "bounding_boxes.csv", index=False)
    patients = {c.patient for c in cases}
    if len(patients) >= len(SPLITS):
        assigned = patient_split(
            np.array([c.label for c in cases]),
            [c.patient for c in cases],
            seed=split.seed,
            fractions=split.fractions,
        )
        splits = [SPLITS[s] for s in assigned]
    elif shortcut is None:
        splits = ["train"] * len(cases)  # too few patients to split; nothing depends on it
    else:
        raise ValueError(
            f"a shortcut twin needs >= {len(SPLITS)} patients to split, got {len(patients)}"
        )
    codes: list[int | None] = []
    # One process on purpose: spawned workers re-import pandas/pydicom, and on the 2-core dev
    # machine 300 images took 21 s with 2 workers against 12 s with one.
    for i, case in enumerate(cases):
        draw = np.random.default_rng([seed, 2, i])  # one stream per image
        image = render(case, draw)
        code = None
        if shortcut is not None:
            own = np.random.default_rng([seed, 3, i])  # the shortcut's stream: pixels stay paired
            code = shortcut.code(case.label, splits[i], own)
            image = plant(image, shortcut.kind, code, own)
        codes.append(code)
        write_dicom(case, out, draw, image=image)
    pd.DataFrame({"dicom_id": [c.key for c in cases], "split": splits}).to_csv(
        out / SPLIT_FILE, index=False
    )
    calib = int((~fixations["DICOM_ID"].isin([c.key for c in cases])).sum())
    manifest = {
        "generator": "trainables.data.synthetic",
        "images": n_images,
        "seed": seed,
        "split_seed": split.seed,
        "split_fractions": list(split.fractions),
        "split_file": SPLIT_FILE,
        # Twin pixels per MIMIC-CXR pixel: the twin's images are about a third of MIMIC's size,
        # so sizes given in MIMIC pixels (the published gaze sigma of 150) are scaled by this.
        "pixel_scale": float(np.mean([max(c.height, c.width) for c in cases]) / MIMIC_LONG_SIDE),
        "shortcut": dataclasses.asdict(shortcut) if shortcut else None,
        "shortcut_images": {
            s: int(sum(code is not None for code, sp in zip(codes, splits) if sp == s))
            for s in SPLITS
        },
    }
    if reader is not None and not reader.is_default():  # the default twin.json stays as it was
        manifest["reader"] = dataclasses.asdict(reader)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    stats = {
        "images": n_images,
        "fixation_rows": len(fixations),
        "calibration_rows": calib,
        "shortcut_images": sum(c is not None for c in codes),
        "seconds": time.perf_counter() - t0,
    }
    logger.info("synthetic EGD-CXR twin in %s: %s", out, stats)
    return stats


def read_manifest(root: str | Path) -> dict | None:
    """The ``twin.json`` of a twin folder, or None for a folder that is not a twin (real data)."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m trainables.data.synthetic OUT --images N --seed S``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (EGD-CXR and MIMIC layout)")
    parser.add_argument("--images", type=int, default=300, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--shortcut",
        choices=list_shortcuts(),
        help="plant a class-correlated shortcut of this kind",
    )
    parser.add_argument(
        "--shortcut-fraction", type=float, default=0.9, help="train/val images carrying it"
    )
    parser.add_argument(
        "--shortcut-test", choices=("absent", "shuffled"), default="absent",
        help="test images: no shortcut, or a random class's",
    )  # fmt: skip
    add_reader_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = (
        ShortcutSpec(args.shortcut, args.shortcut_fraction, args.shortcut_test)
        if args.shortcut
        else None
    )
    reader = reader_from_args(args)
    stats = write_synthetic(args.out, args.images, args.seed, shortcut=spec, reader=reader)
    print(
        f"wrote {stats['images']} images, {stats['fixation_rows']} fixation rows "
        f"({stats['calibration_rows']} calibration) to {args.out} in {stats['seconds']:.1f} s"
    )
