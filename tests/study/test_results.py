"""What the MLflow UI shows of a study: provenance, data summary, the arms compared on the parent,
best trials tagged, descriptions, saved views; against a real sqlite store, and in headless
Chromium against a real ``mlflow server``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis.verdict import study_verdict
from study.console import runs_view_url
from study.plans import SearchPlan
from study.presets import get_preset
from study.results import record_study_end, record_study_start
from tests.study.conftest import PROJECT_DIR, open_study
from tests.tiny import egd_task
from trainables.data.toy import make_toy_cached
from trainables.record import arm_metric
from trainables.record import writer as record
from trainables.record.files import write_predictions
from trainables.record.reader import Record
from trainables.record.store import store

ARMS = ["unet", "set3-gbp", "no-seg"]
# trial id -> (arm, status, best val AUC, test mean AUC)
TRIALS = {
    "u1": ("unet", "ok", 0.80, 0.75),
    "u2": ("unet", "stopped", None, None),
    "s1": ("set3-gbp", "ok", 0.70, 0.95),  # the best test AUC, but not the best by validation
    "s2": ("set3-gbp", "ok", 0.90, 0.85),
    "n1": ("no-seg", "failed", None, None),
}
BEST = {"unet": "u1", "set3-gbp": "s2"}


def _final_metrics(val: float, test: float) -> dict[str, float]:
    out = {"best/val_auc_mean": val, "best/epoch": 2.0}
    for k in ("auc_mean", "auc_normal", "auc_chf", "auc_pneumonia"):
        out[f"test/{k}"] = test
        out[f"test/{k}_ci_low"], out[f"test/{k}_ci_high"] = test - 0.1, test + 0.05
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A parent run and five trial runs written through the record's writer, then the study's
    start and end records, as the driver writes them."""
    tmp = tmp_path_factory.mktemp("results")
    cfg = dataclasses.replace(
        get_preset("smoke"),
        study_name="ui-study",
        arms=tuple(ARMS),
        trials_per_arm=2,
        project_dir=str(PROJECT_DIR),
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        command=("gaze-study", "--smoke-test", "--study-name", "ui-study"),
    )
    ctx = open_study(cfg)
    data = make_toy_cached(n=30)
    note = SearchPlan().note(cfg, ARMS, {None: data})
    record_study_start(ctx, cfg, data.summary_dict(), note)
    test_keys = [data.keys[i] for i in data.indices("test")]
    labels = data.labels[data.indices("test")]
    for trial_id, (arm, status, val, test) in TRIALS.items():
        run_id = record.trial_run(
            ctx,
            trial_id,
            run_id=None,
            tags={"arm": arm, "stage": "search"},
            params={"lr": 1e-3, "gamma": 0.4, "seg_ratio": 0.5, "epochs": 2},
        )
        record.log_epoch(ctx, run_id, {"val/auc_mean": val or 0.5, "val/loss": 1.1}, step=1)
        if val is not None:
            out = tmp / trial_id
            write_predictions(out, test_keys, labels, np.full((len(labels), 3), 1 / 3), data.task)
            record.log_final(ctx, run_id, _final_metrics(val, test), out)
        record.set_status(ctx, run_id, status, "ValueError: boom" if status == "failed" else None)
    trials = store(ctx.tracking_uri).trials(ctx)  # what the driver reads at the end
    end = record_study_end(ctx, cfg, trials, ARMS, note, egd_task())
    return ctx, cfg, data, end, MlflowClient(ctx.tracking_uri)


def _runs(ctx, client):
    runs = client.search_runs(
        [ctx.experiment_id], f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'"
    )
    return {r.data.tags["trial_id"]: r for r in runs}


