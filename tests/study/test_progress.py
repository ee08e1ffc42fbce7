"""The progress board's arithmetic and lines, with a fake clock (no Ray trials needed)."""

from __future__ import annotations

import pickle
import re

import pytest

from study.progress import (
    FAILED,
    OK,
    STOPPED,
    Outcome,
    ProgressBoard,
    TuneProgress,
    eta_seconds,
    format_duration,
    trial_status,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_eta_from_finished_durations_running_trials_and_slots():
    assert eta_seconds([], [], pending=5, slots=2) is None  # nothing finished: unknown
    # mean 30 s; 4 pending trials on 2 slots: 60 s
    assert eta_seconds([20.0, 40.0], [], pending=4, slots=2) == pytest.approx(60.0)
    # a running trial 10 s in has 20 s left; one 50 s in (over the mean) has 0 left
    assert eta_seconds([30.0], [10.0, 50.0], pending=1, slots=2) == pytest.approx(25.0)
    assert eta_seconds([30.0], [], pending=0, slots=3) == 0.0
    assert eta_seconds([30.0], [], pending=2, slots=0) == pytest.approx(60.0)  # >= 1 slot


def test_format_duration():
    assert [format_duration(s) for s in (0, 44.6, 60, 250, 3600, 3725)] == [
        "0s",
        "45s",
        "1m 00s",
        "4m 10s",
        "1h 00m",
        "1h 02m",
    ]


def test_trial_status_from_the_last_report():
    finished = {"done": True, "epoch": 3, "best/val_auc_mean": 0.8}
    assert trial_status(finished, errored=False) == OK
    # Tune sets its own "done" on the last result of a trial that ASHA stops: still stopped early.
    assert trial_status({"done": True, "epoch": 1, "val/auc_mean": 0.6}, errored=False) == STOPPED
    assert trial_status({"epoch": 1}, errored=False) == STOPPED
    assert trial_status({"done": True, "diverged": 1.0}, errored=False) == "diverged"
    assert trial_status(None, errored=True) == FAILED


def _board(clock, lines, arms=("unet", "set3-gbp"), per_arm=2):
    return ProgressBoard(list(arms), per_arm, clock=clock, write=lines.append, live=False)


def test_interleaved_arms_are_counted_per_arm_with_a_study_eta():
    clock, out = Clock(), []
    board = _board(clock, out)
    # Two arms share the cluster: trials of both start before any finishes.
    board.start("a1", "unet")
    board.start("b1", "set3-gbp")
    clock.t += 10
    board.start("a2", "unet")
    assert board.max_running == 3
    clock.t += 20  # a1 ran 30 s
    board.report("a1", 2, 0.7)
    board.report("a1", 3, 0.75)
    line = board.finish("a1", "unet", OK, Outcome(epochs=3, val_auc=0.8))
    # 3 trials left: b1 ran 30 s (0 left of the 30 s mean), a2 20 s (10 left), 1 pending (30);
    # 40 s of work on 3 slots.
    assert board.eta() == pytest.approx(40 / 3)
    assert re.match(
        r"\[arm 1/2\] unet\s+trial 1/2\s+3 epochs\s+val AUC 0\.800\s+ok\s+"
        r"\| 1/4 trials done, ETA 13s$",
        line,
    ), line
    clock.t += 5
    board.report("b1", 1, 0.6)
    line = board.finish("b1", "set3-gbp", STOPPED)  # epochs and AUC from its reports
    assert re.match(r"\[arm 2/2\] set3-gbp\s+trial 1/2\s+1 epoch\s+val AUC 0\.600\s+stopped", line)
    assert board.done == {"unet": 1, "set3-gbp": 1}
    assert board.status_line().startswith("[arm 1/2] unet 1/2  | 2/4 trials done")
    line = board.finish(
        "a2", "unet", FAILED, Outcome(epochs=0, error="Traceback ...\nValueError: boom")
    )
    assert "trial 2/2" in line and "val AUC -" in line and line.endswith("(ValueError: boom)")
    assert out == [ln + "\n" for ln in (out[0][:-1], out[1][:-1], line)]  # one line per trial


def test_trials_finished_before_a_resume_count_without_a_line():
    clock, out = Clock(), []
    board = _board(clock, out, arms=("unet",), per_arm=3)
    board.finished_before("unet")
    board.start("t2", "unet")
    clock.t += 12
    line = board.finish("t2", "unet", OK, Outcome(epochs=2, val_auc=0.5))
    assert "trial 2/3" in line and "2/3 trials done, ETA 12s" in line and len(out) == 1


def test_seeds_stage_adds_expected_trials():
    board = _board(Clock(), [], arms=("unet",), per_arm=2)
    board.expect("unet", 3)
    board.expect("no-seg", 1)  # an arm the board did not know yet
    assert board.expected == {"unet": 5, "no-seg": 1} and board.arm_tag("no-seg") == "[arm 2/2]"


def test_live_line_is_redrawn_in_place_and_cleared():
    clock, out = Clock(), []
    board = ProgressBoard(["unet"], 1, clock=clock, write=out.append, live=True)
    board.start("t", "unet")
    assert out[-1].startswith("\r\x1b[K[arm 1/1] unet 0/1")
    n = len(out)
    board.redraw()  # within a second of the last draw: nothing
    assert len(out) == n
    clock.t += 2
    board.redraw()
    assert len(out) == n + 1
    line = board.finish("t", "unet", OK, Outcome(epochs=1, val_auc=0.5))
    assert "|" not in line  # on a terminal the live line carries the totals, not each trial line
    assert "\r\x1b[K" in out and line + "\n" in out
    board.clear()
    assert out[-1] == "\r\x1b[K"


def test_a_pickled_callback_reports_into_the_live_board_of_its_study():
    # Tune pickles the callbacks into tuner.pkl; a restored Tuner must still feed this process's
    # board (the one the driver prints from), not a stale copy.
    old = ProgressBoard(["unet"], 1, write=lambda _: None, live=False)
    blob = pickle.dumps(TuneProgress("study-x", old))
    live = ProgressBoard(["unet"], 1, write=lambda _: None, live=False)
    TuneProgress("study-x", live)  # the resumed driver registers its board
    restored = pickle.loads(blob)
    assert restored.board is live
    assert pickle.loads(pickle.dumps(TuneProgress("nobody", old), 0)).board is old
    orphan = pickle.loads(blob.replace(b"study-x", b"study-y"))
    assert orphan.board is not live and orphan.board.arms == []  # inert, prints nothing
