"""The study driver as the fault tests run it: ``python -m study``'s flags, plus an optional
self-inflicted SIGKILL at a chosen Tune event (``--kill-at TRIAL:ITERATION``).

``python -m tests.study.fault_driver --kill-at 1:1 --kill-marker M -- <study flags>`` runs the
study and kills its own process (no cleanup, no state saved: what ``kill -9`` or the OOM killer
does) when the second trial Tune created reports its first result. The marker file makes the kill
one-shot: Tune pickles the callbacks with the experiment, so a resumed driver has it too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ray import tune

from study.cli import build_config, build_parser
from study.driver import run_study


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


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", help="TRIAL:ITERATION")
    p.add_argument("--kill-marker")
    args, study_flags = p.parse_known_args(argv)
    cfg = build_config(build_parser().parse_args([f for f in study_flags if f != "--"]))
    callbacks = []
    if args.kill_at:
        trial, iteration = (int(v) for v in args.kill_at.split(":"))
        callbacks.append(KillDriverAt(trial, iteration, args.kill_marker))
    summary = run_study(cfg, callbacks=callbacks)
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
