"""Issue 20, item 2: a dicom_id becomes a file name and figure text, so the reader checks it.

The three payloads of the report: ``../../escaped_1`` (a path out of the output folder), an id with
``/`` (failed the trial after training) and ``$\\x$`` (matplotlib's ParseFatalException).
"""

from __future__ import annotations

import logging
import os

import pandas as pd
import pytest

from trainables.data.egd import FIXATIONS, MASTER_SHEET, read_egd
from trainables.data.keys import UnsafeName, check_key, is_safe_key, safe_child

PAYLOADS = ("../../escaped_1", "a/b-1111", "$\\x$")


@pytest.mark.parametrize(
    "key", ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "img00", "0", "a.b_c-d", "x" * 128]
)
def test_mimic_and_twin_ids_are_keys(key):
    assert is_safe_key(key) and check_key(key) == key


@pytest.mark.parametrize(
    "key", [*PAYLOADS, "", ".", "..", ".hidden", "-x", "a b", "a\nb", "x" * 129, "\\x", 5, None]
)
def test_anything_else_is_refused_with_the_value_shortened(key):
    assert not is_safe_key(key)
    with pytest.raises(UnsafeName, match="image key") as err:
        check_key(key)
    assert len(str(err.value)) < 140


def test_safe_child_stays_in_its_folder(tmp_path):
    assert safe_child(tmp_path, "k.png") == tmp_path / "k.png"
    assert safe_child(tmp_path, "math$\\nosuchcmd$.json").parent == tmp_path  # odd, not a path
    for name in ("../k.png", "a/b.png", "..", ".", "", "k\0.png", "panel_../../escaped_1.png"):
        with pytest.raises(UnsafeName, match="not a plain file name"):
            safe_child(tmp_path, name)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    os.symlink(outside, tmp_path / "link.png")  # planted: writing link.png would write outside
    with pytest.raises(UnsafeName, match="leads outside"):
        safe_child(tmp_path, "link.png")


def test_unsafe_ids_are_excluded_counted_and_logged_without_paths(egd_copy, caplog, n_images):
    master = pd.read_csv(egd_copy / MASTER_SHEET, dtype=str, keep_default_na=False)
    gaze = pd.read_csv(egd_copy / FIXATIONS, dtype={"DICOM_ID": str})
    for row, payload in enumerate(PAYLOADS, start=2):  # otherwise valid images: gaze follows
        gaze.loc[gaze["DICOM_ID"] == master.loc[row, "dicom_id"], "DICOM_ID"] = payload
        master.loc[row, "dicom_id"] = payload
    master.to_csv(egd_copy / MASTER_SHEET, index=False)
    gaze.to_csv(egd_copy / FIXATIONS, index=False)
    with caplog.at_level(logging.INFO, logger="trainables.data.egd"):
        index = read_egd(egd_copy)
    assert index.exclusions["unsafe_key"] == len(PAYLOADS)
    assert len(index.records) == n_images - len(PAYLOADS)
    assert all(is_safe_key(r.key) for r in index.records)
    # Their gaze rows are theirs, not gaze of ids missing from the master sheet.
    assert "gaze_ids_not_in_master_sheet" not in index.exclusions
    assert "excluded as unsafe_key" in caplog.text and "data rows [3, 4, 5]" in caplog.text
    assert "files/p" not in caplog.text  # MIMIC paths carry the patient id
    assert not any(p in caplog.text for p in PAYLOADS)
