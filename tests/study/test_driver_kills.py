"""Exactly-once records across driver kills: SIGKILL the study driver (no cleanup, Tune's state
as it last saved it), ``--resume``, and the record is as if nothing happened: every configuration
finished once, one MLflow run per Tune trial, no (run, metric, step) logged twice, no run left
RUNNING; runs of trials that Tune lost are closed as orphaned and left out.

Real Ray, real sqlite MLflow, the real driver in a subprocess (``tests.study.fault_driver``), and
the Ray processes a killed driver leaves behind are killed with it (its session).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from study.reconcile import saved_trial_ids
from tests.study.conftest import PROJECT_DIR, smoke_flags, trials_of
from tests.study.fault_driver import KILL_AT_EVENT
from trainables.record import TAG_ADOPTED_FROM, Stage
from trainables.record.store import TrackingContext

pytestmark = pytest.mark.slow

STUDY = "kill-me"
PLACEMENT = ("device", "num_threads")


def _flags(tmp: Path, data_dir: str, arms: str, trials: int, epochs: int) -> list[str]:
    return [
        *smoke_flags(tmp, data_dir, STUDY, arms, trials, epochs),
        "--verbose",  # the trials' own lines (epochs, "already finished") reach the driver's log
    ]


def _start(tmp: Path, flags: list[str], log: str, *driver_args: str, env=None) -> subprocess.Popen:
    """The driver in its own session, so that it and every Ray process it starts can be found."""
    out = open(tmp / log, "w")  # noqa: SIM115 (the child writes it; closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.study.fault_driver", *driver_args, "--", *flags],
        cwd=PROJECT_DIR,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _kill_session(sid: int) -> None:
    """SIGKILL what a killed driver left running (Ray's agents outlive it) and wait until gone."""
    deadline = time.monotonic() + 30
    while pids := _session_pids(sid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert time.monotonic() < deadline, f"processes of session {sid} survive SIGKILL: {pids}"
        time.sleep(0.2)


def _run(tmp: Path, flags: list[str], log: str, *driver_args: str, env=None) -> int:
    """Run the driver until it exits (or 400 s), clean up its session; its return code."""
    proc = _start(tmp, flags, log, *driver_args, env=env)
    try:
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_session(proc.pid)
    return proc.returncode


def _run_to_end(tmp: Path, flags: list[str], log: str, *driver_args: str, env=None) -> str:
    returncode = _run(tmp, flags, log, *driver_args, env=env)
    text = (tmp / log).read_text()
    assert returncode == 0, text[-6000:]
    return text


def _without_placement(params: dict[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in params.items() if k not in PLACEMENT))


def _assert_exact_record(tmp: Path, arms: list[str], trials: int, epochs: int):
    """The invariants of an exact record; returns (counted records, orphaned records, runs)."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gaze-unet").experiment_id
    (parent,) = client.search_runs([exp], "tags.role = 'study'")  # one study, reopened
    assert parent.info.status == "FINISHED"
    ctx = TrackingContext(uri, exp, parent.info.run_id)
    counted = trials_of(ctx)
    every = trials_of(ctx, include_orphaned=True)
    runs = {r.info.run_id: r for r in client.search_runs([exp], "tags.role = 'trial'")}
    assert set(runs) == {r.run_id for r in every}  # every trial run belongs to the study
    assert all(r.info.status != "RUNNING" for r in runs.values())
    orphans = [r for r in every if r.status == "orphaned"]
    for r in orphans:  # closed, with the reason, and their data kept
        assert runs[r.run_id].info.status == "KILLED" and "no Tune trial" in r.error
    path = f"{tmp}/ray_results/{STUDY}/{Stage.SEARCH}"  # the arms side by side: one experiment
    saved = tune.ExperimentAnalysis(path).trials
    # One MLflow run per Tune trial, and none for trials Tune does not have.
    assert sorted(r.trial_id for r in counted) == sorted(saved_trial_ids(path))
    for arm in arms:
        tune_trials = [t for t in saved if t.config["arm"] == arm]
        assert {t.status for t in tune_trials} == {"TERMINATED"} and len(tune_trials) == trials
        mine = [r for r in counted if r.arm == arm]
        assert sorted(r.trial_id for r in mine) == sorted(t.trial_id for t in tune_trials)
        # Every configuration finished exactly once.
        assert {r.status for r in mine} <= {"ok", "stopped"}
        configs = [_without_placement(r.params) for r in mine]
        assert len(set(configs)) == len(configs) == trials
        for r in mine:
            steps = [m.step for m in client.get_metric_history(r.run_id, "train/loss")]
            if r.status == "ok":
                assert steps == list(range(1, epochs + 1))
                assert {"best/val_auc_mean", "test/auc_mean"} <= set(r.metrics)
    for run in runs.values():  # no (run, metric, step) logged twice, orphans included
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (run.info.run_id, key, steps)
    return counted, orphans, runs


# Tune saves its experiment state every >= 10 s and when a trial has checkpointed num_to_keep (2)
# times since the last save. With the timer off, the saved state is fixed by the trials' epochs,
# so a kill at a given report loses exactly the same trials every time.
NO_TIMER = {"TUNE_GLOBAL_CHECKPOINT_S": "100000"}


def test_a_trial_restored_from_an_older_checkpoint_and_a_lost_running_trial(
    tiny_data, data_config, tmp_path
):
    """3 epochs: trial 1's saved state is its epoch-2 checkpoint when it finishes in MLflow; the
    driver dies in trial 2's first epoch, which Tune never saved. On resume trial 1 must not run
    its last epoch and log its final record again (it did: 22 keys twice), and trial 2's run must
    not stay RUNNING beside the run of its re-suggested configuration (it did: "2/3" trials)."""
    flags = _flags(tmp_path, data_config.data_dir, "no-seg", trials=2, epochs=3)
    marker = tmp_path / "killed"
    returncode = _run(
        tmp_path, flags, "first.log", "--kill-at", "1:1", "--kill-marker", str(marker), env=NO_TIMER
    )
    assert returncode == -signal.SIGKILL and marker.exists(), (tmp_path / "first.log").read_text()[
        -4000:
    ]

    out = _run_to_end(tmp_path, [*flags, "--resume"], "resume.log", env=NO_TIMER)
    assert "already finished in MLflow run" in out  # trial 1: its record, not a re-run
    counted, orphans, _ = _assert_exact_record(tmp_path, ["no-seg"], trials=2, epochs=3)
    (orphan,) = orphans
    lost_trial = marker.read_text().split()[0]
    assert orphan.trial_id == lost_trial and "status before: running" in orphan.error
    # The lost configuration ran again, once, as the new trial the restored searcher suggested.
    assert _without_placement(orphan.params) in {_without_placement(r.params) for r in counted}
    assert re.search(r"\nno-seg +2/2 ", out)  # the table counts the study's two trials only


def test_a_lost_finished_trial_is_adopted_not_trained_again(tiny_data, data_config, tmp_path):
    """1 epoch: Tune's state is saved once, before the first trial ran; the driver dies when trial
    2 has finished in MLflow. On resume, the trials Tune restores report their MLflow records, and
    the configuration Tune lost entirely comes back from the searcher and adopts its finished
    run: no configuration trains twice, one run per trial."""
    flags = _flags(tmp_path, data_config.data_dir, "no-seg", trials=3, epochs=1)
    marker = tmp_path / "killed"
    returncode = _run(
        tmp_path, flags, "first.log", "--kill-at", "1:1", "--kill-marker", str(marker), env=NO_TIMER
    )
    assert returncode == -signal.SIGKILL and marker.exists()

    out = _run_to_end(tmp_path, [*flags, "--resume"], "resume.log", env=NO_TIMER)
    counted, orphans, runs = _assert_exact_record(tmp_path, ["no-seg"], trials=3, epochs=1)
    assert orphans == [] and len(runs) == 3  # the lost finished runs were all adopted
    adopted = [r for r in counted if runs[r.run_id].data.tags.get(TAG_ADOPTED_FROM)]
    assert adopted and "already finished in MLflow run" in out
    lost_trial = marker.read_text().split()[0]
    assert lost_trial in {runs[r.run_id].data.tags[TAG_ADOPTED_FROM] for r in adopted}


KILL_SEED, KILLS = 20240611, 3
# 2 arms x 2 trials x 2 epochs, one trial at a time: each trial starts, reports twice and
# completes, 16 trial events in all. The first driver dies within its first 12, so it always dies.
EVENTS, FIRST_KILL_BY = 16, 12


def test_random_sigkills_of_the_driver_then_resume_leave_an_exact_record(
    tiny_data, data_config, tmp_path
):
    """The driver is SIGKILLed at seeded random trial events of a two-arm study (a start, an
    epoch's report, a completion: the workers are then mid-epoch, between MLflow and Tune, at a
    trial's end ...), resumed each time; the kill points come from events, not seconds, so a
    fast machine cannot finish before the first kill."""
    rng = random.Random(KILL_SEED)
    flags = _flags(tmp_path, data_config.data_dir, "no-seg,unet", trials=2, epochs=2)
    kills = 0
    for attempt in range(KILLS):
        at = rng.randint(1, FIRST_KILL_BY if attempt == 0 else EVENTS // 2)
        log = f"attempt{attempt}.log"
        flags_now = flags + (["--resume"] if attempt else [])
        returncode = _run(tmp_path, flags_now, log, "--kill-events", env={KILL_AT_EVENT: str(at)})
        if returncode == 0:
            break  # the study finished before this kill point
        assert returncode == -signal.SIGKILL, (tmp_path / log).read_text()[-4000:]
        assert f"SIGKILL at event {at}:" in (tmp_path / log).read_text()
        kills += 1
    assert kills >= 1
    _run_to_end(tmp_path, [*flags, "--resume"], "final.log")
    _assert_exact_record(tmp_path, ["no-seg", "unet"], trials=2, epochs=2)
