"""One experiment for all arms: each arm's searcher and scheduler see only that arm's trials
(no Ray cluster needed: the searcher and scheduler are driven as Tune drives them)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.sample import Domain

from study import tuner
from study.arms import ArmScheduler, split_spaces
from study.presets import get_preset, with_overrides
from study.resources import resolve_resources, trial_slots
from trainables.config import TrialConfig
from trainables.record import SEARCH_METRIC, SEARCH_MODE

ARMS = ("no-seg", "set3-gbp")  # different spaces: set 3 also searches seg_ratio


def _cfg(seed=3, **kw):
    base = {"study_name": "t", "arms": ARMS, "search_space": "paper"}
    cfg = dataclasses.replace(get_preset("demo"), **{**base, **kw})
    return with_overrides(cfg, trial={"seed": seed})  # the study's seed is its trials' seed


def _value(config: dict) -> float:
    """A deterministic score with an optimum, so TPE's choices depend on what it was told."""
    return math.exp(-((math.log10(config["lr"]) + 3.2) ** 2)) + 0.1 * config.get("seg_ratio", 0)


def _arm_searcher(cfg):
    shared, searcher = tuner.build_arm_searcher(cfg, ARMS)
    assert searcher.set_search_properties(SEARCH_METRIC, SEARCH_MODE, shared)
    return shared, searcher


def _alone(cfg, arm):
    space = tuner.arm_space(cfg, arm)
    searcher = tuner.build_searcher(cfg, arm, space)
    searcher.set_search_properties(SEARCH_METRIC, SEARCH_MODE, tuner.param_space(cfg, arm, space))
    return searcher


def _play(searcher, total: int, prefix: str = "t") -> list[tuple[str, dict]]:
    """Drive a searcher as Tune does with full slots: suggest until it has no room, then
    complete the oldest running trial with its score; until it is finished."""
    suggested, live, n = [], [], 0
    while n < total:  # Tune's num_samples: a searcher alone is not told its budget
        trial_id = f"{prefix}{n}"
        config = searcher.suggest(trial_id)
        assert config != Searcher.FINISHED, "finished before its budget"
        assert config is not None or live, "no room and nothing running"
        if config is None:
            done, done_config = live.pop(0)
            searcher.on_trial_result(done, {SEARCH_METRIC: 0.5, "training_iteration": 1})
            searcher.on_trial_complete(
                done, {SEARCH_METRIC: _value(done_config), "training_iteration": 2}
            )
            continue
        n += 1
        suggested.append((trial_id, config))
        live.append((trial_id, config))
    return suggested


def test_split_spaces_keeps_the_shared_fixed_values_and_each_arms_own():
    cfg = _cfg()
    spaces = {a: tuner.param_space(cfg, a, tuner.arm_space(cfg, a)) for a in ARMS}
    shared, own = split_spaces(spaces)
    assert shared["epochs"] == cfg.trial.epochs and shared["seed"] == cfg.seed
    assert not {"arm", "lr", "seg_ratio"} & set(shared)
    # no-seg fixes seg_ratio, set 3 searches it: each arm keeps its own.
    assert set(own["no-seg"]) == set(own["set3-gbp"]) == {"arm", "lr", "gamma", "seg_ratio"}
    assert isinstance(own["set3-gbp"]["seg_ratio"], Domain)
    assert own["no-seg"]["seg_ratio"] == TrialConfig().seg_ratio
    for arm in ARMS:
        assert own[arm]["arm"] == arm
        assert {**shared, **own[arm]} == spaces[arm]  # nothing lost, nothing added


def test_each_arm_gets_its_own_trials_in_turn_within_budget_and_limits(tmp_path):
    # Each arm's Optuna study persisted, so that what it was told can be read back publicly.
    optuna_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = _cfg(trials_per_arm=3, max_concurrent=4, optuna_storage=optuna_url)
    shared, searcher = _arm_searcher(cfg)
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    # Fewest running first: the arms alternate, until all 4 trials at once are running.
    assert [c["arm"] for c in configs[:4]] == ["no-seg", "set3-gbp", "no-seg", "set3-gbp"]
    assert configs[4] is None
    for config in configs[:4]:
        space = tuner.arm_space(cfg, config["arm"])
        expected = tuner.param_space(cfg, config["arm"], space)
        full = {**shared, **config}  # what Tune makes of the shared space and the suggestion
        assert set(full) == set(expected)
        for name, value in full.items():
            assert (
                space.params[name].contains(value)
                if name in space.params
                else (value == expected[name])
            ), name
    for config in configs[:2]:  # each arm's baseline point first
        baseline = tuner.arm_space(cfg, config["arm"]).points_to_evaluate()[0]
        assert {k: config[k] for k in baseline} == baseline

    searcher.on_trial_complete("t0", {SEARCH_METRIC: 0.9, "training_iteration": 2})
    import optuna

    studies = {arm: optuna.load_study(study_name=f"t-{arm}", storage=optuna_url) for arm in ARMS}
    assert [t.value for t in studies["no-seg"].trials if t.value is not None] == [0.9]
    assert not [t.value for t in studies["set3-gbp"].trials if t.value is not None]
    assert searcher.suggest("t5")["arm"] == "no-seg"  # the arm with room
    assert searcher.suggest("t6") is None  # 4 running; no-seg has spent its 3 trials anyway
    searcher.on_trial_complete("t1", {SEARCH_METRIC: 0.1, "training_iteration": 2})
    assert searcher.suggest("t6")["arm"] == "set3-gbp"
    assert searcher.suggest("t7") is None  # 4 running again
    searcher.on_trial_complete("t2", {SEARCH_METRIC: 0.3, "training_iteration": 2})
    assert searcher.suggest("t7") == Searcher.FINISHED  # every arm has had its trials


