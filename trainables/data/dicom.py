"""DICOM decoding and the aspect-preserving resize shared by images and gaze maps.

The only reader module that imports pydicom (``synthetic.py`` writes DICOMs with it). Decoding does
what the published baseline skipped: modality LUT (rescale slope/intercept), VOI LUT or window,
MONOCHROME1 inversion. Compressed transfer syntaxes go through pydicom's pixel-data decoders (the
pylibjpeg plugins cover JPEG baseline/lossless, JPEG-LS, JPEG 2000 and RLE). Anything it cannot do
raises :class:`DicomError` naming the file, so callers can count the image as excluded.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

logger = logging.getLogger(__name__)

SUPPORTED_BITS_ALLOCATED = (8, 16)  # BitsStored 8..16 inside; 1-bit masks and 32-bit data refused
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as PIL's convert("L")


class DicomError(ValueError):
    """A DICOM file that cannot be turned into a grey image; the message names the file.

    ``detail`` is the reason without the path: MIMIC paths carry the patient id, so the data
    pipeline logs ``detail`` next to the image's dicom_id instead of the message.
    """

    def __init__(self, path: str | Path, detail: str):
        self.path, self.detail = Path(path), detail
        super().__init__(f"{path}: {detail}")

    def __reduce__(self):  # picklable across decoding processes despite the two arguments
        return type(self), (self.path, self.detail)


def read_dicom(path: str | Path, name: str | None = None) -> np.ndarray:
    """Decode a DICOM file into a finite 2-D float32 grey image in [0, 1].

    Steps: first frame only (multi-frame files are rare in CXR and the first frame is the
    acquisition), modality LUT / rescale slope and intercept, VOI LUT or window (the first view),
    per-image min-max scaling to [0, 1] (when the window clips, as CXR windows do, this is exactly
    the window's output range), then MONOCHROME1 inversion so that bone is bright everywhere.
    Colour images (RGB, YBR, palette) are converted to grey with BT.601 luma weights.

    pydicom's own warnings and log records (e.g. "End of file reached ... in file <path>" for a
    file truncated inside a sequence) quote the full path, and MIMIC paths carry the patient id:
    they are held while reading and re-emitted (this module's logger, ``warnings``) naming the
    file by ``name`` instead.

    Args:
        path: the DICOM file.
        name: how messages name the file (the caller's image key); default its base name.

    Returns:
        (rows, columns) float32 array with values in [0, 1].

    Raises:
        DicomError: not a DICOM file, no pixel data, an unsupported bit depth or photometric
            interpretation, a decoder failure, or non-finite output. The message names the file.
    """
    path = Path(path)
    shown = name or path.name
    try:
        with _named_messages(path, shown):
            return _decode(path)
    except DicomError:
        raise
    except Exception as exc:
        # pydicom's decoders and plugins raise many types (ValueError, RuntimeError, KeyError,
        # NotImplementedError, OSError, struct.error...): callers need one type to count exclusions.
        # Decoder messages may quote the path (OSError does): keep only the file name in detail.
        inner = _without_path(str(exc), path, shown)
        raise DicomError(path, f"cannot decode ({type(exc).__name__}: {inner})") from exc


def _without_path(text: str, path: Path, shown: str) -> str:
    for spelling in sorted({str(path), str(path.absolute()), str(path.resolve())}, key=len)[::-1]:
        text = text.replace(spelling, shown)
    return text


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _named_messages(path: Path, shown: str) -> Iterator[None]:
    """Hold pydicom's warnings and log records while reading ``path``, then re-emit each once
    naming the file ``shown`` (pydicom's ``warn_and_log`` sends the same text both ways)."""
    pydicom_log = logging.getLogger("pydicom")
    held, before, caught = _Held(), (pydicom_log.handlers, pydicom_log.propagate), []
    # Only ours while reading: a handler someone added (pydicom.config.debug) would print paths.
    pydicom_log.handlers, pydicom_log.propagate = [held], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # also when decoding fails: what pydicom said before may explain why
        pydicom_log.handlers, pydicom_log.propagate = before
        said = set()
        for w in caught:
            said.add(text := str(w.message))
            warnings.warn(f"{shown}: {_without_path(text, path, shown)}", w.category, stacklevel=3)
        for record in held.records:
            if (text := record.getMessage()) not in said:
                logger.log(record.levelno, "%s: %s", shown, _without_path(text, path, shown))


RADIOGRAPH_MODALITIES = ("CR", "DX")  # computed and digital radiography
_LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT")


def chest_radiograph_notes(path: str | Path, name: str | None = None) -> list[str]:
    """Why the header says ``path`` is not a frontal chest radiograph (empty when it does not).

    Headers only (and only the fields that are there): a film labelled CHEST that shows an
    abdomen passes. Used by predict to flag a prediction that means nothing.
    """
    path = Path(path)
    try:
        with _named_messages(path, name or path.name):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, ValueError, pydicom.errors.InvalidDicomError):  # read_dicom took it: no note
        return []
    notes = []
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        notes.append(f"Modality {modality or 'missing'} is not a radiograph (CR/DX)")
    body = str(ds.get("BodyPartExamined", "")).strip().upper()
    if body and body != "CHEST":
        notes.append(f"BodyPartExamined {body} is not CHEST")
    view = str(ds.get("ViewPosition", "")).strip().upper()
    if view in _LATERAL_VIEWS:
        notes.append(f"ViewPosition {view}: a lateral view (the model saw frontal views)")
    if notes:
        notes.append(
            "the model was trained on frontal chest radiographs: this prediction means nothing"
        )
    return notes


def _decode(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DicomError(path, "not a regular file (missing or a directory)")
    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError as exc:
        raise DicomError(path, f"not a DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise DicomError(path, "no Pixel Data element (7FE0,0010)")
    bits = ds.get("BitsAllocated")
    if bits is None:
        raise DicomError(path, "no BitsAllocated element (0028,0100)")
    if bits not in SUPPORTED_BITS_ALLOCATED:
        raise DicomError(
            path, f"BitsAllocated {bits} not supported (supported: {SUPPORTED_BITS_ALLOCATED})"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    arr = pixel_array(ds, index=0)

    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim != 2:
            raise DicomError(path, f"expected one grey frame, got shape {arr.shape}")
        arr = apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0)
        grey = _min_max(np.asarray(arr, dtype=np.float64))
        if photometric == "MONOCHROME1":
            grey = 1.0 - grey
    elif photometric in ("RGB", "PALETTE COLOR") or photometric.startswith("YBR"):
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        # pydicom returns YBR data converted to RGB by default (and J2K decoders undo ICT/RCT).
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise DicomError(path, f"expected one RGB frame, got shape {arr.shape}")
        grey = _min_max(arr.astype(np.float64) @ _GREY_WEIGHTS)
    else:
        raise DicomError(path, f"PhotometricInterpretation {photometric!r} not supported")

    grey = grey.astype(np.float32)
    if not np.isfinite(grey).all():
        raise DicomError(path, "decoded image has non-finite values")
    return grey


def _min_max(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        return arr  # caught by the finiteness check with the file name
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) / (hi - lo)


@dataclass(frozen=True)
class Transform:
    """Maps native DICOM pixel coordinates onto the letterboxed training grid.

    Pixel centres are at integer coordinates on both grids (native pixel i covers [i - 0.5, i + 0.5]),
    which is the convention of area resizing, so ``apply`` is exact for the resize ``letterbox`` does.

    Attributes:
        scale: training pixels per native pixel (size / longest native side).
        offset_x: zero-padding columns left of the resized image.
        offset_y: zero-padding rows above the resized image.
        native_shape: (rows, columns) of the native image.
    """

    scale: float
    offset_x: int
    offset_y: int
    native_shape: tuple[int, int]

    @property
    def resized_shape(self) -> tuple[int, int]:
        """(rows, columns) the native image occupies on the training grid."""
        h, w = self.native_shape
        return max(1, round(h * self.scale)), max(1, round(w * self.scale))

    def apply(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Native (column, row) coordinates -> training-grid (column, row) coordinates."""
        h, w = self.native_shape
        rh, rw = self.resized_shape
        # Per-axis factors: rounding the resized size makes them differ slightly from `scale`.
        u = (np.asarray(xs, dtype=np.float64) + 0.5) * (rw / w) - 0.5 + self.offset_x
        v = (np.asarray(ys, dtype=np.float64) + 0.5) * (rh / h) - 0.5 + self.offset_y
        return u, v


def letterbox_transform(native_shape: tuple[int, int], size: int) -> Transform:
    """The Transform ``letterbox`` uses for an image of ``native_shape`` and a square ``size``."""
    h, w = int(native_shape[0]), int(native_shape[1])
    if h < 1 or w < 1 or size < 1:
        raise ValueError(f"letterbox: bad native shape {native_shape} or size {size}")
    scale = size / max(h, w)
    probe = Transform(scale, 0, 0, (h, w))
    rh, rw = probe.resized_shape
    return Transform(scale, (size - rw) // 2, (size - rh) // 2, (h, w))


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Transform]:
    """Resize keeping the aspect ratio, then zero-pad (centred) to ``size`` x ``size``.

    Uses PIL's BOX filter on float32 data: exact area averaging with fractional pixel weights
    (torch's ``mode="area"`` uses integer windows), and light enough for decoding worker processes.

    Args:
        image: 2-D float array.
        size: side of the square output.

    Returns:
        (size, size) float32 image and the Transform mapping native coordinates onto it.
    """
    if image.ndim != 2:
        raise ValueError(f"letterbox expects a 2-D image, got shape {image.shape}")
    t = letterbox_transform(image.shape, size)
    rh, rw = t.resized_shape
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize(
        (rw, rh), Image.Resampling.BOX
    )
    out = np.zeros((size, size), dtype=np.float32)
    out[t.offset_y : t.offset_y + rh, t.offset_x : t.offset_x + rw] = np.asarray(resized)
    return out, t
