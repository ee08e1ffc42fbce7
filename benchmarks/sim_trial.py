"""The simulated trial of ``benchmarks.cluster_sim``: it sleeps each epoch for the arm's epoch time
(scaled down) and reports a validation AUC drawn from a seeded model of learning curves.

The curve depends on the trial's configuration (a learning-rate optimum per arm, a seeded rate of
convergence and noise), so TPE has something to find and ASHA stops the weak trials, and it is the
same for the same configuration and seed in every run. Each report carries the wall-clock interval
of its epoch (``sim/start``, ``sim/end``), from which the benchmark measures slot use. Light on
purpose: no torch, no MLflow, so a trial process starts in a moment.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from dataclasses import dataclass

from ray import tune

from trainables.record import EPOCH, SEARCH_METRIC, SELECTION_METRIC

START, END = "sim/start", "sim/end"  # wall-clock interval of one simulated epoch


@dataclass(frozen=True)
class SimModel:
    """What a simulated trial needs: per-arm epoch times and the curve model's seed."""

    epoch_s: dict[str, float]  # arm -> seconds per epoch at full scale
    speedup: float  # an epoch sleeps epoch_s / speedup seconds
    seed: int = 0  # seeds the learning curves


def _rng(model: SimModel, *key: object) -> random.Random:
    # zlib.crc32, not hash(): the same stream in every process
    return random.Random(zlib.crc32(repr((model.seed, *key)).encode()))


def curve(model: SimModel, config: dict, epoch: int) -> float:
    """Validation AUC after ``epoch`` epochs of the trial ``config``.

    Final AUC: 0.70 plus up to 0.22 near the arm's best learning rate (a seeded log10 optimum
    between -3.6 and -2.6, width 0.7 decades), a little for the other searched values, and trial
    noise (sd 0.02); it is approached as 1 - exp(-k * epoch) with a seeded k in [0.06, 0.3], plus
    epoch noise (sd 0.01), so curves cross and early ranks are not final ones.
    """
    arm = config["arm"]
    optimum = _rng(model, arm).uniform(-3.6, -2.6)
    values = tuple(round(float(config.get(k, 0.0)), 12) for k in ("lr", "gamma", "seg_ratio"))
    trial = _rng(model, arm, values)
    fit = math.exp(-(((math.log10(config["lr"]) - optimum) / 0.7) ** 2))
    final = 0.70 + 0.22 * fit + 0.03 * (1 - abs(config.get("gamma", 0.5) - 0.5))
    final += 0.02 * config.get("seg_ratio", 0.0) + trial.gauss(0.0, 0.02)
    k = trial.uniform(0.06, 0.3)
    noise = _rng(model, arm, values, epoch).gauss(0.0, 0.01)
    value = 0.5 + (final - 0.5) * (1 - math.exp(-k * epoch)) + noise
    return min(1.0, max(0.0, value))


def sim_trial(config: dict, model: SimModel) -> None:
    """A Tune function trainable: ``config["epochs"]`` simulated epochs of ``config["arm"]``."""
    epochs = int(config["epochs"])
    sleep_s = model.epoch_s[config["arm"]] / model.speedup
    best = 0.0
    for epoch in range(1, epochs + 1):
        start = time.time()
        time.sleep(sleep_s)
        value = curve(model, config, epoch)
        best = max(best, value)
        metrics = {SEARCH_METRIC: value, EPOCH: epoch, START: start, END: time.time()}
        if epoch == epochs:
            metrics[SELECTION_METRIC] = best
        tune.report(metrics)
