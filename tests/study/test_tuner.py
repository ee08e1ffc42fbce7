"""Searcher, scheduler, search-space conversion and the storage check (no Ray cluster needed)."""

from __future__ import annotations

import dataclasses

import pytest
from ray.tune.search.sample import Float, LogUniform, Uniform

from search_spaces import get_space, list_spaces
from study import tuner
from study.presets import get_preset, with_overrides
from trainables.config import TrialConfig
from trainables.model_sets import get_arm, list_arms


def _cfg(seed=0, **kw):
    # max_concurrent is otherwise left to the cluster (study.resources.resolve_resources)
    cfg = dataclasses.replace(get_preset("demo"), study_name="t", **{"max_concurrent": 2, **kw})
    return with_overrides(cfg, trial={"seed": seed})  # the study's seed is its trials' seed


@pytest.mark.parametrize("space_name", list_spaces())
@pytest.mark.parametrize("arm_name", ["no-seg", "unet", "set3-gbp"])
def test_param_space_is_fixed_config_plus_tune_domains(space_name, arm_name):
    cfg = _cfg(search_space=space_name)
    space = tuner.arm_space(cfg, arm_name)
    ps = tuner.param_space(cfg, arm_name, space)
    # Everything TrialConfig needs is there, so the trainable can build it from config alone.
    assert set(ps) == {f.name for f in dataclasses.fields(TrialConfig)}
    assert ps["arm"] == arm_name and ps["epochs"] == cfg.trial.epochs
    lr = ps["lr"]
    assert isinstance(lr, Float) and isinstance(lr.get_sampler(), LogUniform)
    assert (lr.lower, lr.upper) == (space.params["lr"].low, space.params["lr"].high)
    for name in ("gamma", "seg_ratio"):
        if name in space.params:
            assert isinstance(ps[name].get_sampler(), Uniform)
        else:  # not searched for this arm: the fixed baseline value
            assert ps[name] == getattr(TrialConfig(), name)
    assert isinstance(ps["seg_ratio"], Float) == (
        arm_name == "set3-gbp" and space_name != "lr-only"
    )


@pytest.mark.parametrize("arm_name", list_arms())
def test_searcher_suggests_the_baseline_first_then_samples_in_range(arm_name):
    cfg = _cfg(search_space="paper", seed=3)
    space = tuner.arm_space(cfg, arm_name)
    limiter = tuner.build_searcher(cfg, arm_name, space)
    # What Tuner does with param_space + TuneConfig(metric, mode):
    assert limiter.set_search_properties(
        "val/auc_mean", "max", tuner.param_space(cfg, arm_name, space)
    )
    first = limiter.suggest("t1")
    assert first == space.points_to_evaluate()[0]
    second = limiter.suggest("t2")
    assert second is not None and second != first
    for name, value in second.items():
        assert space.params[name].contains(value)
    # ConcurrencyLimiter: a third suggestion waits until a running trial completes.
    limited = tuner.build_searcher(dataclasses.replace(cfg, max_concurrent=1), arm_name, space)
    limited.set_search_properties("val/auc_mean", "max", tuner.param_space(cfg, arm_name, space))
    assert limited.suggest("a") is not None and limited.suggest("b") is None


