"""Interrupt the driver (Ctrl-C) after its first finished trial, then --resume: the study finishes
and no finished trial is repeated. Runs ``python -m study`` in a subprocess, as a user would."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.study.conftest import PROJECT_DIR, smoke_flags, trials_of
from trainables.record.store import TrackingContext

pytestmark = pytest.mark.slow

ARMS = "no-seg,set3-gbp"
TRIALS = 2


def _command(tmp: Path, data_dir: str, *extra: str) -> list[str]:
    flags = smoke_flags(tmp, data_dir, "resume-me", ARMS, TRIALS, epochs=2)
    return [sys.executable, "-m", "study", *flags, *extra]


def _ok_runs(uri: str) -> dict[str, list[tuple[int, int]]]:
    """trial_id -> [(step, timestamp)] of val/auc_mean, for child runs with status ok."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gaze-unet")
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial' and tags.status = 'ok'")
    return {
        r.data.tags["trial_id"]: [
            (m.step, m.timestamp) for m in client.get_metric_history(r.info.run_id, "val/auc_mean")
        ]
        for r in runs
    }


def test_interrupt_then_resume(tiny_data, data_config, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(
        _command(tmp_path, data_config.data_dir),
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:  # appends line by line, so the test sees progress while the study runs
        while line := proc.stdout.readline():
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 400
        # The study prints a line when a trial ends; the first one to end finished all its
        # epochs (ASHA never stops the first trial to reach a rung).
        while not any(re.search(r"trial \d/2\s+2 epochs\s+val AUC \S+\s+ok", ln) for ln in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and the driver stops
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    first_out = "".join(lines)
    before = _ok_runs(uri)
    assert before, first_out
    assert proc.returncode == 130, first_out
    # The hint is the whole command: every flag that defines the study, then --resume.
    hint = re.search(r"Continue with: (.+)$", first_out, re.MULTILINE)
    assert hint, first_out
    flags = _command(tmp_path, data_config.data_dir)[3:]
    flags.remove("--study-name"), flags.remove("resume-me")
    expected = ["python", "-m", "study", *flags, "--study-name", "resume-me", "--resume"]
    assert hint.group(1).split() == expected

    second = subprocess.run(
        _command(tmp_path, data_config.data_dir, "--resume"),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-5000:]
    assert f"resuming search of {ARMS.replace(',', ', ')} from" in second.stdout  # side by side
    assert f"mlflow ui --backend-store-uri {uri}" in second.stdout
    for arm in ARMS.split(","):
        assert f"\n{arm} " in second.stdout  # its row in the per-arm table

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gaze-unet")
    parents = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one study, reopened
    ctx = TrackingContext(uri, exp.experiment_id, parents[0].info.run_id)
    records = trials_of(ctx)
    # Every Tune trial has exactly one run, and the study has all its trials.
    assert len(records) == len({r.trial_id for r in records}) == 2 * TRIALS
    assert all(r.status in ("ok", "stopped") for r in records)
    after = _ok_runs(uri)
    for trial_id, history in before.items():
        assert after[trial_id] == history  # finished before the interrupt: not run again
    for history in after.values():
        steps = [s for s, _ in history]
        assert steps == sorted(set(steps))  # no epoch logged twice

    # The same study name again without --resume is refused before anything runs.
    again = subprocess.run(
        _command(tmp_path, data_config.data_dir),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode != 0 and "pass --resume" in again.stderr
    assert len(client.search_runs([exp.experiment_id], "tags.role = 'study'")) == 1
    assert len(trials_of(ctx)) == 2 * TRIALS
