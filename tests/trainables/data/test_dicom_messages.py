"""Issue 20, item 9: pydicom's warning for a DICOM truncated inside a sequence quoted the file's
full MIMIC path (``files/p19/p19966443/...``: the patient id). Read through the cache, as the
study does, every message names the image by its key instead."""

from __future__ import annotations

import dataclasses
import logging
import re
import struct
import warnings

import pydicom

from trainables.data.cache import load_or_build
from trainables.data.egd import read_egd

PATIENT_PATH = re.compile(r"p\d+/p\d+")


def _truncate_inside_a_sequence(path) -> None:
    """Append a private element of undefined length (a sequence of items) cut before its end:
    pydicom reaches the end of the file looking for the sequence delimiter."""
    elem = struct.pack("<HH", 0x7FE1, 0x0010) + b"OB\0\0" + b"\xff\xff\xff\xff"
    item = struct.pack("<HH", 0xFFFE, 0xE000) + b"\xff\xff\xff\xff" + b"private item, cut"
    with open(path, "ab") as f:
        f.write(elem + item)


def test_pydicom_messages_name_the_key_not_the_patient_path(
    synthetic_cfg, egd_copy, tmp_path, caplog
):
    index = read_egd(egd_copy)
    explicit = [
        r for r in index.records
        if pydicom.dcmread(r.dicom_path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        == pydicom.uid.ExplicitVRLittleEndian
    ][:3]  # fmt: skip
    target = explicit[0]
    assert PATIENT_PATH.search(str(target.dicom_path))  # the twin keeps MIMIC's layout
    _truncate_inside_a_sequence(target.dicom_path)
    cfg = dataclasses.replace(
        synthetic_cfg, data_root=str(egd_copy), data_dir=str(tmp_path / "d"), image_size=32
    )
    index = dataclasses.replace(index, records=tuple(explicit))
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        content = load_or_build(index, cfg, progress=False, workers=1)
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    pydicom_said = [m for m in said if "End of file reached" in m]
    assert pydicom_said and all(m.startswith(f"{target.key}: ") for m in pydicom_said)
    assert not [m for m in said if PATIENT_PATH.search(m)]
    assert content.data.exclusions.get("undecodable_dicom") == 1
    assert target.key not in content.data.keys and len(content.data.keys) == 2
