"""DICOM decoding against hand-computed DICOM-standard oracles, pydicom's own test files, and the
letterbox transform against a bright dot."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from trainables.data.dicom import DicomError, Transform, letterbox, read_dicom


def _write(
    path: Path,
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    compress: str | None = None,
    **attrs,
) -> Path:
    """Write ``arr`` (rows, cols[, 3]) or (frames, rows, cols) as an uncompressed/compressed DICOM."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    colour = photometric == "RGB"
    frames = arr.ndim == 3 and not colour
    ds.Rows, ds.Columns = arr.shape[-3:-1] if colour else arr.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames:
        ds.NumberOfFrames = arr.shape[0]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if arr.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    if compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def ramp() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (
        (np.linspace(0, 4095, 60 * 50).reshape(60, 50) + rng.integers(0, 5, (60, 50)))
        .clip(0, 4095)
        .astype(np.uint16)
    )


def test_plain_monochrome2_is_min_max_scaled(tmp_path, ramp):
    out = read_dicom(_write(tmp_path / "a.dcm", ramp))
    expected = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    assert out.dtype == np.float32 and out.shape == ramp.shape
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path, ramp):
    m2 = read_dicom(_write(tmp_path / "m2.dcm", ramp))
    m1 = read_dicom(
        _write(tmp_path / "m1.dcm", (4095 - ramp).astype(np.uint16), photometric="MONOCHROME1")
    )
    np.testing.assert_allclose(m1, m2, atol=1e-6)


