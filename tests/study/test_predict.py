"""``gaze-study predict``: a tiny model trained one epoch on the synthetic twin, then one new
DICOM through it, from a model.pt path and from an MLflow run id; bad inputs give exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from pydicom.data import get_testdata_file

from study import cli, predict
from tests.study.conftest import PROJECT_DIR, tiny_trial
from tests.tiny import egd_task
from trainables.data.prepare import synthetic_root
from trainables.fit import fit

CLASSES = egd_task().classes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # sqlalchemy, inside mlflow


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    fit(tiny_trial(arm="set3-gbp", epochs=1), tiny_data, out, log=lambda _: None)
    return out / "model" / "model.pt"


@pytest.fixture(scope="module")
def test_image(tiny_data, data_config):
    """A test-split image of the twin: its DICOM file and the cached tensor training saw."""
    i = int(tiny_data.indices("test")[0])
    key = tiny_data.keys[i]
    (dicom,) = synthetic_root(data_config).rglob(f"{key}.dcm")
    return dicom, tiny_data.images[i].astype(np.float32) / 255.0


def _model_probs(model_pt, image: np.ndarray) -> np.ndarray:
    model, _, _ = predict.load_model(model_pt)
    with torch.no_grad():
        logits = model.classify(torch.from_numpy(image)[None, None])
    return torch.softmax(logits, dim=1)[0].numpy()


def test_predict_from_model_file_matches_the_training_pipeline(
    trained, test_image, tmp_path, capsys
):
    dicom, cached = test_image
    out = tmp_path / "out"
    assert predict.main(["--model", str(trained), "--dicom", str(dicom), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / f"{dicom.stem}.json").read_text())
    assert printed == saved
    probs = np.array([saved["probabilities"][c] for c in CLASSES])
    # Same decoding, letterbox and 8-bit quantisation as the cache: the probabilities of the
    # cached training tensor of this image, to float precision.
    np.testing.assert_allclose(probs, _model_probs(trained, cached), atol=1e-5)
    assert probs.sum() == pytest.approx(1.0) and saved["predicted"] == CLASSES[int(probs.argmax())]
    assert saved["arm"] == "set3-gbp" and saved["maps"] == {"decoder": True, "generator": "gbp"}
    assert list(saved)[:7] == ["dicom", "model", "arm", "image_size", "predicted", "probabilities", "doctor"]  # fmt: skip
    png = Image.open(out / f"{dicom.stem}.png")
    assert float(png.text["min_font_px"]) >= 10 and png.size[0] <= 1200
    assert png.text["layout_problems"] == ""
    pixels = np.asarray(png.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10  # not blank: the radiograph and two coloured overlays


def test_predict_from_an_mlflow_run_via_the_gaze_study_command(
    trained, test_image, tmp_path, capsys
):
    dicom, cached = test_image
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("p", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    client.log_artifact(run, str(trained), "model")
    argv = ["predict", "--model", run, "--tracking-uri", uri, "--dicom", str(dicom)]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    probs = json.loads(capsys.readouterr().out)["probabilities"]
    np.testing.assert_allclose(
        [probs[c] for c in CLASSES], _model_probs(trained, cached), atol=1e-5
    )
    # A run id the store does not have, and a run without a model.
    other = client.create_run(exp).info.run_id
    for model, message in (("0" * 32, "no MLflow run"), (other, "has no artifact model/model.pt")):
        argv = ["predict", "--model", model, "--tracking-uri", uri, "--dicom", str(dicom)]
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err


def test_bad_dicoms_are_one_error_line_naming_the_file(trained, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\x00" * 64 + b"not a dicom at all" * 10)
    no_pixels = get_testdata_file("rtplan.dcm")  # a real DICOM without Pixel Data
    for path, reason in ((corrupt, "not a DICOM file"), (no_pixels, "no Pixel Data")):
        argv = ["--model", str(trained), "--dicom", str(path), "--out", str(tmp_path)]
        assert predict.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {path}:") and reason in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))


class _Payload:  # not a tensor or a plain container: weights_only must refuse it
    pass


def test_model_files_that_are_not_plain_weights_are_refused(test_image, tmp_path, capsys):
    planted = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "config": {}, "payload": _Payload()}, planted)
    dicom, _ = test_image
    assert predict.main(["--model", str(planted), "--dicom", str(dicom)]) == 2
    assert f"error: {planted}: cannot load as weights" in capsys.readouterr().err
    assert predict.main(["--model", "nonsense", "--dicom", str(dicom)]) == 2
    assert "no such file, and not an MLflow run id" in capsys.readouterr().err
    unknown_arm = tmp_path / "unknown_arm.pt"
    torch.save({"state_dict": {}, "config": {"arm": "set9-magic"}}, unknown_arm)
    assert predict.main(["--model", str(unknown_arm), "--dicom", str(dicom)]) == 2
    err = capsys.readouterr().err
    assert f"error: {unknown_arm}: its config does not describe" in err and "set9-magic" in err


def test_real_cli_bad_dicom_and_help_without_torch(trained, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"garbage")
    cmd = [sys.executable, "-m", "study", "predict", "--model", str(trained), "--dicom", str(bad)]
    done = subprocess.run(
        cmd, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {bad}:")
    probe = (
        "import sys\nfrom study.cli import main\ntry:\n    main(['predict', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0\nprint(sorted(m for m in ('torch', "
        "'mlflow', 'ray') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert "--dicom" in done.stdout and done.stdout.strip().endswith("[]")


def _d_alpha(probs: dict[str, float]) -> float:
    g = sum(p * p for p in probs.values())
    return (1 - g) / g


def test_a_model_file_gets_the_doctor_score_and_says_why_there_is_no_threshold(
    trained, test_image, tmp_path, capsys
):
    dicom, _ = test_image
    assert predict.main(["--model", str(trained), "--dicom", str(dicom), "--out", str(tmp_path)]) == 0  # fmt: skip
    doctor = json.loads(capsys.readouterr().out)["doctor"]
    saved = json.loads((tmp_path / f"{dicom.stem}.json").read_text())
    assert doctor == saved["doctor"] and doctor["detector"] == "d_alpha"
    assert doctor["score"] == pytest.approx(_d_alpha(saved["probabilities"]))
    assert doctor["threshold"] is None and doctor["low_confidence"] is None
    assert "given as a file" in doctor["threshold_source"]


def test_a_best_run_is_flagged_by_its_studys_doctor_threshold(
    trained, test_image, tmp_path, capsys
):
    """The run of an arm's best trial finds the threshold the study's DOCTOR analysis chose
    (doctor.csv on the parent run); a prediction above it is flagged low confidence."""
    dicom, _ = test_image
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("p", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"role": "study"}).info.run_id
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_artifact(run, str(trained), "model")
    argv = ["--model", run, "--tracking-uri", uri, "--dicom", str(dicom), "--out"]
    assert predict.main([*argv, str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)["doctor"]
    assert first["threshold"] is None and "no analysis/doctor.csv" in first["threshold_source"]
    score = first["score"]
    for gamma, flagged in ((score - 0.01, True), (score + 0.01, False)):
        csv = tmp_path / "doctor.csv"
        pd.DataFrame([{"arm": "set3-gbp", "run_id": run, "threshold": gamma,
                       "threshold_coverage": 0.8}]).to_csv(csv, index=False)  # fmt: skip
        client.log_artifact(parent, str(csv), "analysis")
        out = tmp_path / f"out-{flagged}"
        assert predict.main([*argv, str(out)]) == 0
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        doctor = result["doctor"]
        assert doctor["threshold"] == pytest.approx(gamma) and doctor["low_confidence"] is flagged
        assert f"study run {parent}" in doctor["threshold_source"]
        assert any("low confidence" in w for w in result["warnings"]) is flagged
        assert ("warning:" in captured.err and "low confidence" in captured.err) is flagged
