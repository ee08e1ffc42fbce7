"""Aggregate training throughput of 1, 2, 4, 8 concurrent trials sharing one GPU.

    python -m benchmarks.concurrency                 # GPU only: arm set3-gbp, B=32, 224 px
    python -m benchmarks.concurrency --arm unet --counts 1,2,4

Each "trial" is a separate process (as Ray runs trials) that builds the model, trains on device-resident
batches for --seconds after a warm-up, and reports how many images it trained on. The table prints
aggregate images/s and the gain over one trial; pick --gpus-per-trial = 1 / (smallest count near the
plateau). ``--allow-cpu`` runs it on the CPU (for a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.multiprocessing as mp

from benchmarks.step import machine, make_variant, train_step


def _worker(rank: int, job: tuple[str, int, int, float], barrier, queue) -> None:
    """One trial's training steps for ``job`` = (arm, batch, size, seconds), after the barrier."""
    arm, batch, size, seconds = job
    from trainables.config import TrialConfig
    from trainables.data.toy import make_toy_cached
    from trainables.device_data import DeviceData

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(rank)
    cfg = TrialConfig(arm=arm, batch_size=batch)
    variant = make_variant(cfg, device)
    dd = DeviceData(make_toy_cached(n=2 * batch, size=size), device)
    data = dd.batch(dd.indices("train")[:batch])

    for _ in range(3):
        train_step(variant, data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    barrier.wait()
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        train_step(variant, data)
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    queue.put((steps * batch, time.perf_counter() - t0))


def run(count: int, arm: str, batch: int, size: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(count), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, (arm, batch, size, seconds), barrier, queue))
        for r in range(count)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(n / t for n, t in results)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arm", default="set3-gbp")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--counts", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--allow-cpu", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit(
            "benchmarks.concurrency measures GPU sharing; no CUDA device here "
            "(--allow-cpu runs it on the CPU as a smoke test)"
        )
    print(f"# benchmarks.concurrency on {machine()}")
    print(f"# arm {args.arm}, batch {args.batch}, {args.size} px, {args.seconds:.0f} s per count")
    print(f"{'trials':>6s} {'images/s':>10s} {'x one':>6s}")
    one = None
    for count in [int(c) for c in args.counts.split(",")]:
        ips = run(count, args.arm, args.batch, args.size, args.seconds)
        one = one or ips
        print(f"{count:6d} {ips:10.1f} {ips / one:6.2f}", flush=True)


if __name__ == "__main__":
    main()
