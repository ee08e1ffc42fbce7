"""A stand-in trial for driver tests where the schedule, not the training, is under test.

It reports one validation value per epoch (a smooth function of the learning rate, so TPE and ASHA
have something to act on) with the wall-clock interval of the epoch, checkpoints its epoch (so a
restored trial continues), and appends ``start <trial id>`` to ``starts_log`` each time it starts
and ``epoch <trial id> <n>`` each time it finishes an epoch, so a test can tell a resumed trial from
a repeated one. No torch, no MLflow: it starts in a moment.
"""

from __future__ import annotations

import math
import os
import tempfile
import time

from ray import tune

from study.resources import trial_resources


def quick_trial(config: dict, epoch_s: float, starts_log: str) -> None:
    trial_id = tune.get_context().get_trial_id()
    with open(starts_log, "a") as f:
        f.write(f"start {trial_id}\n")
    first = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "epoch")) as f:
            first = int(f.read()) + 1
    quality = math.exp(-((math.log10(config["lr"]) + 3.0) ** 2))
    for epoch in range(first, config["epochs"] + 1):
        start = time.time()
        time.sleep(epoch_s)
        value = quality * (1 - 0.5**epoch)
        metrics = {"val/auc_mean": value, "epoch": epoch, "t_start": start, "t_end": time.time()}
        if epoch == config["epochs"]:
            metrics["best/val_auc_mean"] = value
        with open(starts_log, "a") as f:
            f.write(f"epoch {trial_id} {epoch}\n")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as f:
                f.write(str(epoch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def factory(epoch_s: float, starts_log: str):
    """A ``study.tuner.TrainableFactory`` of ``quick_trial`` trials."""

    def make(cfg, data, study):
        bound = tune.with_parameters(quick_trial, epoch_s=epoch_s, starts_log=starts_log)
        return tune.with_resources(bound, trial_resources(cfg))

    return make