def test_rescale_then_window_follow_the_dicom_standard(tmp_path, ramp):
    slope, intercept, centre, width = 2.0, -100.0, 4000.0, 5000.0
    out = read_dicom(
        _write(
            tmp_path / "w.dcm",
            ramp,
            bits_stored=16,
            RescaleSlope=slope,
            RescaleIntercept=intercept,
            WindowCenter=centre,
            WindowWidth=width,
        )
    )
    # PS3.3 C.11.2.1.2.1 (LINEAR): y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to [0, 1].
    x = ramp * slope + intercept
    expected = np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    assert expected.min() == 0 and expected.max() == 1  # window clips both ends
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_bit_depths(tmp_path, bits):
    top = 2**bits - 1
    arr = np.linspace(0, top, 40 * 30).reshape(40, 30).round()
    arr = arr.astype(np.uint8 if bits == 8 else np.uint16)
    out = read_dicom(_write(tmp_path / f"b{bits}.dcm", arr, bits_stored=bits))
    np.testing.assert_allclose(out, arr / top, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_lossless_compression_decodes_like_the_uncompressed_file(tmp_path, ramp, syntax):
    plain = read_dicom(_write(tmp_path / "p.dcm", ramp))
    packed_path = _write(tmp_path / "c.dcm", ramp, compress=syntax)
    assert pydicom.dcmread(packed_path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom(packed_path), plain)


def test_jpeg_baseline_decodes(tmp_path):
    grey = np.tile(np.linspace(0, 255, 64), (48, 1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=95)
    path = _write(tmp_path / "j.dcm", grey, bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(read_dicom(path), ref, atol=2 / 255)


def test_rgb_becomes_bt601_grey(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    out = read_dicom(_write(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits_stored=8))
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(out, (luma - luma.min()) / (luma.max() - luma.min()), atol=1e-6)


def test_multiframe_uses_the_first_frame(tmp_path, ramp):
    stack = np.stack([ramp, (4095 - ramp).astype(np.uint16)])
    out = read_dicom(_write(tmp_path / "mf.dcm", stack))
    np.testing.assert_allclose(out, read_dicom(_write(tmp_path / "f0.dcm", ramp)), atol=1e-6)


def test_bad_inputs_raise_dicom_error_naming_the_file(tmp_path, ramp):
    text = tmp_path / "notes.txt"
    text.write_text("not a dicom file")
    truncated = _write(tmp_path / "trunc.dcm", ramp)
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) - 1000])
    wide = _write(tmp_path / "wide.dcm", ramp.astype(np.uint32), bits_stored=32)
    for path in (text, truncated, wide, tmp_path / "absent.dcm", tmp_path):
        with pytest.raises(DicomError, match=str(path)):
            read_dicom(path)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's deliberately odd test files
def test_every_pydicom_test_file_decodes_or_raises_dicom_error():
    files = pydicom.data.get_testdata_files()
    decoded, refused, problems = [], [], []
    for f in files:
        try:
            img = read_dicom(f)
        except DicomError as exc:
            if f not in str(exc):
                problems.append(f"{f}: message does not name the file: {exc}")
            refused.append(f)
            continue
        except Exception as exc:  # noqa: BLE001 - the assertion is that nothing else escapes
            problems.append(f"{f}: {type(exc).__name__} escaped: {exc}")
            continue
        if not (
            img.ndim == 2
            and img.dtype == np.float32
            and np.isfinite(img).all()
            and img.min() >= 0
            and img.max() <= 1
        ):
            problems.append(f"{f}: bad output {img.shape} {img.dtype} [{img.min()}, {img.max()}]")
        decoded.append(Path(f).name)
    assert not problems, "\n".join(problems)
    assert len(decoded) + len(refused) == len(files) > 100
    # Compressed syntaxes go through the installed plugins (JPEG baseline and extended, JPEG-LS,
    # JPEG 2000, RLE); colour (RGB, YBR 4:2:2, palette), multi-frame and big-endian files decode.
    for name in (
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPGExtended.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPEGLSNearLossless_16.dcm",
        "JPEG2000.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "examples_palette.dcm",
        "MR_small_bigendian.dcm",
        "CT_small.dcm",
    ):
        assert name in decoded, f"{name} should decode"


def test_letterbox_pads_centred_and_keeps_aspect():
    img = np.ones((300, 150), dtype=np.float32)
    out, t = letterbox(img, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert t.resized_shape == (64, 32) and (t.offset_x, t.offset_y) == (16, 0)
    np.testing.assert_allclose(out[:, 16:48], 1.0, atol=1e-6)
    assert out[:, :16].max() == 0 and out[:, 48:].max() == 0


def test_bright_dot_lands_on_the_pixel_transform_maps_it_to():
    # 256 x 128 -> 64: scale 1/4 exactly, so a 4 x 4 native dot fills exactly one output pixel.
    img = np.zeros((256, 128), dtype=np.float32)
    img[40:44, 100:104] = 1.0
    out, t = letterbox(img, 64)
    u, v = t.apply(np.array([101.5]), np.array([41.5]))  # the dot's centre
    assert (u[0], v[0]) == (25.0 + t.offset_x, 10.0)
    assert np.unravel_index(out.argmax(), out.shape) == (10, 25 + t.offset_x)
    assert out.max() == pytest.approx(1.0) and (out > 1e-6).sum() == 1


@pytest.mark.parametrize(
    "shape,dot",
    [((300, 200), (40.0, 170.0)), ((180, 420), (150.3, 20.7)), ((257, 257), (128.0, 240.0))],
)
def test_smooth_blob_centroid_lands_where_transform_maps_it(shape, dot):
    # Non-integer scales: area averaging preserves a smooth blob's centroid to a few 1/100 px.
    r, c = dot
    rows, cols = np.indices(shape)
    img = np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 6.0**2)).astype(np.float32)
    out, t = letterbox(img, 64)
    u, v = t.apply(np.array([c]), np.array([r]))
    orow, ocol = np.indices(out.shape)
    cu, cv = (ocol * out).sum() / out.sum(), (orow * out).sum() / out.sum()
    assert abs(cu - u[0]) < 0.05 and abs(cv - v[0]) < 0.05


def test_transform_maps_image_corners_to_the_resized_area():
    t = Transform(scale=0.5, offset_x=10, offset_y=0, native_shape=(200, 100))
    u, v = t.apply(np.array([-0.5, 99.5]), np.array([-0.5, 199.5]))  # outer pixel edges
    np.testing.assert_allclose(u, [10 - 0.5, 10 + 50 - 0.5])
    np.testing.assert_allclose(v, [-0.5, 100 - 0.5])