def test_tpe_sampler_is_seeded():
    space = get_space("paper")(get_arm("set3-gbp"))

    def draws(seed):
        cfg = _cfg(search_space="paper", seed=seed, max_concurrent=8)
        s = tuner.build_searcher(cfg, "set3-gbp", space)
        s.set_search_properties("val/auc_mean", "max", tuner.param_space(cfg, "set3-gbp", space))
        return [s.suggest(f"t{i}") for i in range(4)][1:]  # after the enqueued baseline

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_optuna_storage_persists_the_arm_study(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = _cfg(search_space="demo", optuna_storage=url)
    space = tuner.arm_space(cfg, "unet")
    s = tuner.build_searcher(cfg, "unet", space)
    s.set_search_properties("val/auc_mean", "max", tuner.param_space(cfg, "unet", space))
    s.suggest("t1")
    s.on_trial_complete("t1", {"val/auc_mean": 0.7, "training_iteration": 1})
    study = optuna.load_study(study_name="t-unet", storage=url)
    assert [t.value for t in study.trials if t.value is not None] == [0.7]


def _asha_decisions(cfg, reports):
    """Feed ``reports`` [(epoch, {trial: val AUC})] to the study's scheduler, as Tune would."""
    from ray.tune.experiment import Trial

    sched = tuner.build_scheduler(cfg)
    sched.set_search_properties("val/auc_mean", "max")
    trials = {}
    decisions = []
    for epoch, values in reports:
        for name, value in values.items():
            if name not in trials:
                trials[name] = Trial("__fake", stub=True, trial_id=name)
                sched.on_trial_add(None, trials[name])
            result = {"training_iteration": epoch, "val/auc_mean": value}
            decisions.append((epoch, name, sched.on_trial_result(None, trials[name], result)))
    return decisions


def test_scheduler_stops_weak_trials_at_epoch_rungs_and_all_at_the_last_epoch():
    # demo: 3 epochs, grace 1, reduction factor 2: rungs after epochs 1 and 2.
    decisions = _asha_decisions(
        _cfg(),
        [(1, {"a": 0.9, "b": 0.1, "c": 0.95}), (2, {"a": 0.5, "c": 0.96}), (3, {"c": 0.97})],
    )
    assert decisions == [
        (1, "a", "CONTINUE"),  # first at the rung: nothing to compare with
        (1, "b", "STOP"),  # below the rung's best half after epoch 1
        (1, "c", "CONTINUE"),
        (2, "a", "CONTINUE"),
        (2, "c", "CONTINUE"),
        (3, "c", "STOP"),  # the last epoch (max_t = epochs) ends every trial
    ]
    # A grace period longer than the run: no early stop, every trial runs to the last epoch.
    weak_and_strong = [(e, {"a": 0.9, "b": 0.1}) for e in (1, 2, 3)]
    decisions = _asha_decisions(_cfg(grace_period=5), weak_and_strong)
    assert [d for _, _, d in decisions] == ["CONTINUE"] * 4 + ["STOP"] * 2


def test_storage_check_refuses_local_paths_on_multi_machine_clusters():
    with pytest.raises(ValueError, match="no longer syncs"):
        tuner.check_storage_path("/home/me/ray_results", ["node-a", "node-b"], shared=False)
    # Fine: one machine (several Ray nodes on it), remote storage, or a declared shared mount.
    tuner.check_storage_path("/home/me/ray_results", ["node-a", "node-a"], shared=False)
    tuner.check_storage_path("s3://bucket/ray", ["node-a", "node-b"], shared=False)
    tuner.check_storage_path("gs://bucket/ray", ["node-a", "node-b"], shared=False)
    tuner.check_storage_path("/mnt/nfs/ray", ["node-a", "node-b"], shared=True)


def test_experiment_paths_are_per_study_and_arm(tmp_path, monkeypatch):
    cfg = _cfg(storage_path=str(tmp_path))
    assert tuner.experiment_root(cfg) == f"{tmp_path}/t"
    assert tuner.experiment_root(_cfg(storage_path="s3://b/x/")) == "s3://b/x/t"
    monkeypatch.chdir(tmp_path)  # a relative path is pinned now: trials chdir
    assert tuner.experiment_root(_cfg(storage_path="rel")) == f"{tmp_path.resolve()}/rel/t"
    rc = tuner.run_config(cfg, "set3-gbp")
    assert rc.name == "set3-gbp" and rc.failure_config.max_failures == cfg.max_failures


def test_an_undefined_search_metric_fails_the_optuna_trial_instead_of_scoring_it(tmp_path):
    """A trial whose validation AUC is undefined (NaN) is an Optuna FAIL, which TPE leaves out;
    a finite value completes as usual."""
    import math

    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    cfg = _cfg(search_space="demo", optuna_storage=url)
    space = tuner.arm_space(cfg, "unet")
    s = tuner.build_searcher(cfg, "unet", space)
    s.set_search_properties("val/auc_mean", "max", tuner.param_space(cfg, "unet", space))
    s.suggest("t1")
    s.suggest("t2")
    s.on_trial_result("t1", {"val/auc_mean": math.nan, "training_iteration": 1})
    s.on_trial_complete("t1", {"val/auc_mean": math.nan, "training_iteration": 2})
    s.on_trial_complete("t2", {"val/auc_mean": 0.7, "training_iteration": 2})
    trials = optuna.load_study(study_name="t-unet", storage=url).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[0].value is None and trials[1].value == 0.7
