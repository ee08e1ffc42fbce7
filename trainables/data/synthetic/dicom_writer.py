"""The twin's DICOM files: MONOCHROME1/2, 12/16/8-bit, rescale, windowing, RLE / JPEG 2000 / JPEG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from trainables.data.synthetic.cases import Case
from trainables.data.synthetic.phantom import render

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _dataset(case: Case, image: np.ndarray, rng: np.random.Generator) -> Dataset:
    transfer, photometric, bits, rescale, window = case.variant
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[case.key])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[case.study])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[case.key, "series"])
    ds.PatientID, ds.StudyID, ds.Modality, ds.ViewPosition = case.patient, case.study, "DX", "PA"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = case.height, case.width, 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits == 8 else 16), bits, bits - 1
    ds.PixelRepresentation = 0
    top = 2**bits - 1
    gain = rng.uniform(0.75, 0.95)
    stored = np.round((rng.uniform(0.01, 0.04) + gain * image) * top).clip(0, top)
    if photometric == "MONOCHROME1":
        stored = top - stored
    stored = stored.astype(np.uint8 if bits == 8 else np.uint16)
    slope, intercept = 1.0, 0.0
    if rescale:
        slope, intercept = float(rng.choice([0.5, 2.0])), float(rng.choice([-1024.0, 512.0]))
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    if window:
        lo, hi = np.percentile(stored[::8, ::8], [1.0, 99.5]) * slope + intercept
        ds.WindowCenter, ds.WindowWidth = round((lo + hi) / 2, 1), round(max(hi - lo, 2.0), 1)
    if transfer == "jpeg8":
        buf = io.BytesIO()
        Image.fromarray(stored).save(buf, format="JPEG", quality=95)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
        return ds
    ds.PixelData = stored.tobytes()
    if transfer == "j2k" and get_encoder(JPEG2000Lossless).is_available:
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif transfer in ("rle", "j2k"):  # no J2K encoder installed: RLE keeps the file compressed
        plugin = "pylibjpeg" if "pylibjpeg" in get_encoder(RLELossless).available_plugins else ""
        ds.compress(RLELossless, encoding_plugin=plugin, generate_instance_uid=False)
    return ds


def write_dicom(
    case: Case, root: Path, rng: np.random.Generator, image: np.ndarray | None = None
) -> Path:
    """Write one case under ``root/files/pXX/pID/sID/<dicom_id>.dcm``: ``image`` (float [0, 1],
    bright = attenuating), or the case rendered with ``rng`` when None."""
    path = root / dicom_relpath(case)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = render(case, rng) if image is None else image
    _dataset(case, pixels, rng).save_as(path, enforce_file_format=True)
    return path


def dicom_relpath(case: Case) -> str:
    return f"files/p{case.patient[:2]}/p{case.patient}/s{case.study}/{case.key}.dcm"
