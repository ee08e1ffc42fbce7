"""``gaze-study predict``: classify one new radiograph with a trained model and draw its maps.

``gaze-study predict --model RUN_OR_PATH --dicom FILE.dcm [--out DIR] [--tracking-uri URI]``
(also ``python -m study.predict ...``)

The model is an MLflow run id (its ``model/model.pt`` is downloaded) or a path to a ``model.pt``
(or to a trial's output folder holding one). The file holds the weights and the TrialConfig they
were trained with, so the model is rebuilt exactly (``trainables.model.build_model``) and loaded
with ``torch.load(weights_only=True)``: tensors and plain containers only, never pickled code.
The image goes through training's preprocessing: ``read_dicom`` (rescale, VOI LUT / window,
MONOCHROME1 inversion), ``letterbox`` to the model's size, and the cache's 8-bit quantisation.
Outputs: the class probabilities as JSON (printed, and ``DIR/<name>.json``) and ``DIR/<name>.png``
with the arm's own generator map (GBP for arms without one) and the decoder map overlaid (the one
panel column order), both for the predicted class as in the trials' evaluation. The JSON's
``doctor`` block gives DOCTOR's D_alpha score of the prediction and, for a model named by the run
id of an arm's best trial, the threshold the study's DOCTOR analysis chose; a prediction above it
is flagged low confidence (``doctor.low_confidence``, a ``warnings`` entry and the PNG's row;
``study.confidence``). A file that cannot be used (a bad DICOM, an
unknown run, a damaged model file, a model file out of range: ``study.model_file``) is one
``error:`` line naming it and exit code 2, before anything large is built.

Outputs are named after the DICOM's file name, inside ``--out`` (``keys.safe_child``); an output
of another DICOM with the same name is never overwritten (refused, naming both). Predict gives a
result for every image it can decode; one whose header says it is not a chest radiograph (a
Modality other than CR/DX, a BodyPartExamined other than CHEST, a lateral view) still gets its
probabilities, with a ``warnings`` entry (and a ``warning:`` line) saying they mean nothing there:
the model was trained on frontal chest films and cannot tell that it is shown something else.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_FILE = "model.pt"


class PredictError(Exception):
    """A clear, user-facing reason the prediction cannot be made (the message names the file)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gaze-study predict",
        description="Classify one DICOM radiograph with a trained model; write the class "
        "probabilities (JSON) and a PNG with the decoder and generator maps overlaid.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="an MLflow run id (downloads its model/model.pt) or a path to a model.pt "
        "(or to a trial's output folder)",
    )
    p.add_argument("--dicom", required=True, type=Path, help="the radiograph (.dcm)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/predict"),
        help="output folder (default: %(default)s)",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow store of the run id (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<project>/mlflow.db)",
    )
    p.add_argument("--device", default="cpu", help="torch device, or 'auto' (default: cpu)")
    return p


