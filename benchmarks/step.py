"""Per-arm training-step time relative to the `unet` arm, stock autograd vs the fast conv double backward.

    python -m benchmarks.step                       # CPU: B=8, 128 px, efficientnet-b0
    python -m benchmarks.step --batch 32 --size 224 # the paper's shape (GPU)
    python -m benchmarks.step --amp bf16            # + bf16 autocast (CUDA) on every path
    python -m benchmarks.step --json steps.json     # + the step times as JSON (benchmarks.cluster_sim)

All arms are timed in one run, interleaved round-robin (so drift hits every arm alike); each number is
the median over --repeats steps after --warmup steps. Also prints the time to slice and augment one batch
on the device (the data path) as a fraction of the `unet` step. Prints ratios, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.data.toy import make_toy_cached
from trainables.device_data import DeviceData, random_affine
from trainables.fit import step_terms
from trainables.model import build_model
from trainables.model_sets import get_arm, list_arms


def machine() -> str:
    if torch.cuda.is_available():
        return (
            f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
        )
    return (
        f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads "
        f"(torch {torch.__version__})"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Variant = tuple[TrialConfig, torch.nn.Module, torch.optim.Optimizer]


def make_variant(cfg: TrialConfig, device: torch.device) -> Variant:
    """A freshly initialised model (train mode) and its optimiser for one benchmarked config."""
    model = build_model(cfg.encoder, None, cfg.decoder_channels).to(device).train()
    return cfg, model, torch.optim.Adam(model.parameters(), lr=1e-4)


def train_step(variant: Variant, batch, amp: str = "none") -> None:
    """One training step of the arm, exactly as the fit loop takes it (loss terms, backward, Adam)."""
    cfg, model, opt = variant
    x, gaze, y = batch
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()
    with ctx:
        loss = step_terms(model, get_arm(cfg.arm), cfg, x, gaze, y)["total"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_steps(
    variants: dict[str, Variant], batch, device: torch.device, warmup: int, repeats: int, amp: str
) -> dict[str, float]:
    """Median seconds per training step of each variant, measured round-robin."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(warmup + repeats):
        for name, variant in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            train_step(variant, batch, amp)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def data_path_time(
    dd: DeviceData, batch_size: int, device: torch.device, repeats: int = 20
) -> float:
    gen = torch.Generator().manual_seed(0)
    ts = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        idx = next(dd.train_batches(batch_size, gen))
        x, g, _ = dd.batch(idx)
        random_affine(x, g, gen)
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--batch", type=int, default=None, help="batch size (default 8 on CPU, 32 on GPU)"
    )
    p.add_argument(
        "--size", type=int, default=None, help="image size (default 128 on CPU, 224 on GPU)"
    )
    p.add_argument("--encoder", default="efficientnet-b0")
    p.add_argument(
        "--decoder-channels",
        default="256,128,64,32,16",
        help="U-Net decoder widths (their count is the encoder depth)",
    )
    p.add_argument("--arms", default=",".join(list_arms()), help="comma-separated arms")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast dtype (CUDA)")
    p.add_argument("--bn-mode", choices=["batch", "frozen"], default="batch")
    p.add_argument(
        "--json", help="also write the step times here (for benchmarks.cluster_sim --step-times)"
    )
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    b = args.batch or (32 if device.type == "cuda" else 8)
    s = args.size or (224 if device.type == "cuda" else 128)
    data = make_toy_cached(n=max(64, 2 * b), size=s)  # tensors only: no DICOM decoding
    dd = DeviceData(data, device)
    batch = dd.batch(dd.indices("train")[:b])

    decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    variants = {}
    arms = [a for a in args.arms.split(",") if a]
    for arm in arms:
        paths = [True, False] if get_arm(arm).needs_map == "graph" else [True]
        for fast in paths:
            torch.manual_seed(0)
            cfg = TrialConfig(
                arm=arm,
                encoder=args.encoder,
                batch_size=b,
                fast_conv=fast,
                bn_mode=args.bn_mode,
                decoder_channels=decoder,
            )
            name = arm if len(paths) == 1 else f"{arm} ({'fast' if fast else 'stock'})"
            variants[name] = make_variant(cfg, device)

    print(f"# benchmarks.step on {machine()}")
    print(
        f"# encoder {args.encoder}, batch {b}, {s} px, amp {args.amp}, bn_mode {args.bn_mode}, "
        f"median of {args.repeats} after {args.warmup} warm-up, round-robin"
    )
    med = time_steps(variants, batch, device, args.warmup, args.repeats, args.amp)
    base = med.get("unet") or next(iter(med.values()))
    print(f"{'arm':24s} {'step ms':>9s} {'x unet':>7s}")
    for name, t in med.items():
        print(f"{name:24s} {t * 1000:9.1f} {t / base:7.2f}")
    if args.json:
        record = {
            "machine": machine(),
            "batch": b,
            "size": s,
            "encoder": args.encoder,
            "amp": args.amp,
            "bn_mode": args.bn_mode,
            "repeats": args.repeats,
            "step_s": med,
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    d = data_path_time(dd, b, device)
    print(
        f"data path (slice + augment on {device.type}): {d * 1000:.2f} ms = {100 * d / base:.1f}% of a unet step"
    )


if __name__ == "__main__":
    main()
