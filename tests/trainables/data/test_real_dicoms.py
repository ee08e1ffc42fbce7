"""The DICOM reader on real files written elsewhere (``tests/data/real-cxr``, provenance there):
uncompressed DX, JPEG baseline CR, its MONOCHROME1 relabel, and a non-chest film."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainables.data.dicom import chest_radiograph_notes, read_dicom

REAL = Path(__file__).resolve().parents[2] / "data" / "real-cxr"


@pytest.mark.parametrize(
    "name,shape",
    [
        ("nih-dx-1024-uncompressed.dcm", (1024, 1024)),
        ("siim-cr-1024-jpeg-baseline.dcm", (1024, 1024)),
        ("siim-cr-1024-jpeg-baseline-monochrome1.dcm", (1024, 1024)),
        ("abdomen-ot-512-not-chest.dcm", (512, 512)),
    ],
)
def test_real_dicoms_decode_to_grey_images_in_0_1(name, shape):
    image = read_dicom(REAL / name)
    assert image.shape == shape and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0 and image.std() > 0.1


def test_monochrome1_is_shown_inverted():
    mono2 = read_dicom(REAL / "siim-cr-1024-jpeg-baseline.dcm")
    mono1 = read_dicom(REAL / "siim-cr-1024-jpeg-baseline-monochrome1.dcm")
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_only_the_abdomen_film_is_flagged_as_not_a_chest_radiograph():
    notes = chest_radiograph_notes(REAL / "abdomen-ot-512-not-chest.dcm")
    assert notes and notes[0] == "Modality OT is not a radiograph (CR/DX)"
    for name in ("nih-dx-1024-uncompressed.dcm", "siim-cr-1024-jpeg-baseline.dcm"):
        assert chest_radiograph_notes(REAL / name) == []
