"""The real driver with arms side by side or one after another (``--sequential-arms``): the same
trials either way, arms overlapping only side by side, and Ctrl-C + resume in both orders.

Trials are ``tests.study.quick_trial`` (injected through ``run_study(trainable=...)``): the
schedule, the searchers and Tune's experiment state are real, the training is not.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from ray import tune

from study.driver import run_study
from tests.study.conftest import tiny_study, tiny_trial
from tests.study.quick_trial import factory

pytestmark = pytest.mark.slow

ARMS = ("no-seg", "set3-gbp")
TRIALS = 4  # fewer than TPE's 10 random start-up trials: configurations come from the seed alone
EPOCH_S = 0.3  # seconds per epoch of the quick trials
SIDE_EPOCH_S = 0.6  # longer where arms must overlap: a trial outlasts a new worker's start


def _study(tmp: Path, data_config, **kw):
    base = {
        "arms": ARMS,
        "trials_per_arm": TRIALS,
        "search_space": "paper",
        "trial": tiny_trial(epochs=2, seed=11),  # the study's seed
        "grace_period": 2,  # no early stopping: every trial reports both epochs
    }
    return tiny_study(tmp, data_config, **{**base, **kw})


def _trials(summary) -> dict[str, list[dict]]:
    """arm -> the configurations of its search trials, in the order they were created."""
    results = [r for name, o in summary.outcomes.items() if "seeds" not in name for r in o.results]
    results.sort(key=lambda r: (r.config["arm"], int(r.metrics["experiment_tag"].split("_")[0])))
    by_arm: dict[str, list[dict]] = {}
    for r in results:
        by_arm.setdefault(r.config["arm"], []).append(r.config)
    return by_arm


def _intervals(summary, arm: str) -> list[tuple[float, float]]:
    """When the arm's search trials ran (--sequential-arms orders the search; the seeds stage
    runs every arm's best configuration at once either way)."""
    return [
        (df["t_start"].min(), df["t_end"].max())
        for r in summary.outcomes["search"].results
        if r.config["arm"] == arm and (df := r.metrics_dataframe) is not None
    ]


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def test_same_trials_in_either_order_and_side_by_side_arms_overlap(
    ray_local, tiny_data, data_config, tmp_path
):
    runs = {}
    for sequential in (True, False):
        tmp = tmp_path / ("in-turn" if sequential else "side-by-side")
        cfg = _study(tmp, data_config, sequential_arms=sequential, seeds=1)
        runs[sequential] = run_study(cfg, trainable=factory(SIDE_EPOCH_S, str(tmp / "starts.log")))
        assert not runs[sequential].interrupted
    in_turn, side = runs[True], runs[False]
    # One scheduling choice, one code path: the same experiments either way.
    assert set(in_turn.outcomes) == set(side.outcomes) == {"search", "seeds"}

    trials = _trials(in_turn)
    assert set(trials) == set(ARMS) and all(len(v) == TRIALS for v in trials.values())
    assert _trials(side) == trials  # same configurations, same order, per arm
    assert trials["no-seg"] != trials["set3-gbp"]

    # In turn, the arms never run at the same time; side by side (2 slots), they do.
    assert _overlap(_intervals(in_turn, ARMS[0]), _intervals(in_turn, ARMS[1])) == 0
    spans = {arm: _intervals(side, arm) for arm in ARMS}
    assert _overlap(*spans.values()) > SIDE_EPOCH_S, spans

    # The seeds stage re-runs each arm's best config with the next seed, in both orders.
    for summary in (in_turn, side):
        search = [r for n, o in summary.outcomes.items() if "seeds" not in n for r in o.results]
        seeded = [r.config for n, o in summary.outcomes.items() if "seeds" in n for r in o.results]
        assert sorted(c["arm"] for c in seeded) == sorted(ARMS)
        for config in seeded:
            mine = [r for r in search if r.config["arm"] == config["arm"]]
            best = max(mine, key=lambda r: r.metrics["best/val_auc_mean"])
            assert config["seed"] == 12 and config["lr"] == best.config["lr"]


class InterruptAfterFirstTrial(tune.Callback):
    """Ctrl-C (SIGINT to this process) once the first trial has completed, once per ``marker``
    file (Tuner.restore brings back the callbacks the experiment started with)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("sequential", [False, True], ids=["side-by-side", "in-turn"])
def test_ctrl_c_then_resume_finishes_without_repeating_trials(
    ray_local, tiny_data, data_config, tmp_path, sequential
):
    log = tmp_path / "starts.log"
    cfg = _study(tmp_path, data_config, sequential_arms=sequential, trials_per_arm=3)
    first = run_study(
        cfg,
        trainable=factory(EPOCH_S, str(log)),
        callbacks=[InterruptAfterFirstTrial(tmp_path / "interrupted")],
    )
    assert first.interrupted
    before = {
        r.metrics["trial_id"]
        for o in first.outcomes.values()
        for r in o.results
        if r.metrics and r.metrics.get("epoch") == 2
    }
    assert before  # at least the trial that completed

    with pytest.raises(SystemExit, match="sequential_arms"):  # the order it started with
        flipped = dataclasses.replace(cfg, resume=True, sequential_arms=not sequential)
        run_study(flipped, trainable=factory(EPOCH_S, str(log)))
    with pytest.raises(SystemExit, match="pass --resume"):
        run_study(cfg, trainable=factory(EPOCH_S, str(log)))

    second = run_study(dataclasses.replace(cfg, resume=True), trainable=factory(EPOCH_S, str(log)))
    assert not second.interrupted
    results = [r for o in second.outcomes.values() for r in o.results]
    assert len(results) == len(ARMS) * 3 and all(r.error is None for r in results)
    assert all(r.metrics["epoch"] == 2 for r in results)
    lines = [line.split() for line in log.read_text().splitlines()]
    started = {fields[1] for fields in lines if fields[0] == "start"}
    assert len(started) == len(ARMS) * 3  # one trial id per trial: none created twice
    epochs = Counter((fields[1], int(fields[2])) for fields in lines if fields[0] == "epoch")
    for trial_id in before:  # finished before Ctrl-C: no epoch of it runs again
        # (Tune may restart it from its last checkpoint if its end missed the last snapshot;
        # the real trainable then reports its finished MLflow record, see test_driver_kills.)
        assert [epochs[(trial_id, e)] for e in (1, 2)] == [1, 1], (trial_id, epochs)
    assert sorted(Counter(r.config["arm"] for r in results).values()) == [3, 3]
