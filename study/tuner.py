"""Tune plumbing of the study: search spaces, searchers, schedulers, experiments and storage.

A plan's stage is ONE Tune experiment (``<storage>/<study>/<stage>``): ``search`` runs every arm
at once, its searcher and scheduler holding one Optuna study and one ASHA per arm (``study.arms``:
TPE never mixes arms' histories, ASHA never compares their curves), and ``--sequential-arms`` is
only that searcher's order (an arm's trials start once the arm before it has ended). A grid stage
(``seeds``, ``evidence``) runs fixed configurations without search or early stopping. One
experiment rather than one Tuner per arm, because ``Tuner.fit`` blocks and owns the driver's signal
handling, while one experiment keeps Tune's resume, trial retry on a lost node and Ctrl-C as
they are. ``Launch`` bundles what every experiment of a study is started with.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from search_spaces import FloatRange, SearchSpace, get_space
from study.arms import ArmScheduler, ArmSearcher, split_spaces
from study.presets import StudyConfig
from study.resources import trial_resources
from study.storage_guard import TUNER_FILE, StorageSigner, sign_files, verify_experiment
from trainables.data.cached import CachedData
from trainables.model_sets import get_arm
from trainables.record import SEARCH_MODE
from trainables.trainable import StudyContext, train_trial

MODE = SEARCH_MODE
_REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "az://")

Data = CachedData | Mapping[str, CachedData]  # one dataset, or several by name (grid plans)
TrainableFactory = Callable[[StudyConfig, Data, StudyContext], Any]
"""Builds a stage's Tune trainable from the study config, the data and the stage's context."""


@dataclass(frozen=True)
class Launch:
    """What every Tune experiment of a study starts with."""

    cfg: StudyConfig  # resources resolved
    data: Data
    study: StudyContext  # the stage's trial context (set per stage with ``for_stage``)
    callbacks: tuple[Any, ...] = ()
    make_trainable: TrainableFactory | None = None  # default: ``trainable`` (the real trial)

    def for_stage(self, stage: str) -> Launch:
        return dataclasses.replace(self, study=dataclasses.replace(self.study, stage=stage))

    def trainable(self) -> Any:
        return (self.make_trainable or trainable)(self.cfg, self.data, self.study)


def tune_domain(rng: FloatRange) -> Any:
    """The Tune domain of a search-space range (the space is given to Tune once, in param_space)."""
    return tune.loguniform(rng.low, rng.high) if rng.log else tune.uniform(rng.low, rng.high)


def arm_space(cfg: StudyConfig, arm_name: str) -> SearchSpace:
    return get_space(cfg.search_space)(get_arm(arm_name))


def param_space(cfg: StudyConfig, arm_name: str, space: SearchSpace) -> dict[str, Any]:
    """Fixed TrialConfig values of the study, the arm, and Tune domains for the searched ones."""
    fixed = dataclasses.replace(cfg.trial, arm=arm_name).to_dict()
    return {**fixed, **{name: tune_domain(rng) for name, rng in space.params.items()}}


class _OptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial with an undefined (NaN) metric FAILED.

    The stock one passes NaN to ``study.tell`` as a COMPLETE value, which Optuna refuses (logged
    and ignored), so the trial stays RUNNING in the Optuna study for ever. FAIL is Optuna's state
    for "no objective value": TPE leaves the trial out instead of learning a made-up score.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if isinstance(value, float) and math.isnan(value):
            return super().on_trial_complete(trial_id, None, error=True)
        return super().on_trial_complete(trial_id, result, error)


def build_searcher(cfg: StudyConfig, arm_name: str, space: SearchSpace) -> ConcurrencyLimiter:
    """OptunaSearch (TPE, seeded, baseline point first) behind a ConcurrencyLimiter.

    metric/mode are left to TuneConfig (stated once); with ``optuna_storage`` the Optuna study
    ``<study>-<arm>`` is persisted there, so optuna-dashboard can show it. Every arm's sampler gets
    the study seed, so arms searching the same parameters draw the same first random candidates
    (common random numbers) before TPE follows each arm's own results.
    """
    storage = optuna.storages.RDBStorage(cfg.optuna_storage) if cfg.optuna_storage else None
    searcher = _OptunaSearch(
        points_to_evaluate=space.points_to_evaluate() or None,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        study_name=f"{cfg.study_name}-{arm_name}" if storage else None,
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent(cfg))


def build_arm_searcher(
    cfg: StudyConfig, arms: Sequence[str]
) -> tuple[dict[str, Any], ConcurrencyLimiter]:
    """The param space all arms share, and their searcher: an ``ArmSearcher`` holding each arm's
    own ``build_searcher`` (its own Optuna study, seeded alike), behind a ConcurrencyLimiter of
    ``max_concurrent`` trials for all arms together (which also lets Tune start that many trial
    actors at once, not one at a time); ``sequential_arms`` sets its order."""
    spaces = {arm: arm_space(cfg, arm) for arm in arms}
    shared, own = split_spaces({arm: param_space(cfg, arm, sp) for arm, sp in spaces.items()})
    searchers = {arm: build_searcher(cfg, arm, sp) for arm, sp in spaces.items()}
    arm_searcher = ArmSearcher(searchers, own, cfg.trials_per_arm, in_turn=cfg.sequential_arms)
    return shared, ConcurrencyLimiter(arm_searcher, max_concurrent=max_concurrent(cfg))


def build_scheduler(cfg: StudyConfig) -> ASHAScheduler:
    """ASHA on the search metric; one report per epoch, so time is counted in epochs."""
    epochs = cfg.trial.epochs
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=max(1, min(cfg.grace_period, epochs)),
        reduction_factor=cfg.reduction_factor,
    )


def build_arm_scheduler(cfg: StudyConfig, arms: Sequence[str]) -> ArmScheduler:
    """One ASHA per arm: a trial is compared with its own arm's trials only."""
    return ArmScheduler({arm: build_scheduler(cfg) for arm in arms})


