"""Issue 20, items 2, 5 and 7 for ``gaze-study predict``: a model file out of range is one
``error:`` line and exit code 2 in seconds (not 3.8 GB and minutes); outputs stay in ``--out``
and never overwrite another DICOM's; real radiographs (``tests/data/real-cxr``) give results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from study import predict
from tests.study.conftest import PROJECT_DIR, tiny_trial
from tests.tiny import egd_task
from trainables.config import ConfigError, TrialConfig
from trainables.fit import fit

CLASSES = egd_task().classes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # sqlalchemy, inside mlflow

REAL = PROJECT_DIR / "tests" / "data" / "real-cxr"
REFUSED_IN_S = 5.0


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    fit(tiny_trial(arm="set3-gbp", epochs=1), tiny_data, out, log=lambda _: None)
    return out / "model" / "model.pt"


def _bomb(levels: int = 60) -> list:
    """1.8 KB pickled, 2**60 values to whoever walks or prints it."""
    a: list = []
    for _ in range(levels):
        a = [a, a]
    return a


def _variant(trained: Path, tmp_path: Path, name: str, change) -> Path:
    saved = torch.load(trained, weights_only=True)
    change(saved)
    path = tmp_path / f"{name}.pt"
    torch.save(saved, path)
    return path


BAD_MODELS = {
    "unknown encoder": (lambda s: s["config"].update(encoder="tu-no_such_net"), "encoder"),
    "image_size 0": (lambda s: s.update(image_size=0), "image_size 0 is not a trained size"),
    "image_size -32": (lambda s: s.update(image_size=-32), "image_size -32 is not"),
    "image_size 20032": (lambda s: s.update(image_size=20032), "image_size 20032 is not"),
    "state_dict a list": (lambda s: s.update(state_dict=[1, 2]), "state_dict is a list"),
    "nested-list bomb": (lambda s: s["config"].update(lr=_bomb()), "nested deeper than 3"),
    "bomb in decoder": (lambda s: s["config"].update(decoder_channels=_bomb()), "nested deeper"),
    "a wide list": (lambda s: s["config"].update(lr=[0.1] * 10**5), "more than 1000 values"),
    "no config dict": (lambda s: s.update(config=[1]), "config is a list"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_model_file_out_of_range_is_one_error_line_in_seconds(case, trained, tmp_path, capsys):
    change, reason = BAD_MODELS[case]
    bad = _variant(trained, tmp_path, case.replace(" ", "_"), change)
    dicom = REAL / "siim-cr-1024-jpeg-baseline.dcm"
    t0 = time.perf_counter()
    code = predict.main(["--model", str(bad), "--dicom", str(dicom), "--out", str(tmp_path)])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {bad}: ") and reason in err and len(err) < 400
    assert seconds < REFUSED_IN_S
    assert not list(tmp_path.glob("*.json"))


def test_out_pointing_at_a_file_is_refused_before_the_model_loads(trained, tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    dicom = REAL / "nih-dx-1024-uncompressed.dcm"
    code = predict.main(["--model", str(trained), "--dicom", str(dicom), "--out", str(out)])
    assert code == 2 and capsys.readouterr().err == f"error: --out {out}: not a folder\n"
    assert out.read_text() == "not a folder"


def test_the_bomb_through_the_real_command(tmp_path):
    """The report's file: 1.8 KB, no weights, a config of 60 lists nested in each other."""
    bad = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "config": {"arm": "unet", "lr": _bomb()}, "image_size": 32}, bad)
    assert bad.stat().st_size < 4096
    cmd = [sys.executable, "-m", "study", "predict", "--model", str(bad),
           "--dicom", str(REAL / "siim-cr-1024-jpeg-baseline.dcm")]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {bad}: its config does not describe a model here")


def test_config_errors_quote_values_in_bounded_space_and_time():
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        TrialConfig(lr=_bomb())
    assert time.perf_counter() - t0 < 0.5 and len(str(err.value)) < 200
    with pytest.raises(ConfigError) as err:
        TrialConfig(scheduler="x" * 10**6)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize(
    "name",
    [
        "nih-dx-1024-uncompressed.dcm",
        "siim-cr-1024-jpeg-baseline.dcm",
        "siim-cr-1024-jpeg-baseline-monochrome1.dcm",
        "abdomen-ot-512-not-chest.dcm",
    ],
)
def test_real_radiographs_give_a_result(name, trained, tmp_path, capsys):
    dicom = REAL / name
    assert (
        predict.main(["--model", str(trained), "--dicom", str(dicom), "--out", str(tmp_path)]) == 0
    )
    out = capsys.readouterr()
    result = json.loads(out.out)
    probs = [result["probabilities"][c] for c in CLASSES]
    assert sum(probs) == pytest.approx(1.0) and (tmp_path / f"{dicom.stem}.png").is_file()
    if name.startswith("abdomen"):  # out of scope: a result, flagged as meaningless
        assert result["warnings"][0] == "Modality OT is not a radiograph (CR/DX)"
        assert f"warning: {dicom}: Modality OT" in out.err
    else:
        assert result["warnings"] == [] and out.err == ""


def test_a_file_name_with_mathtext_is_drawn_as_text(trained, tmp_path, capsys):
    dicom = tmp_path / "in" / "math$\\nosuchcmd$.dcm"
    dicom.parent.mkdir()
    shutil.copy(REAL / "siim-cr-1024-jpeg-baseline.dcm", dicom)
    out = tmp_path / "out"
    assert predict.main(["--model", str(trained), "--dicom", str(dicom), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["dicom"] == "math$\\nosuchcmd$.dcm"
    assert sorted(p.name for p in out.iterdir()) == [
        "math$\\nosuchcmd$.json", "math$\\nosuchcmd$.png",
    ]  # fmt: skip


def test_same_file_names_from_two_folders_do_not_overwrite(trained, tmp_path, capsys):
    first, second = tmp_path / "a" / "1.dcm", tmp_path / "b" / "1.dcm"
    for path, src in (
        (first, "nih-dx-1024-uncompressed.dcm"),
        (second, "siim-cr-1024-jpeg-baseline.dcm"),
    ):
        path.parent.mkdir()
        shutil.copy(REAL / src, path)
    out = tmp_path / "out"
    argv = ["--model", str(trained), "--out", str(out), "--dicom"]
    assert predict.main([*argv, str(first)]) == 0
    kept = (out / "1.json").read_text()
    capsys.readouterr()
    assert predict.main([*argv, str(second)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {out / '1.json'} holds the prediction for another file named 1.dcm; "
        f"{second} would overwrite it: pass another --out\n"
    )
    assert (out / "1.json").read_text() == kept
    assert predict.main([*argv, str(first)]) == 0  # the same file again: its own output
