"""What the study prints at its end: the per-arm table, the MLflow links, the resume hint."""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from study.console import (
    per_arm_table,
    results_block,
    resume_command,
    runs_view_url,
    summarize_arms,
)
from study.presets import get_preset
from tests.study.conftest import PROJECT_DIR, SYNTHETIC_IMAGES
from tests.tiny import egd_task
from trainables.record.store import TrackingContext
from trainables.record.trial import Trial


def _record(trial, arm, status, val=None, test=0.7):
    metrics = {}
    if val is not None:
        metrics = {
            "best/val_auc_mean": val,
            **{f"test/{k}": test for k in ("auc_mean", "auc_normal", "auc_chf", "auc_pneumonia")},
            **{f"test/auc_mean_ci_{b}": test + d for b, d in (("low", -0.1), ("high", 0.1))},
        }
    params = {"lr": "0.001", "gamma": "0.41731", "seg_ratio": "0.5"}
    return Trial(f"run-{trial}", trial, arm, "search", status, params=params, metrics=metrics)


RECORDS = [
    _record("a", "unet", "ok", val=0.8, test=0.75),
    _record("b", "unet", "stopped"),
    _record("c", "set3-gbp", "ok", val=0.7),
    _record("d", "set3-gbp", "ok", val=0.9, test=0.85),
    _record("e", "no-seg", "failed"),
    _record("f", "no-seg", "diverged"),
]


def test_early_stopped_trials_are_not_counted_as_failures():
    results = summarize_arms(RECORDS, ["unet", "set3-gbp", "no-seg"])
    assert (results["unet"].ok, results["unet"].stopped, results["unet"].failed) == (1, 1, 0)
    assert results["unet"].counts == "2/2 (1 stopped early)"
    assert results["set3-gbp"].counts == "2/2" and results["set3-gbp"].best.trial_id == "d"
    assert results["no-seg"].counts == "0/2 (2 failed)" and results["no-seg"].best is None
    table = per_arm_table(RECORDS, ["unet", "set3-gbp", "no-seg"], egd_task())
    assert re.search(
        r"^unet\s+2/2 \(1 stopped early\)\s+0\.800\s+0\.750 \[0\.650", table, re.MULTILINE
    )
    assert re.search(r"^set3-gbp\s+2/2\s+0\.900\s+0\.850 \[", table, re.MULTILINE)
    assert re.search(r"^no-seg\s+0/2 \(2 failed\)\s+-", table, re.MULTILINE)


def test_hyperparameters_an_arm_never_reads_are_blank():
    """no-seg has no segmentation loss (no gamma), only set 3 mixes two (seg_ratio): the run
    logged every field, but a value there would read as used."""
    records = [_record("a", "no-seg", "ok", val=0.8), _record("b", "unet", "ok", val=0.7),
               _record("c", "set3-gbp", "ok", val=0.9)]  # fmt: skip
    lines = per_arm_table(records, ["no-seg", "unet", "set3-gbp"], egd_task()).splitlines()
    header = lines[0]
    assert header.rstrip().endswith("lr     gamma  seg_ratio")
    cols = {name: header.index(name) for name in ("lr", "gamma", "seg_ratio")}
    no_seg, unet, set3 = lines[1], lines[2], lines[3]
    assert no_seg.rstrip().endswith("0.001") and len(no_seg.rstrip()) < cols["gamma"]
    assert unet[cols["gamma"] :].strip() == "0.417"
    assert set3[cols["gamma"] :].split() == ["0.417", "0.5"]


def test_resume_hint_repeats_every_flag_of_the_study():
    cfg = dataclasses.replace(
        get_preset("demo"),
        study_name="demo-20250101-000000",
        command=(
            "gaze-study",
            "--arms",
            "unet,no-seg",
            "--epochs",
            "2",
            "--study-name=old",
            "--data",
            "/data/egd cxr",
            "--resume",
        ),
    )
    hint = resume_command(cfg)
    assert hint == (
        "gaze-study --arms unet,no-seg --epochs 2 --data '/data/egd cxr' "
        "--study-name demo-20250101-000000 --resume"
    )
    assert shlex.split(hint)[1:-3] == [
        "--arms",
        "unet,no-seg",
        "--epochs",
        "2",
        "--data",
        "/data/egd cxr",
    ]
    bare = resume_command(dataclasses.replace(cfg, command=()))  # a programmatic caller
    assert bare == "python -m study --preset demo --study-name demo-20250101-000000 --resume"