def max_concurrent(cfg: StudyConfig) -> int:
    """Trials at once, all arms together."""
    if cfg.max_concurrent is None:
        raise ValueError("max_concurrent is left to the cluster: call resolve_resources first")
    return cfg.max_concurrent


def check_storage_path(storage_path: str, node_hosts: Sequence[str], *, shared: bool) -> None:
    """Refuse a node-local storage path on a cluster whose nodes are different machines.

    Ray no longer syncs trial checkpoints to the head node: with several machines, checkpoints
    must go to storage every node reaches (s3://, gs://, or a path mounted on all nodes, which the
    caller vouches for with ``shared``), or a trial cannot resume on another node.

    Raises:
        ValueError: a local path, nodes on more than one host, and ``shared`` not set.
    """
    if storage_path.startswith(_REMOTE_SCHEMES) or shared:
        return
    hosts = sorted(set(node_hosts))
    if len(hosts) > 1:
        raise ValueError(
            f"--storage-path {storage_path!r} is a node-local path but the Ray cluster spans "
            f"{len(hosts)} machines ({', '.join(hosts)}). Ray no longer syncs checkpoints to the "
            f"head, so a trial could not resume on another node. Use s3:// or gs:// storage, or "
            f"pass --storage-is-shared if this path is a mount (NFS) every node sees."
        )


def cluster_hosts() -> list[str]:
    """Hostnames of the alive nodes of the connected Ray cluster."""
    return [
        n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or socket.gethostname()
        for n in ray.nodes()
        if n.get("Alive")
    ]


def trainable(cfg: StudyConfig, data: Data, study: StudyContext):
    """The trial function with the dataset (object store) and resources bound: the study's
    ``TrainableFactory`` unless another is given (``benchmarks.cluster_sim`` simulates trials).

    Tuners reuse trial actors (``reuse_actors=True``): a fresh worker spends longer importing
    torch, timm and MLflow than a small trial trains.
    """
    bound = tune.with_parameters(train_trial, data=data, study=study)
    return tune.with_resources(bound, trial_resources(cfg))


def experiment_root(cfg: StudyConfig) -> str:
    """``<storage>/<study_name>``: the folder (or URI prefix) holding the study's experiments."""
    return cfg.storage_root().rstrip("/") + "/" + str(cfg.study_name)


def run_config(cfg: StudyConfig, name: str, callbacks: Sequence[Any] = ()) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=experiment_root(cfg),
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        # The newest checkpoint is what a restarted trial needs; one spare guards a partial upload.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # Signs what each experiment save staged, before Tune uploads it (study.storage_guard).
        callbacks=[StorageSigner(), *callbacks],
        # Quiet: study.progress prints one line per trial; --verbose restores Tune's reporter.
        verbose=None if cfg.verbose else 0,
    )


