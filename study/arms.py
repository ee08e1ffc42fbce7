"""All arms of a study in one Tune experiment, each with its own searcher and scheduler.

Tune gives an experiment one search algorithm and one trial scheduler. For the arms to share the
cluster at once while staying separate optimisation problems, ``ArmSearcher`` holds one searcher per
arm (TPE only ever sees its own arm's results) and ``ArmScheduler`` one scheduler per arm (ASHA
only compares curves of the same arm); both route every call by the trial's arm. One experiment
keeps Tune's own resume, trial retry after a lost node and Ctrl-C handling as they are.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ray.tune.result import TIME_THIS_ITER_S
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.sample import Domain
from ray.tune.search.util import _set_search_properties_backwards_compatible

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

ARM_KEY = "arm"  # the config key that names a trial's arm (TrialConfig.arm)


def split_spaces(spaces: Mapping[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict]]:
    """The values all arms' param spaces share, and what is each arm's own.

    The shared part is the experiment's ``param_space`` (fixed values only); each arm's own part
    holds its Tune domains (searched by its own searcher) and its differing fixed values (its name).
    """
    first = next(iter(spaces.values()))
    shared = {
        k: v
        for k, v in first.items()
        if not isinstance(v, Domain)
        and all(k in s and not isinstance(s[k], Domain) and s[k] == v for s in spaces.values())
    }
    own = {arm: {k: v for k, v in s.items() if k not in shared} for arm, s in spaces.items()}
    return shared, own


class _PickledState:
    """Tune's save/restore of a searcher or scheduler: the whole state, every arm's part in it."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class ArmSearcher(_PickledState, Searcher):
    """One searcher per arm behind one Tune search algorithm.

    ``suggest`` gives the next trial to the arm with the most work left to start: its trials not
    yet suggested x its mean epoch time so far (Tune's ``time_this_iter_s``; an arm not measured
    yet counts as the slowest measured one, all alike before any is). Ties go to the arm with the
    fewest running trials, then the arm order; arms whose own searcher (a ``ConcurrencyLimiter``)
    is full are passed over. So the arms start in turn, the slow ones then take more slots early
    (longest work first: the last trials of the study are short ones, not a slow arm's long trial
    on an otherwise idle cluster), and a slot never idles while any arm has trials left.

    Results and completions go to the trial's arm only: an arm's searcher hears of its own trials
    and nothing else. With a seeded sampler, an arm's configurations are exactly those it gets
    alone while TPE draws its random start-up trials; after that they follow the arm's own
    results.

    With ``in_turn`` the arms go one after another instead: an arm's trials are suggested only
    once every trial of the arms before it has ended (the order of ``--sequential-arms``, which
    leaves slots idle while an arm's last trials run; kept to compare schedules).

    Args:
        searchers: arm name -> its searcher (e.g. ``ConcurrencyLimiter(OptunaSearch(...))``).
        spaces: arm name -> its own part of the param space (Tune domains, fixed values such as
            the arm's name); see ``split_spaces``.
        trials_per_arm: trials each arm's searcher suggests.
        in_turn: one arm after another instead of side by side.
    """

    def __init__(
        self,
        searchers: Mapping[str, Searcher],
        spaces: Mapping[str, dict[str, Any]],
        trials_per_arm: int,
        *,
        in_turn: bool = False,
    ):
        if set(searchers) != set(spaces):
            raise ValueError(
                f"searchers for arms {sorted(searchers)} but spaces for {sorted(spaces)}"
            )
        super().__init__()
        self._arms = list(searchers)
        self._searchers = dict(searchers)
        self._spaces = {arm: dict(spaces[arm]) for arm in self._arms}
        self._fixed = {
            arm: {k: v for k, v in s.items() if not isinstance(v, Domain)}
            for arm, s in self._spaces.items()
        }
        self._budget = {arm: trials_per_arm for arm in self._arms}
        self._suggested = {arm: 0 for arm in self._arms}
        self._live: dict[str, set[str]] = {arm: set() for arm in self._arms}
        self._arm_of: dict[str, str] = {}
        self._epoch_time = {arm: [0.0, 0] for arm in self._arms}  # sum of seconds, reports
        self._in_turn = in_turn

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Give each arm's searcher the metric, mode and its own space on top of ``config``."""
        done = [
            _set_search_properties_backwards_compatible(
                self._searchers[arm].set_search_properties,
                metric,
                mode,
                {**config, **self._spaces[arm]},
                **spec,
            )
            for arm in self._arms
        ]
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return all(done)

    def arm_of(self, trial_id: str) -> str | None:
        return self._arm_of.get(trial_id)

    def epoch_s(self, arm: str) -> float | None:
        """The arm's mean seconds per reported epoch so far (None before its first report)."""
        total, n = self._epoch_time[arm]
        return total / n if n else None

    def work_left(self, arm: str) -> float:
        """Trials of ``arm`` not suggested yet x its epoch time (see the class docstring)."""
        measured = [t for t in map(self.epoch_s, self._arms) if t is not None]
        epoch = self.epoch_s(arm) or max(measured, default=1.0)
        return (self._budget[arm] - self._suggested[arm]) * epoch

    def _order(self, open_arms: list[str]) -> list[str]:
        """The arms to ask, in turn: side by side by work left; in turn only the first open arm,
        and none while an arm before it still has trials running."""
        if not self._in_turn:
            return sorted(
                open_arms,
                key=lambda a: (-self.work_left(a), len(self._live[a]), self._arms.index(a)),
            )
        for arm in self._arms:
            if arm in open_arms:
                return [arm]
            if self._live[arm]:
                return []
        return []

    def suggest(self, trial_id: str) -> dict | str | None:
        open_arms = [a for a in self._arms if self._suggested[a] < self._budget[a]]
        if not open_arms:
            return Searcher.FINISHED
        order = self._order(open_arms)
        for arm in order:
            config = self._searchers[arm].suggest(trial_id)
            if config is None:  # its limiter is full
                continue
            if config == Searcher.FINISHED:  # its searcher has nothing more to try
                self._budget[arm] = self._suggested[arm]
                continue
            self._suggested[arm] += 1
            self._live[arm].add(trial_id)
            self._arm_of[trial_id] = arm
            return {**config, **self._fixed[arm]}
        if all(self._suggested[a] >= self._budget[a] for a in self._arms):
            return Searcher.FINISHED
        return None  # every arm with trials left has as many running as its limiter allows

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        arm = self._arm_of.get(trial_id)
        if arm is None:
            return
        seconds = result.get(TIME_THIS_ITER_S)
        if isinstance(seconds, int | float) and seconds > 0:
            self._epoch_time[arm][0] += seconds
            self._epoch_time[arm][1] += 1
        self._searchers[arm].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        arm = self._arm_of.get(trial_id)
        if arm is None:
            return
        self._searchers[arm].on_trial_complete(trial_id, result=result, error=error)
        self._live[arm].discard(trial_id)


class ArmScheduler(_PickledState, FIFOScheduler):
    """One trial scheduler per arm (e.g. ASHA); each sees only its own arm's trials.

    Trials start in submission order (FIFO); what an arm's scheduler decides (continue, stop) is
    based on that arm's trials alone.

    Args:
        schedulers: arm name -> its scheduler.
    """

    def __init__(self, schedulers: Mapping[str, TrialScheduler]):
        super().__init__()
        self._schedulers = dict(schedulers)

    def _of(self, trial: Trial) -> TrialScheduler:
        arm = trial.config.get(ARM_KEY)
        if arm not in self._schedulers:
            raise KeyError(
                f"trial {trial.trial_id} has arm {arm!r}; this experiment schedules the arms "
                f"{', '.join(self._schedulers)}"
            )
        return self._schedulers[arm]

    @property
    def metric(self) -> str | None:
        return next(iter(self._schedulers.values())).metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        done = [s.set_search_properties(metric, mode, **spec) for s in self._schedulers.values()]
        return all(done)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{arm}: {s.debug_string()}" for arm, s in self._schedulers.items())
