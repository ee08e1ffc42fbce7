"""Project the wall time of a full study on this machine from measured per-arm step times.

    python -m benchmarks.study_projection                      # paper scale, measured here
    python -m benchmarks.study_projection --concurrency 4 --throughput-gain 2.6

Measures one training step of every arm at the given shape (``benchmarks.step``), turns it into an epoch
time for the paper's data (1,017 images, 80% train, plus validation inference), multiplies by the
expected epochs per trial under ASHA (grace period, reduction factor, max epochs) and by the trials per
arm, and divides by the aggregate speed-up of running several trials on one device (measured by
``benchmarks.concurrency`` on a GPU; pass it in). Prints the per-arm table and the total.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from benchmarks.step import machine, make_variant, time_steps
from trainables.config import TrialConfig
from trainables.data.toy import make_toy_cached
from trainables.device_data import DeviceData
from trainables.model_sets import list_arms


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1017)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=35)
    p.add_argument("--trials-per-arm", type=int, default=20)
    p.add_argument("--grace", type=int, default=4, help="ASHA grace period (epochs)")
    p.add_argument("--eta", type=int, default=3, help="ASHA reduction factor")
    p.add_argument("--concurrency", type=int, default=1, help="trials sharing the device")
    p.add_argument("--throughput-gain", type=float, default=1.0,
                   help="aggregate images/s with --concurrency trials / one trial's (benchmarks.concurrency)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = make_toy_cached(n=max(64, 2 * args.batch), size=args.size)
    dd = DeviceData(data, device)
    batch = dd.batch(dd.indices("train")[:args.batch])
    variants = {}
    for arm in list_arms():
        cfg = TrialConfig(arm=arm, batch_size=args.batch, device=str(device))
        variants[arm] = make_variant(cfg, device)
    step = time_steps(variants, batch, device, warmup=1, repeats=args.repeats, amp=args.amp)

    train_steps = int(0.8 * args.images) // args.batch
    val_images = int(0.1 * args.images)
    exp_epochs = asha_expected_epochs(args.epochs, args.grace, args.eta)
    print(f"# benchmarks.study_projection on {machine()}")
    print(f"# {args.images} images, batch {args.batch}, {args.size} px, {args.epochs} epochs, "
          f"{args.trials_per_arm} trials/arm, ASHA grace {args.grace} eta {args.eta} -> "
          f"{exp_epochs:.1f} expected epochs/trial; concurrency {args.concurrency} "
          f"(throughput x{args.throughput_gain:.2f}); amp {args.amp}")
    print(f"{'arm':14s} {'step s':>8s} {'epoch s':>8s} {'arm h':>8s}")
    total = 0.0
    for arm, t in step.items():
        # validation is inference only: about a third of a plain step per batch
        epoch = train_steps * t + (val_images / args.batch) * step["unet"] / 3
        arm_s = epoch * exp_epochs * args.trials_per_arm / args.throughput_gain
        total += arm_s
        print(f"{arm:14s} {t:8.3f} {epoch:8.1f} {arm_s / 3600:8.2f}")
    print(f"projected study wall time: {total / 3600:.2f} h on one device")


if __name__ == "__main__":
    main()