def test_the_arm_with_the_most_work_left_gets_the_next_slot():
    cfg = _cfg(trials_per_arm=6, max_concurrent=10)
    _, searcher = _arm_searcher(cfg)
    arms = searcher.searcher
    assert [searcher.suggest(f"t{i}")["arm"] for i in range(2)] == list(ARMS)  # in turn at first

    # set 3's epochs take 4x as long: its 5 trials left are 20 s of work against no-seg's 5 s.
    for trial_id, seconds in (("t0", 1.0), ("t1", 4.0)):
        result = {SEARCH_METRIC: 0.5, "training_iteration": 1, "time_this_iter_s": seconds}
        searcher.on_trial_result(trial_id, result)
    assert (arms.epoch_s("no-seg"), arms.epoch_s("set3-gbp")) == (1.0, 4.0)
    assert (arms.work_left("no-seg"), arms.work_left("set3-gbp")) == (5.0, 20.0)
    # Longest work first: set 3 until its 1 trial left (4 s) is less than no-seg's 5; then 4 s
    # each, and the tie goes to the arm with fewer trials running (no-seg).
    nxt = [searcher.suggest(f"t{i}")["arm"] for i in range(2, 8)]
    assert nxt == ["set3-gbp"] * 4 + ["no-seg", "no-seg"]


def test_an_arm_gets_the_same_configurations_beside_other_arms_as_alone():
    # 14 trials: past TPE's 10 random start-up trials, so the later configurations depend on the
    # results the arm's searcher was told. Beside another arm, an arm's searcher must be asked and
    # told exactly what it would be alone, and nothing about the other arm.
    # The two arms share 4 trials at once, 2 each: as each arm alone with 2.
    _, searcher = _arm_searcher(_cfg(trials_per_arm=14, max_concurrent=4))
    together = _play(searcher, 2 * 14)
    cfg = _cfg(trials_per_arm=14, max_concurrent=2)
    for arm in ARMS:
        alone = [c for _, c in _play(_alone(cfg, arm), 14)]
        searched = tuner.arm_space(cfg, arm).params
        mine = [{k: c[k] for k in searched} for _, c in together if c["arm"] == arm]
        assert len(mine) == 14 and all(set(c) == set(searched) for c in alone)
        assert mine == alone, arm
    assert [c["arm"] for _, c in together[:4]] == ["no-seg", "set3-gbp"] * 2  # side by side


def test_save_and_restore_continue_the_same_search(tmp_path):
    # As Tune saves and restores an experiment's searcher (SearchGenerator.save_to_dir).
    cfg = _cfg(trials_per_arm=4, max_concurrent=3)
    _, first = _arm_searcher(cfg)
    for i in range(3):
        first.suggest(f"t{i}")
    first.on_trial_complete("t0", {SEARCH_METRIC: 0.7, "training_iteration": 2})
    SearchGenerator(first).save_to_dir(str(tmp_path), session_str="s")
    _, second = _arm_searcher(cfg)  # what Tuner.restore rebuilds, then restores into
    SearchGenerator(second).restore_from_dir(str(tmp_path))
    assert second.searcher.arm_of("t1") == first.searcher.arm_of("t1") == "set3-gbp"
    assert second.live_trials == first.live_trials == {"t1", "t2"}
    after = [first.suggest(f"t{i}") for i in range(3, 6)]
    assert after[-1] is None  # 3 at once
    assert [second.suggest(f"t{i}") for i in range(3, 6)] == after


def _trial(trial_id: str, arm: str) -> Trial:
    return Trial("fn", config={"arm": arm}, trial_id=trial_id, stub=True)


def _result(epoch: int, value: float) -> dict:
    return {"training_iteration": epoch, SEARCH_METRIC: value}


