"""The study driver as the fault tests run it: ``python -m study``'s flags, plus a self-inflicted
SIGKILL (no cleanup, no state saved: what ``kill -9`` or the OOM killer does) at a chosen Tune
event, never at a chosen second, so the test reads the same on a fast or a slow machine.

``python -m tests.study.fault_driver --kill-at 1:1 --kill-marker M -- <study flags>`` kills its
own process when the second trial Tune created reports its first result (once: the marker file).
``--kill-events`` arms a ``KillAtEvent`` instead: it kills at the N-th trial event (start, result,
completion) of each driver process, N read from ``$KILL_AT_EVENT`` when the event happens. Tune
pickles the callbacks with the experiment and a resumed driver gets those back, not new ones: an
environment variable is how each resumed driver gets its own kill point.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
from pathlib import Path

from ray import tune

from study.cli import build_config, build_parser
from study.driver import run_study

KILL_AT_EVENT = "KILL_AT_EVENT"
_EVENTS = itertools.count(1)  # per process, outside the pickled callback: each driver counts anew


class KillDriverAt(tune.Callback):
    """SIGKILL this process when trial number ``trial`` (0-based, creation order) reports
    training iteration ``iteration`` (only if ``marker`` does not exist yet)."""

    def __init__(self, trial: int, iteration: int, marker: str):
        self.trial, self.iteration, self.marker = trial, iteration, marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if Path(self.marker).exists() or trials.index(trial) != self.trial:
            return
        if result.get("training_iteration", 0) >= self.iteration:
            Path(self.marker).write_text(f"{trial.trial_id} {result['training_iteration']}\n")
            os.kill(os.getpid(), signal.SIGKILL)


class KillAtEvent(tune.Callback):
    """SIGKILL this process at its ``$KILL_AT_EVENT``-th trial event (unset or 0: never)."""

    def _event(self, what: str, trial) -> None:
        n = next(_EVENTS)
        if n == int(os.environ.get(KILL_AT_EVENT) or 0):
            print(f"[fault] SIGKILL at event {n}: {what} of {trial.trial_id}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._event("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._event(f"result {result.get('training_iteration')}", trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._event("completion", trial)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", help="TRIAL:ITERATION")
    p.add_argument("--kill-marker")
    p.add_argument("--kill-events", action="store_true", help="kill at $KILL_AT_EVENT")
    args, study_flags = p.parse_known_args(argv)
    cfg = build_config(build_parser().parse_args([f for f in study_flags if f != "--"]))
    callbacks: list[tune.Callback] = []
    if args.kill_at:
        trial, iteration = (int(v) for v in args.kill_at.split(":"))
        callbacks.append(KillDriverAt(trial, iteration, args.kill_marker))
    if args.kill_events:
        callbacks.append(KillAtEvent())
    return run_study(cfg, callbacks=callbacks).exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
