"""Preprocessing cache: content matches the per-image pipeline, reuse without decoding, rebuild on
any input or setting change, undecodable DICOMs become counted exclusions."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pytest

from trainables.data.cache import cache_path, load_or_build
from trainables.data.dicom import letterbox, read_dicom
from trainables.data.egd import read_egd
from trainables.data.heatmaps import native_fixations, static_heatmap

N_CACHED = 10  # images per cache build here: enough for every check, cheap to decode


def _index(cfg):
    index = read_egd(cfg.data_root)
    return dataclasses.replace(index, records=index.records[:N_CACHED])


@pytest.fixture
def cfg(synthetic_cfg, egd_copy, tmp_path):
    return dataclasses.replace(
        synthetic_cfg,
        data_root=str(egd_copy),
        mimic_root=None,
        data_dir=str(tmp_path / "data"),
        image_size=48,
    )


def test_content_matches_the_per_image_pipeline(cfg):
    index = _index(cfg)
    c = load_or_build(index, cfg, progress=False, workers=1)
    assert c.built and c.decoded == N_CACHED and c.rate > 0
    assert c.data.images.shape == (N_CACHED, 48, 48) and c.data.images.dtype == np.uint8
    assert c.data.gaze.shape == (N_CACHED, 48, 48) and c.data.gaze.dtype == np.float16
    assert c.data.keys == [r.key for r in index.records]
    assert c.data.patients == [r.patient for r in index.records]
    np.testing.assert_array_equal(c.data.labels, [r.label for r in index.records])
    rec = index.records[5]
    native = read_dicom(rec.dicom_path)
    image, t = letterbox(native, 48)
    gaze = static_heatmap(
        native_fixations(rec.fixations, rec.pads, native.shape), t, 48, cfg.gaze_sigma
    )
    np.testing.assert_array_equal(c.data.images[5], np.round(image * 255).astype(np.uint8))
    np.testing.assert_allclose(c.data.gaze[5], gaze, atol=1e-3)
    assert np.isclose(c.data.gaze.max(axis=(1, 2)), 1.0, atol=1e-3).all()
    assert c.data.exclusions.get("off_image_fixations", 0) > 0  # the twin glances off the image


def test_reused_without_decoding_and_rebuilt_when_a_dicom_changes(cfg, caplog):
    index = _index(cfg)
    first = load_or_build(index, cfg, progress=False, workers=1)
    # Overwrite a DICOM with garbage of the same size and put its mtime back: its identity is
    # unchanged, so a reload must not decode (decoding garbage would exclude the image).
    victim = index.records[2].dicom_path
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_or_build(_index(cfg), cfg, progress=False, workers=1)
    assert (
        not again.built and again.decoded == 0 and again.data.fingerprint == first.data.fingerprint
    )
    np.testing.assert_array_equal(again.data.images, first.data.images)
    assert again.data.keys == first.data.keys
    # Now the file looks changed (new mtime): rebuilt, and the corrupt DICOM is a named exclusion.
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with caplog.at_level(logging.WARNING, logger="trainables.data.cache"):
        rebuilt = load_or_build(_index(cfg), cfg, progress=False, workers=1)
    assert rebuilt.built and rebuilt.data.fingerprint != first.data.fingerprint
    assert rebuilt.data.exclusions["undecodable_dicom"] == 1
    assert (
        index.records[2].key not in rebuilt.data.keys
        and len(rebuilt.data.keys) == len(first.data.keys) - 1
    )
    assert index.records[2].key in caplog.text and "not a DICOM" in caplog.text
    assert str(victim) not in caplog.text  # logged by dicom_id: the path holds the patient id


@pytest.mark.parametrize(
    "change",
    [
        {"image_size": 32},
        {"image_dtype": "float16"},
        {"gaze_sigma": 60.0},
        {"gaze_weighting": "duration"},
    ],
)
def test_setting_change_builds_a_new_file(cfg, change):
    index = _index(cfg)
    base = load_or_build(index, cfg, progress=False, workers=1)
    other_cfg = dataclasses.replace(cfg, **change)
    other = load_or_build(index, other_cfg, progress=False, workers=1)
    assert other.built and other.data.fingerprint != base.data.fingerprint
    assert cache_path(other_cfg, other.data.fingerprint).is_file()
    assert cache_path(cfg, base.data.fingerprint).is_file()
    if "image_dtype" in change:
        assert (
            other.data.images.dtype == np.float16
            and 0 <= other.data.images.min() <= other.data.images.max() <= 1
        )
        np.testing.assert_allclose(other.data.images * 255, base.data.images, atol=0.6)
    elif "image_size" in change:
        assert other.data.images.shape[1:] == (32, 32)
    else:
        assert not np.array_equal(other.data.gaze, base.data.gaze)


def test_table_change_rebuilds(cfg):
    index = _index(cfg)
    base = load_or_build(index, cfg, progress=False, workers=1)
    fix = os.path.join(cfg.data_root, "fixations.csv")
    os.utime(fix, ns=(os.stat(fix).st_atime_ns, os.stat(fix).st_mtime_ns + 1_000_000))
    assert (
        load_or_build(_index(cfg), cfg, progress=False, workers=1).data.fingerprint
        != base.data.fingerprint
    )


def test_process_pool_gives_the_same_arrays(cfg):
    index = _index(cfg)
    small = dataclasses.replace(index, records=index.records[:4])
    one = load_or_build(small, cfg, progress=False, workers=1)
    os.remove(cache_path(cfg, one.data.fingerprint))
    two = load_or_build(small, cfg, progress=False, workers=2)
    assert two.built
    np.testing.assert_array_equal(one.data.images, two.data.images)
    np.testing.assert_array_equal(one.data.gaze, two.data.gaze)


def test_image_whose_fixations_all_miss_it_is_excluded(cfg, caplog):
    index = _index(cfg)
    rec = index.records[1]
    n = len(rec.fixations)
    off = dataclasses.replace(rec.fixations, fpogx=np.full(n, -0.2), fpogy=np.full(n, 0.5))
    records = list(index.records)
    records[1] = dataclasses.replace(rec, fixations=off)
    with caplog.at_level(logging.WARNING, logger="trainables.data.cache"):
        c = load_or_build(dataclasses.replace(index, records=tuple(records)), cfg, progress=False)
    assert c.data.exclusions["no_fixation_on_image"] == 1 and rec.key not in c.data.keys
    assert c.data.exclusions["off_image_fixations"] >= n and rec.key in caplog.text


def test_script_without_main_guard_still_builds_the_cache(synthetic_cfg, synthetic_root, tmp_path):
    """spawn re-imports an unguarded __main__ and breaks the pool: the build falls back in-process."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(f"""
        import dataclasses
        from trainables.config import DataConfig
        from trainables.data.cache import load_or_build
        from trainables.data.egd import read_egd
        cfg = DataConfig(data_dir={str(tmp_path / "d")!r}, synthetic_images={synthetic_cfg.synthetic_images},
                         data_root={str(synthetic_root)!r}, image_size=32)
        index = read_egd(cfg.data_root)
        content = load_or_build(index, cfg, progress=False, workers=2)
        print("BUILT", content.built, len(content.data.keys))
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert f"BUILT True {synthetic_cfg.synthetic_images}" in out.stdout, out.stderr[-2000:]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path):
    path.write_bytes(b"")


def _bad_crc(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the images member: its CRC-32 no longer matches
    path.write_bytes(bytes(data))


def _garbage_tail(path):
    data = path.read_bytes()
    path.write_bytes(data[:-40] + b"\0" * 40)  # the zip's central directory end is gone


@pytest.mark.parametrize("corrupt", [_truncate, _empty, _bad_crc, _garbage_tail])
def test_a_corrupt_cache_file_is_reported_removed_and_rebuilt(cfg, caplog, corrupt):
    index = _index(cfg)
    first = load_or_build(index, cfg, progress=False, workers=1)
    path = cache_path(cfg, first.data.fingerprint)
    corrupt(path)
    with caplog.at_level(logging.WARNING, logger="trainables.data.cache"):
        healed = load_or_build(index, cfg, progress=False, workers=1)
    assert healed.built and healed.data.fingerprint == first.data.fingerprint
    np.testing.assert_array_equal(healed.data.images, first.data.images)
    np.testing.assert_array_equal(healed.data.gaze, first.data.gaze)
    assert str(path) in caplog.text and "corrupt" in caplog.text
    again = load_or_build(index, cfg, progress=False, workers=1)  # the new file is whole
    assert not again.built
    np.testing.assert_array_equal(again.data.images, first.data.images)