def test_links_open_the_runs_table_in_model_training_view():
    local = runs_view_url("sqlite:////p/mlflow.db", "3", "s1")
    assert local == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
        "&viewStateShareKey=s1"
    )
    assert runs_view_url("http://head:5000/", "3").startswith("http://head:5000/#/experiments/3/")
    ctx = TrackingContext("sqlite:////p/mlflow.db", "3", "parent")
    lines = results_block(ctx, {"best": "s1", "all": "s1-all"}, "/p/report.html")
    assert lines[0] == "MLflow UI: mlflow ui --backend-store-uri sqlite:////p/mlflow.db  then open"
    assert "viewStateShareKey=s1-all" in lines[2] and "Model training" in lines[3]
    assert lines[-1] == "Report: /p/report.html"


TRIAL_LINE = re.compile(
    r"^\[arm (\d)/2\] (no-seg|set3-gbp)\s+trial ([12])/2\s+([12]) epochs?\s+val AUC (\d\.\d{3}|-)\s+"
    r"(ok|stopped early|diverged|failed)\s+\| (\d)/4 trials done, ETA (\S+)"
)


@pytest.mark.slow
def test_a_study_prints_one_line_per_trial_and_little_else(tiny_data, data_config, tmp_path):
    arms = ("no-seg", "set3-gbp")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "study",
            "--smoke-test",
            "--study-name",
            "quiet",
            "--arms",
            ",".join(arms),
            "--trials-per-arm",
            "2",
            "--epochs",
            "2",
            "--data-dir",
            data_config.data_dir,
            "--synthetic-images",
            str(SYNTHETIC_IMAGES),
            "--image-size",
            "32",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--storage-path",
            str(tmp_path / "ray_results"),
            "--no-report",
        ],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    lines = out.splitlines()
    trials = [m for m in map(TRIAL_LINE.match, lines) if m]
    assert len(trials) == 4, out
    assert [int(m.group(7)) for m in trials] == [1, 2, 3, 4]  # the study's count goes up by one
    for arm_index, arm in enumerate(arms, 1):
        mine = [m for m in trials if m.group(2) == arm]
        assert [int(m.group(1)) for m in mine] == [arm_index] * 2
        assert sorted(int(m.group(3)) for m in mine) == [1, 2]
    for m in trials:  # ASHA (grace 1) stops a trial after epoch 1; a finished one ran both
        assert (m.group(6), m.group(4)) in (("ok", "2"), ("stopped early", "1")), m.group(0)
    assert trials[-1].group(8) == "0s"
    # Each line's status is the one MLflow recorded (ASHA's stops are "stopped early").
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gaze-unet")
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    shown = {"ok": "ok", "stopped": "stopped early"}
    assert sorted(m.group(6) for m in trials) == sorted(shown[r.data.tags["status"]] for r in runs)
    assert not [ln for ln in lines if "│" in ln or "Trial status" in ln]  # no Tune tables
    assert not [ln for ln in lines if "(train_trial pid=" in ln]  # no worker output
    assert (
        re.search(r"^no-seg\s+2/2", run.stdout, re.MULTILINE)
        and "viewStateShareKey=quiet" in run.stdout
    )
    # The verdict, in one line (the report's and the parent run's words).
    (verdict,) = [ln for ln in lines if ln.startswith("Verdict: Selected by validation: ")]
    assert verdict.endswith("No arm can be compared with unet: the study has no unet arm.")
    # Everything else is a fixed number of lines (13 with the verdict, 12 before it): the demo
    # (8 arms x 2 trials, one table row per arm) stays under 40, as the README says.
    fixed = len(lines) - len(trials) - len(arms)
    assert fixed <= 15, out
    assert fixed + 8 * 2 + 8 < 40