def test_asha_compares_a_trial_with_its_own_arm_only():
    cfg = _cfg()  # demo: 3 epochs, grace 1, reduction factor 2
    good, weak, weaker = _trial("a1", "no-seg"), _trial("b1", "set3-gbp"), _trial("a2", "no-seg")

    shared = tuner.build_scheduler(cfg)  # one ASHA over both arms: what must not happen
    shared.set_search_properties(SEARCH_METRIC, SEARCH_MODE)
    for t in (good, weak):
        shared.on_trial_add(None, t)
    assert shared.on_trial_result(None, good, _result(1, 0.9)) == TrialScheduler.CONTINUE
    assert shared.on_trial_result(None, weak, _result(1, 0.1)) == TrialScheduler.STOP

    per_arm = tuner.build_arm_scheduler(cfg, ARMS)
    assert per_arm.set_search_properties(SEARCH_METRIC, SEARCH_MODE)
    for t in (good, weak, weaker):
        per_arm.on_trial_add(None, t)
    assert per_arm.on_trial_result(None, good, _result(1, 0.9)) == TrialScheduler.CONTINUE
    # The first set-3 trial at the rung: nothing of its arm to compare with.
    assert per_arm.on_trial_result(None, weak, _result(1, 0.1)) == TrialScheduler.CONTINUE
    # A second no-seg trial is compared with the first one.
    assert per_arm.on_trial_result(None, weaker, _result(1, 0.2)) == TrialScheduler.STOP
    assert per_arm.metric == SEARCH_METRIC
    with pytest.raises(KeyError, match="no-seg, set3-gbp"):
        per_arm.on_trial_add(None, _trial("c1", "unet"))


def test_arm_scheduler_routes_completion_and_removal(tmp_path):
    cfg = _cfg()
    per_arm = ArmScheduler({arm: tuner.build_scheduler(cfg) for arm in ARMS})
    per_arm.set_search_properties(SEARCH_METRIC, SEARCH_MODE)
    a, b = _trial("a1", "no-seg"), _trial("b1", "set3-gbp")
    per_arm.on_trial_add(None, a)
    per_arm.on_trial_add(None, b)
    per_arm.on_trial_complete(None, a, _result(3, 0.8))  # a1's score at no-seg's top rung (2)
    per_arm.on_trial_remove(None, b)  # b1 leaves set 3's ASHA without a score
    path = tmp_path / "sched.pkl"
    per_arm.save(str(path))
    again = ArmScheduler({})
    again.restore(str(path))  # what Tuner.restore does
    for sched in (per_arm, again):
        late_a, late_b = _trial("a2", "no-seg"), _trial("b2", "set3-gbp")
        sched.on_trial_add(None, late_a)
        sched.on_trial_add(None, late_b)
        for t in (late_a, late_b):
            assert sched.on_trial_result(None, t, _result(1, 0.1)) == TrialScheduler.CONTINUE
        # Below a1's score at epoch 2, in a1's arm: stopped. Set 3 has no score to compare with.
        assert sched.on_trial_result(None, late_a, _result(2, 0.1)) == TrialScheduler.STOP
        assert sched.on_trial_result(None, late_b, _result(2, 0.1)) == TrialScheduler.CONTINUE
        with pytest.raises(KeyError, match="no-seg, set3-gbp"):
            sched.on_trial_add(None, _trial("c1", "unet"))


def test_resources_default_from_the_cluster():
    paper = dataclasses.replace(get_preset("paper"), study_name="p")
    assert paper.gpus_per_trial is None and paper.max_concurrent is None
    on_gpus = resolve_resources(paper, {"CPU": 64.0, "GPU": 8.0})
    assert (on_gpus.gpus_per_trial, on_gpus.max_concurrent) == (1.0, 8)
    # Fractional GPUs pack trials, until the CPUs run out (4 per trial in the paper preset).
    half = dataclasses.replace(paper, gpus_per_trial=0.5)
    assert trial_slots(half, {"CPU": 64.0, "GPU": 8.0}) == 16
    assert trial_slots(half, {"CPU": 32.0, "GPU": 8.0}) == 8
    assert trial_slots(dataclasses.replace(paper, gpus_per_trial=0.1), {"CPU": 64, "GPU": 1}) == 10
    on_cpus = resolve_resources(paper, {"CPU": 16.0})
    assert (on_cpus.gpus_per_trial, on_cpus.max_concurrent) == (0.0, 4)
    assert resolve_resources(get_preset("demo"), {"CPU": 2.0}).max_concurrent == 2
    assert resolve_resources(get_preset("demo"), {"CPU": 0.5}).max_concurrent == 1
    given = dataclasses.replace(paper, max_concurrent=3, gpus_per_trial=0.25)
    assert resolve_resources(given, {"CPU": 64.0, "GPU": 8.0}) == given
    with pytest.raises(ValueError, match="resolve_resources"):
        tuner.build_searcher(paper, "unet", tuner.arm_space(paper, "unet"))