def test_parent_has_provenance_and_the_data_summary(study):
    ctx, _cfg, data, _views, client = study
    parent = client.get_run(ctx.parent_run_id)
    head = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    assert parent.data.tags["mlflow.source.git.commit"] == (head or "unknown")
    # the fingerprint of what the trials see (images, maps, labels, keys, split), checked on resume
    assert parent.data.tags["data_fingerprint"] == data.content_digest() != data.fingerprint
    p = parent.data.params
    assert (p["data/images"], p["data/train"], p["data/val"], p["data/test"]) == (
        "30",
        "18",
        "6",
        "6",
    )
    assert p["data/excluded"] == "0" and p["data/fingerprint"] == data.content_digest()
    summary = json.loads(
        Path(client.download_artifacts(ctx.parent_run_id, "study/data.json")).read_text()
    )
    assert summary == json.loads(json.dumps(data.summary_dict()))
    assert sum(summary["splits"]["test"]["classes"].values()) == 6
    exp = client.get_experiment(ctx.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_parent_compares_the_arms(study):
    ctx, _cfg, _data, _views, client = study
    m = client.get_run(ctx.parent_run_id).data.metrics
    assert m[arm_metric("unet", "best_val_auc_mean")] == 0.80
    assert m[arm_metric("set3-gbp", "best_val_auc_mean")] == 0.90  # s2, chosen on validation
    assert m[arm_metric("set3-gbp", "test_auc_mean")] == 0.85  # s2's test AUC, not s1's 0.95
    assert m[arm_metric("set3-gbp", "test_auc_mean", "low")] == pytest.approx(0.75)
    assert m[arm_metric("set3-gbp", "test_auc_pneumonia", "high")] == pytest.approx(0.90)
    assert (m[arm_metric("unet", "trials_ok")], m[arm_metric("unet", "trials_stopped")]) == (1, 1)
    assert m[arm_metric("no-seg", "trials_failed")] == 1
    assert arm_metric("no-seg", "best_val_auc_mean") not in m  # no finished trial: nothing
    note = client.get_run(ctx.parent_run_id).data.tags["mlflow.note.content"]
    assert "`unet`: val 0.800" in note and "trials 2/2 (1 stopped early)" in note
    assert "Command: `gaze-study --smoke-test --study-name ui-study`" in note


def test_the_parent_description_opens_with_the_reports_verdict(study):
    """The same words as the report's verdict (``analysis.verdict`` on the same record)."""
    ctx, cfg, _data, end, client = study
    note = client.get_run(ctx.parent_run_id).data.tags["mlflow.note.content"]
    reader = Record(ctx.tracking_uri)
    v = study_verdict(reader, reader.study(cfg.experiment, ctx.parent_run_id))
    assert note.startswith(f"**Verdict.** {v.selection} {v.sentence}")
    assert end.verdict == f"{v.selection} {v.sentence}"
    assert v.selected.arm == "set3-gbp"  # s2: 0.90 on validation (s1's better test AUC: unused)
    # Constant predictions in every arm: no difference at all, and the sentence says so.
    assert v.sentence.startswith("No arm differs from unet at this test size (6 test images")
    assert "| `set3-gbp` | +0.000 [+0.000, +0.000] | 1.000 |" in note


def test_best_trials_are_tagged_and_every_run_is_described(study):
    ctx, _cfg, _data, _views, client = study
    runs = _runs(ctx, client)
    for trial_id, run in runs.items():
        arm = TRIALS[trial_id][0]
        assert run.data.tags["best_of_arm"] == str(BEST.get(arm) == trial_id).lower()
        assert run.data.tags["mlflow.note.content"].startswith(f"Arm `{arm}`, search stage")
    assert "Best trial of its arm" in runs["s2"].data.tags["mlflow.note.content"]
    stopped = runs["u2"].data.tags["mlflow.note.content"]
    assert "Stopped early by ASHA" in stopped and "last validation AUC 0.500, loss 1.100" in stopped
    assert "failed: ValueError: boom" in runs["n1"].data.tags["mlflow.note.content"]
    # An early stop is a normal end: FINISHED (the UI draws KILLED with the failure icon).
    assert runs["u2"].info.status == "FINISHED" and runs["n1"].info.status == "FAILED"


def test_recording_the_end_again_logs_nothing_twice(study):
    ctx, cfg, data, _views, client = study
    key = arm_metric("unet", "best_val_auc_mean")
    note = SearchPlan().note(cfg, ARMS, {None: data})
    record_study_end(
        ctx, cfg, store(ctx.tracking_uri).trials(ctx), ARMS, note, egd_task()
    )  # after --resume
    assert len(client.get_metric_history(ctx.parent_run_id, key)) == 1
    record_study_start(ctx, cfg, data.summary_dict(), note)  # resumed: params already there
    assert client.get_run(ctx.parent_run_id).data.params["data/images"] == "30"


def test_saved_views_select_the_study_and_the_columns(study):
    ctx, _cfg, _data, end, client = study
    assert end.views == {
        "best trial of each arm": "ui-study",
        "all trials of this study": "ui-study-all",
    }
    tags = client.get_experiment(ctx.experiment_id).tags
    best = json.loads(tags["mlflow.sharedViewState.ui-study"])
    assert "tags.best_of_arm = 'true'" in best["searchFilter"]
    assert ctx.parent_run_id in best["searchFilter"]
    found = client.search_runs([ctx.experiment_id], best["searchFilter"])  # MLflow accepts it
    assert sorted(r.data.tags["trial_id"] for r in found) == sorted(BEST.values())
    # The AUCs, then the hyperparameters the arms searched (smoke: the demo space), then tags.
    assert best["selectedColumns"] == [
        "metrics.`test/auc_mean`", "metrics.`test/auc_normal`", "metrics.`test/auc_chf`",
        "metrics.`test/auc_pneumonia`", "params.`lr`", "params.`gamma`", "params.`seg_ratio`",
        "tags.`arm`", "tags.`status`",
    ]  # fmt: skip
    everything = json.loads(tags["mlflow.sharedViewState.ui-study-all"])
    assert len(client.search_runs([ctx.experiment_id], everything["searchFilter"])) == len(TRIALS)
    # A stopped trial has no final metrics: its last epoch's validation AUC and loss show.
    assert {"metrics.`val/auc_mean`", "metrics.`val/loss`"} <= set(everything["selectedColumns"])


def test_no_run_carries_an_empty_tag(study):
    ctx, _cfg, _data, _end, client = study
    runs = [client.get_run(ctx.parent_run_id), *_runs(ctx, client).values()]
    for run in runs:
        assert all(str(v).strip() for v in run.data.tags.values()), run.data.tags
    assert "error" not in _runs(ctx, client)["u1"].data.tags  # ok: no error tag at all


# -- the UI itself ------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(study):
    """``mlflow server`` on the study's store, on a free localhost port."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (.ci/run installs it)")
    ctx = study[0]
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            ctx.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # uvicorn's workers go down with the group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _dom_text(url: str) -> str:
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--window-size=3200,1400",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = re.sub(r"<[^>]+>", " | ", run.stdout)
    return re.sub(r"(\s*\|\s*)+", " | ", text)


@pytest.mark.slow
def test_the_printed_links_open_the_comparison_in_the_ui(study, ui):
    ctx, _cfg, _data, end, client = study
    views = end.views
    names = {t: r.info.run_name for t, r in _runs(ctx, client).items()}
    text = _dom_text(runs_view_url(ui, ctx.experiment_id, views["best trial of each arm"]))
    assert "Model training" in text and "shared view" in text, text[-3000:]
    table = text[text.index("Run Name") :]
    # A row's cells, in the order drawn: MLflow's duration, the test AUCs (mean and per class),
    # the searched hyperparameters (gamma, lr, seg_ratio), the tags; the arm opens the run name.
    assert re.search(
        r"\| \d+ms \| (0\.85 \| ){4}0\.4 \| 0\.001 \| 0\.5 \| ok \| set3-gbp \|", table
    )
    for column in ("test/auc_mean", "test/auc_pneumonia", "gamma", "lr", "seg_ratio", "arm"):
        assert f"| {column} |" in table, column
    for trial_id, name in names.items():
        assert (name in table) == (trial_id in BEST.values()), name  # only the best of each arm
        assert name.startswith(TRIALS[trial_id][0])  # the run name opens with the arm
    text = _dom_text(runs_view_url(ui, ctx.experiment_id, views["all trials of this study"]))
    table = text[text.index("Run Name") :]
    assert all(name in table for name in names.values())
    assert "| status |" in table and "| stopped |" in table
    # The stopped trial shows where it stopped: its last validation AUC and loss.
    assert "| val/auc_mean |" in table and "| val/loss |" in table and "| 1.1 |" in table