def _model_path(spec: str, tracking_uri: str | None, tmp: Path) -> Path:
    """The ``model.pt`` that ``--model`` names (downloaded into ``tmp`` for a run id)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / MODEL_FILE, path / "model" / MODEL_FILE):
            if candidate.is_file():
                return candidate
        raise PredictError(f"{path}: a folder without {MODEL_FILE} or model/{MODEL_FILE}")
    if not RUN_ID.match(spec):
        raise PredictError(
            f"--model {spec}: no such file, and not an MLflow run id (32 hex digits)"
        )
    from trainables.record import MODEL
    from trainables.record.store import (
        StoreUnreachable,
        check_reachable,
        is_local_store,
        resolve_tracking_uri,
        sqlite_path,
        store,
    )

    uri = resolve_tracking_uri(tracking_uri)  # None: $MLFLOW_TRACKING_URI, else the project's
    if is_local_store(uri) and not sqlite_path(uri).is_file():
        raise PredictError(f"no MLflow store at {uri} (pass --tracking-uri)")
    try:
        check_reachable(uri)
        return store(uri).download(spec, MODEL, tmp)
    except (FileNotFoundError, StoreUnreachable) as err:
        raise PredictError(str(err)) from err


def load_model(path: Path, device: str = "cpu"):
    """The model, its TrialConfig and its image size, from a ``model.pt`` (``{"state_dict",
    "config", "image_size"}``).

    Raises:
        PredictError: not loadable with ``weights_only=True``, not such a dict, a config naming an
            unknown arm or field values, or weights that do not fit the model it describes.
    """
    import torch

    from study import model_file
    from trainables.config import TrialConfig
    from trainables.model_sets import get_arm

    try:
        model_file.check_size(path.stat().st_size)
        saved = torch.load(path, map_location=device, weights_only=True)
    except model_file.ModelFileError as err:
        raise PredictError(f"{path}: {err}") from None
    except Exception as err:  # unpickling, zip and storage errors come in many types
        raise PredictError(f"{path}: cannot load as weights ({type(err).__name__}: {err})") from err
    known = {f.name for f in dataclasses.fields(TrialConfig)}
    try:  # structure and ranges first: nothing is walked, printed or built from it unchecked
        cfg = TrialConfig(**model_file.check_saved(saved, known))
        get_arm(cfg.arm)
        image_size = model_file.image_size(saved, cfg.decoder_channels)
        model_file.check_encoder(cfg.encoder)
        task = model_file.task(saved)
    except (KeyError, TypeError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise PredictError(
            f"{path}: its config does not describe a model here ({message})"
        ) from None
    from trainables.model import build_model

    # No pretrained weights: the state dict holds every parameter, and smp would download them.
    model = build_model(cfg.encoder, None, cfg.decoder_channels, task=task)
    model.task = task  # predict names the classes by it
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as err:
        raise PredictError(
            f"{path}: the weights do not fit the model of its config ({err})"
        ) from err
    return model.to(device).eval(), cfg, image_size


def prepare_image(dicom: Path, size: int):
    """The radiograph as training saw it: decoded, letterboxed to ``size``, 8-bit quantised
    (the cache's default ``image_dtype``), as float32 in [0, 1].

    Raises:
        PredictError: the file cannot be decoded (the message names it).
    """
    import numpy as np

    from trainables.data.dicom import DicomError, letterbox, read_dicom

    try:
        native = read_dicom(dicom, name=dicom.name)
    except DicomError as err:
        raise PredictError(str(err)) from err
    image, _ = letterbox(native, size)
    return (np.round(image * 255).astype(np.uint8) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class Prediction:
    """One image through one model."""

    probs: Any  # (K,) float64, in the model's task's class order
    generator: str  # the map drawn besides the decoder's
    maps: dict[str, Any]  # "decoder" (None when the arm trains no decoder) and the generator
    classes: tuple[str, ...]  # the task's, ``probs``' order
    doctor: dict[str, Any] | None = None  # study.confidence.doctor_flag, once a threshold is known
    exclusive: bool = True  # one class per image (softmax), else findings (a sigmoid each)

    def predicted(self) -> str | list[str]:
        """The class (exclusive), or the findings at probability >= ``FINDING_THRESHOLD``, most
        probable first."""
        if self.exclusive:
            return self.classes[int(self.probs.argmax())]
        order = sorted(range(len(self.classes)), key=lambda c: -self.probs[c])
        return [self.classes[c] for c in order if self.probs[c] >= FINDING_THRESHOLD]


FINDING_THRESHOLD = 0.5  # a multi-label model's finding counts as predicted from here


def predict_image(model, cfg, image, device: str = "cpu") -> Prediction:
    """Class probabilities, and the decoder and generator maps for the predicted class (eval
    mode, BatchNorm running statistics, as the trials' test evaluation)."""
    import torch

    from trainables.evaluate import predicted_class_maps
    from trainables.model_sets import get_arm

    arm = get_arm(cfg.arm)
    gen = arm.display_generator
    x = torch.from_numpy(image)[None, None].to(device)
    heat, probs = predicted_class_maps(model, x, (gen,), arm.uses_decoder)
    probs = probs[0]
    maps = {
        gen: heat[gen][0, 0].cpu().numpy(),
        "decoder": heat["decoder"][0, 0].cpu().numpy() if arm.uses_decoder else None,
    }
    task = model.task
    return Prediction(probs.cpu().numpy().astype("float64"), gen, maps, task.classes, exclusive=task.exclusive)  # fmt: skip


def _source_id(dicom: Path) -> str:
    """Which file an output came from: a digest of its bytes, not its path (MIMIC paths name
    patients)."""
    return hashlib.sha256(dicom.read_bytes()).hexdigest()[:16]


def _output_paths(dicom: Path, out_dir: Path) -> tuple[Path, Path]:
    """``<name>.json`` and ``<name>.png`` inside ``out_dir``, refused when they hold the outputs
    of another DICOM with the same file name (two folders' ``1.dcm``)."""
    from trainables.data.keys import UnsafeName, safe_child

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = safe_child(out_dir, f"{dicom.stem}.json")
        png_path = safe_child(out_dir, f"{dicom.stem}.png")
    except (OSError, UnsafeName) as err:
        raise PredictError(f"--out {out_dir}: {err}") from None
    try:
        before = json.loads(json_path.read_text()).get("source") if json_path.exists() else None
    except (OSError, ValueError, AttributeError):  # not one of ours: nothing to protect
        before = None
    if before not in (None, _source_id(dicom)):
        raise PredictError(
            f"{json_path} holds the prediction for another file named {dicom.name}; "
            f"{dicom} would overwrite it: pass another --out"
        )
    return json_path, png_path


def get_arm(name: str):
    from trainables.model_sets import get_arm as lookup

    return lookup(name)


def write_outputs(
    pred: Prediction, image, cfg, dicom: Path, model_spec: str, out_dir: Path
) -> dict[str, Any]:
    """Write ``<name>.json`` and ``<name>.png`` to ``out_dir``; returns the JSON's content.

    ``pred.doctor`` is the DOCTOR block (``study.confidence.doctor_flag``): a low-confidence
    prediction says so in the JSON (``doctor``, ``warnings``) and on the PNG's row.
    """
    flag = pred.doctor or {"low_confidence": None}
    from study.confidence import flag_text
    from trainables.data.dicom import chest_radiograph_notes
    from trainables.panels import PanelRow, ordered_columns, panel_figure, save

    json_path, png_path = _output_paths(dicom, out_dir)
    low = flag_text(flag)
    label = f"arm {cfg.arm}" + (f"; LOW CONFIDENCE (D_alpha {flag['score']:.2f} > {flag['threshold']:.2f})" if low else "")  # fmt: skip
    own = pred.generator if get_arm(cfg.arm).generator != "none" else None
    row = PanelRow(label=label, image=image, maps=pred.maps, probs=pred.probs, classes=pred.classes, own=own)  # fmt: skip
    columns = ordered_columns(("image", pred.generator, "decoder"))
    png = save(panel_figure([row], columns, f"{dicom.name} (model: {cfg.arm})"), png_path)
    result = {
        "dicom": dicom.name,
        "model": model_spec,
        "arm": cfg.arm,
        "image_size": int(image.shape[-1]),
        "predicted": pred.predicted(),
        **({} if pred.exclusive else {"predicted_threshold": FINDING_THRESHOLD}),
        "probabilities": {c: float(p) for c, p in zip(pred.classes, pred.probs, strict=True)},
        "doctor": pred.doctor,
        "maps": {"decoder": pred.maps["decoder"] is not None, "generator": pred.generator},
        "png": str(png),
        "source": _source_id(dicom),
        "warnings": [*chest_radiograph_notes(dicom, dicom.name), *([low] if low else [])],
    }
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gaze-study predict``; returns the exit code (2: a file cannot be used)."""
    args = build_parser().parse_args(argv)
    from study.confidence import doctor_flag, multi_label_flag, study_threshold

    device = args.device
    try:
        if args.out.exists() and not args.out.is_dir():  # before the model loads: it takes seconds
            raise PredictError(f"--out {args.out}: not a folder")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
            model, cfg, size = load_model(
                _model_path(args.model, args.tracking_uri, Path(tmp)), device
            )
        image = prepare_image(args.dicom, size)
        pred = predict_image(model, cfg, image, device)
        is_run = not Path(args.model).exists()  # _model_path took it as a run id
        if pred.exclusive:
            threshold = study_threshold(args.model, args.tracking_uri, is_run)
            pred = dataclasses.replace(pred, doctor=doctor_flag(pred.probs, threshold))
        else:
            pred = dataclasses.replace(pred, doctor=multi_label_flag())
        result = write_outputs(pred, image, cfg, args.dicom, args.model, args.out)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in result["warnings"]:
        print(f"warning: {args.dicom}: {note}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
