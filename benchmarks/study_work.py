"""What a study's search costs in slot-seconds: each arm's epoch time from ``benchmarks.step``
(run here, or read from a JSON file it wrote on another machine), and the epochs a trial runs on
average under ASHA.

Epoch time of an arm = ceil(80% of the images / batch) training steps + the validation batches
(10%) at a third of a `unet` step (inference only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def asha_expected_epochs(max_t: int, grace: int, eta: int) -> float:
    """Expected epochs of one trial under ASHA when each rung promotes the top 1/eta of trials."""
    if eta < 2 or grace < 1:
        raise ValueError(f"ASHA needs eta >= 2 and grace >= 1 (got eta={eta}, grace={grace})")
    rungs = []
    r = grace
    while r < max_t:
        rungs.append(r)
        r *= eta
    bounds = rungs + [max_t]
    expected, survive = float(bounds[0]), 1.0
    for lo, hi in itertools.pairwise(bounds):
        survive /= eta
        expected += survive * (hi - lo)
    return expected


@dataclass(frozen=True)
class StepTimes:
    """Seconds per training step of each arm at one batch size, and where they were measured."""

    step_s: dict[str, float]  # arm -> seconds per step
    batch: int
    source: str  # machine and settings, printed with every result

    def epoch_s(self, images: int) -> dict[str, float]:
        """Seconds per epoch of each arm on ``images`` images (80% train, 10% validation)."""
        train_steps = math.ceil(0.8 * images / self.batch)
        val_batches = math.ceil(0.1 * images / self.batch)
        val_s = val_batches * self.step_s["unet"] / 3  # inference only
        return {arm: train_steps * s + val_s for arm, s in self.step_s.items()}


def read_step_times(path: str) -> StepTimes:
    """Step times from a ``benchmarks.step --json`` file; the fast double backward where both ran.

    Raises:
        ValueError: the file lacks the ``unet`` arm (validation time is counted in its steps).
    """
    raw = json.loads(Path(path).read_text())
    steps: dict[str, float] = {}
    for name, s in raw["step_s"].items():
        arm, _, path_kind = name.partition(" (")
        if path_kind != "stock)":
            steps[arm] = float(s)
    if "unet" not in steps:
        raise ValueError(f"{path}: no 'unet' step time (found {', '.join(steps)})")
    source = (
        f"benchmarks.step on {raw['machine']} (file {path}): batch {raw['batch']}, "
        f"{raw['size']} px, {raw['encoder']}, amp {raw.get('amp', 'none')}"
    )
    return StepTimes(steps, int(raw["batch"]), source)


def measure_step_times(args: argparse.Namespace, arms: Sequence[str]) -> StepTimes:
    """Run ``benchmarks.step``'s timing here, on the default path of every arm (and ``unet``)."""
    import torch

    from benchmarks.step import machine, make_variant, time_steps
    from trainables.config import TrialConfig
    from trainables.data.toy import make_toy_cached
    from trainables.device_data import DeviceData

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = DeviceData(make_toy_cached(n=max(64, 2 * args.batch), size=args.size), device)
    batch = data.batch(data.indices("train")[: args.batch])
    decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    variants = {}
    for arm in dict.fromkeys(["unet", *arms]):
        torch.manual_seed(0)
        cfg = TrialConfig(
            arm=arm,
            encoder=args.encoder,
            decoder_channels=decoder,
            batch_size=args.batch,
        )
        variants[arm] = make_variant(cfg, device)
    steps = time_steps(variants, batch, device, args.warmup, args.repeats, "none")
    source = (
        f"benchmarks.step measured now on {machine()}: batch {args.batch}, {args.size} px, "
        f"{args.encoder}, median of {args.repeats}"
    )
    return StepTimes(steps, args.batch, source)


def search_work_s(
    epoch_s: dict[str, float], arms: int, trials: int, epochs: int, grace: int, eta: int
) -> float:
    """Slot-seconds of a search under the ASHA model: ``arms`` arms x ``trials`` trials x the
    expected epochs. Beyond the measured arms, arms count at the measured ones' mean epoch."""
    per_trial = asha_expected_epochs(epochs, min(grace, epochs), eta)
    times = list(epoch_s.values())
    mean = sum(times) / len(times)
    times = (times + [mean] * arms)[:arms]
    return trials * per_trial * sum(times)