@dataclass
class ArmOutcome:
    """A finished (or interrupted) Tune experiment of one stage."""

    name: str  # Tune experiment name (the stage: "search", "seeds", "evidence")
    results: tune.ResultGrid
    interrupted: bool  # Ctrl-C / SIGINT: some trials neither finished nor errored

    def config_of(self, trial_id: str) -> dict[str, Any] | None:
        """The Tune config of one of its trials (None when Tune does not know the id)."""
        for r in self.results:
            if (r.metrics or {}).get("trial_id") == trial_id or Path(r.path).name == trial_id:
                return dict(r.config)
        return None


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default repeats every sampled value)."""
    return f"{trial.trial_id}"


def _fit_watching_sigint(tuner: tune.Tuner) -> tuple[tune.ResultGrid, bool]:
    """``tuner.fit()``, and whether Ctrl-C (SIGINT) ended it.

    Tune installs its own SIGINT handler for the run (it saves the experiment state and returns)
    and puts the previous handler back only when a signal arrived; it does not tell the caller.
    So: a handler that is the previous one again means Tune caught a SIGINT. Restoring our handler
    afterwards also makes a later Ctrl-C, between experiments, raise KeyboardInterrupt as usual.
    """
    watch = (
        threading.current_thread() is threading.main_thread()
        and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
    )
    before = signal.getsignal(signal.SIGINT) if watch else None
    try:
        grid = tuner.fit()
    finally:
        caught = watch and signal.getsignal(signal.SIGINT) is before
        if watch:
            signal.signal(signal.SIGINT, before)
    return grid, caught


def experiment_path(cfg: StudyConfig, name: str) -> str:
    return experiment_root(cfg) + "/" + name


def existing_experiments(cfg: StudyConfig, names: Sequence[str]) -> list[str]:
    """Those of the Tune experiments ``names`` that this study already has in its storage."""
    return [n for n in names if tune.Tuner.can_restore(experiment_path(cfg, n))]


def _fit(
    launch: Launch,
    name: str,
    make_tuner: Callable[[Any], tune.Tuner],
    expected: int,
    what: str = "",
) -> ArmOutcome:
    path = experiment_path(launch.cfg, name)
    fn = launch.trainable()
    restorable = tune.Tuner.can_restore(path)
    if restorable and not launch.cfg.resume:
        # A second Tuner in the same folder would mix two experiments' trials.
        raise FileExistsError(
            f"{path} already holds this study's {name!r} experiment: pass --resume to continue "
            f"it, or --study-name to start another study"
        )
    if restorable:
        verify_experiment(path)  # Tuner.restore unpickles files there: only the driver's own
        print(f"[study] resuming {name}{what} from {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=fn, resume_errored=True)
    else:
        tuner = make_tuner(fn)
        sign_files(path, [TUNER_FILE])  # written by the Tuner just now, straight to the storage
    grid, caught = _fit_watching_sigint(tuner)
    ended = grid.num_terminated + grid.num_errors
    interrupted = caught or len(grid) < expected or ended < len(grid)
    return ArmOutcome(name, grid, interrupted)


def _new_tuner(
    launch: Launch, name: str, fn: Any, param_space: dict[str, Any], **tune_config: Any
) -> tune.Tuner:
    """A Tuner on the study's search metric (``StudyConfig.search_metric``) with its run config;
    ``tune_config`` adds the search algorithm, scheduler, sample count or concurrency."""
    return tune.Tuner(
        fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=launch.cfg.search_metric,
            mode=MODE,
            trial_dirname_creator=trial_dirname,
            reuse_actors=True,
            **tune_config,
        ),
        run_config=run_config(launch.cfg, name, launch.callbacks),
    )


def search(launch: Launch, arms: Sequence[str], name: str) -> ArmOutcome:
    """Search every arm in one experiment: ``trials_per_arm`` trials each, every arm with its own
    Optuna study and ASHA (``study.arms``); restored with ``cfg.resume``."""
    cfg = launch.cfg

    def make(fn: Any) -> tune.Tuner:
        shared, searcher = build_arm_searcher(cfg, arms)
        return _new_tuner(
            launch, name, fn, shared, search_alg=searcher,
            scheduler=build_arm_scheduler(cfg, arms), num_samples=cfg.trials_per_arm * len(arms),
        )  # fmt: skip

    return _fit(launch, name, make, cfg.trials_per_arm * len(arms), f" of {', '.join(arms)}")


def grid(launch: Launch, name: str, points: Sequence[dict[str, Any]]) -> ArmOutcome:
    """Run the given Tune configs, in order, without search or early stopping.

    Values the configs share are fixed in the param space; one that differs is declared as a
    ``tune.choice`` of its values so that every trial pins it to its config's (each trial is one
    of ``points``; nothing is sampled).
    """
    space: dict[str, Any] = {}
    for key, value in points[0].items():
        distinct = list(dict.fromkeys(repr(p[key]) for p in points))
        values = {repr(p[key]): p[key] for p in points}
        space[key] = value if len(distinct) == 1 else tune.choice([values[d] for d in distinct])

    def make(fn: Any) -> tune.Tuner:
        gen = BasicVariantGenerator(
            points_to_evaluate=list(points), max_concurrent=max_concurrent(launch.cfg)
        )
        return _new_tuner(launch, name, fn, space, search_alg=gen, num_samples=len(points))

    return _fit(launch, name, make, len(points))


def finished_results(outcome: ArmOutcome, arm: str | None = None) -> list[tune.Result]:
    """Results of trials (of ``arm``, or all) that ran to the end without error."""
    return [
        r
        for r in outcome.results
        if r.error is None and r.metrics and (arm is None or r.config.get("arm") == arm)
    ]
