"""A stand-in trial for driver tests where the schedule, not the training, is under test.

It reports one validation value per epoch (a smooth function of the learning rate, so TPE and ASHA
have something to act on) with the wall-clock interval of the epoch, checkpoints its epoch (so a
restored trial continues), writes its MLflow record as a real trial does (one run, its epochs, a
final record with predictions; the driver's seeds stage and the best-of-arm rule read it), and
appends ``start <trial id>`` to ``starts_log`` each time it starts and ``epoch <trial id> <n>``
each time it finishes an epoch, so a test can tell a resumed trial from a repeated one. No torch.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from ray import tune

from study.resources import trial_resources
from trainables.data.datasets import task_of
from trainables.record import Status, trial_tags
from trainables.record import writer as record
from trainables.record.files import write_predictions
from trainables.trainable import trial_config

KEYS, LABELS = [f"k{i}" for i in range(6)], np.arange(6) % 3


def quick_trial(config: dict, epoch_s: float, starts_log: str, study) -> None:
    trial_id = tune.get_context().get_trial_id()
    with open(starts_log, "a") as f:
        f.write(f"start {trial_id}\n")
    first = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d, open(os.path.join(d, "epoch")) as f:
            first = int(f.read()) + 1
    cfg = trial_config(config)
    tags = trial_tags(cfg.arm, study.stage)
    run_id = record.trial_run(study.tracking, trial_id, run_id=None, tags=tags, params=cfg.to_dict())  # fmt: skip
    quality = math.exp(-((math.log10(config["lr"]) + 3.0) ** 2))
    for epoch in range(first, config["epochs"] + 1):
        start = time.time()
        time.sleep(epoch_s)
        value = quality * (1 - 0.5**epoch)
        metrics = {"val/auc_mean": value, "epoch": epoch, "t_start": start, "t_end": time.time()}
        record.log_epoch(study.tracking, run_id, metrics, step=epoch)
        if epoch == config["epochs"]:
            metrics["best/val_auc_mean"] = value
            out = tempfile.mkdtemp(prefix="quick-")
            write_predictions(Path(out), KEYS, LABELS, np.full((6, 3), 1 / 3), task_of("egd-cxr"))
            record.log_final(study.tracking, run_id, metrics, out)
            record.set_status(study.tracking, run_id, Status.OK)
        with open(starts_log, "a") as f:
            f.write(f"epoch {trial_id} {epoch}\n")
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "epoch"), "w") as f:
                f.write(str(epoch))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def factory(epoch_s: float, starts_log: str):
    """A ``study.tuner.TrainableFactory`` of ``quick_trial`` trials."""

    def make(cfg, data, study):
        bound = tune.with_parameters(quick_trial, epoch_s=epoch_s, starts_log=starts_log, study=study)  # fmt: skip
        return tune.with_resources(bound, trial_resources(cfg))

    return make
