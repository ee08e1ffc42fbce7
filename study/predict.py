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
with the decoder map and the arm's own generator map (GBP for arms without one) overlaid, both for
the predicted class as in the trials' evaluation. A file that cannot be used (a bad DICOM, an
unknown run, a damaged model file) is one ``error:`` line naming it and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
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

    from trainables.config import TrialConfig
    from trainables.model import build_model
    from trainables.model_sets import get_arm

    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # unpickling, zip and storage errors come in many types
        raise PredictError(f"{path}: cannot load as weights ({type(err).__name__}: {err})") from err
    if not isinstance(saved, dict) or not {"state_dict", "config"} <= set(saved):
        raise PredictError(
            f"{path}: expected a dict with 'state_dict' and 'config' (fit's model.pt)"
        )
    known = {f.name for f in dataclasses.fields(TrialConfig)}
    config: dict[str, Any] = {k: v for k, v in saved["config"].items() if k in known}
    if "decoder_channels" in config:
        config["decoder_channels"] = tuple(config["decoder_channels"])
    try:
        cfg = TrialConfig(**config)
        get_arm(cfg.arm)
    except (KeyError, TypeError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise PredictError(
            f"{path}: its config does not describe a model here ({message})"
        ) from err
    # fit saves the image size beside the config (older files had it inside the config).
    image_size = saved.get("image_size", saved["config"].get("image_size"))
    if not isinstance(image_size, int):
        raise PredictError(f"{path}: no image size recorded (expected fit's model.pt)")
    # No pretrained weights: the state dict holds every parameter, and smp would download them.
    model = build_model(cfg.encoder, None, cfg.decoder_channels)
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
        native = read_dicom(dicom)
    except DicomError as err:
        raise PredictError(str(err)) from err
    image, _ = letterbox(native, size)
    return (np.round(image * 255).astype(np.uint8) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class Prediction:
    """One image through one model."""

    probs: Any  # (3,) float64, CLASSES order
    generator: str  # the map drawn besides the decoder's
    maps: dict[str, Any]  # "decoder" (None when the arm trains no decoder) and the generator


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
    return Prediction(probs.cpu().numpy().astype("float64"), gen, maps)


def write_outputs(
    pred: Prediction, image, cfg, dicom: Path, model_spec: str, out_dir: Path
) -> dict[str, Any]:
    """Write ``<name>.json`` and ``<name>.png`` to ``out_dir``; returns the JSON's content."""
    from trainables.config import CLASSES
    from trainables.panels import PanelRow, panel_figure, save

    out_dir.mkdir(parents=True, exist_ok=True)
    name = dicom.stem
    row = PanelRow(label=f"arm {cfg.arm}", image=image, maps=pred.maps, probs=pred.probs)
    fig = panel_figure(
        [row], ("image", "decoder", pred.generator), f"{dicom.name} (model: {cfg.arm})"
    )
    png = save(fig, out_dir / f"{name}.png")
    result = {
        "dicom": dicom.name,
        "model": model_spec,
        "arm": cfg.arm,
        "image_size": int(image.shape[-1]),
        "predicted": CLASSES[int(pred.probs.argmax())],
        "probabilities": {c: float(p) for c, p in zip(CLASSES, pred.probs, strict=True)},
        "maps": {"decoder": pred.maps["decoder"] is not None, "generator": pred.generator},
        "png": str(png),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gaze-study predict``; returns the exit code (2: a file cannot be used)."""
    args = build_parser().parse_args(argv)
    device = args.device
    try:
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
            model, cfg, size = load_model(
                _model_path(args.model, args.tracking_uri, Path(tmp)), device
            )
        image = prepare_image(args.dicom, size)
        pred = predict_image(model, cfg, image, device)
        result = write_outputs(pred, image, cfg, args.dicom, args.model, args.out)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
