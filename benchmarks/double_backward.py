"""Step time of a saliency training step, stock vs fast_conv double backward, vs a plain step.

Run: ``python -m benchmarks.double_backward`` (``--smoke`` for a seconds-long check). Prints the
machine and a table of median step times and their ratio to the plain U-Net step. Steps, on the
project's model (``trainables.model.build_model``, in_channels=1, random init, train mode):

- plain: ``BCEWithLogits(decoder, gaze) + CE(class logits)``, backward (the ``unet`` arm).
- plain, unpatched: the same on a model without RuleActivations (their cost).
- saliency stock / fast: the plain losses + ``BCE(to_heatmap(map), gaze)`` with the map from
  ``generator_map(..., create_graph=True)``, backward (a model set 3 step), with the stock conv
  double backward or trainables.fast_conv.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from trainables.model import build_model
from trainables.saliency import PassConfig, generator_map, to_heatmap


def machine() -> str:
    """torch version, CPU model and threads, GPU name when CUDA is available."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"torch {torch.__version__}; CPU {cpu}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()}"
    return text


def _plain_loss(model, x, gaze, labels) -> torch.Tensor:
    mask_logits, class_logits = model(x)
    return F.binary_cross_entropy_with_logits(mask_logits, gaze) + F.cross_entropy(
        class_logits, labels
    )


def _saliency_loss(model, x, gaze, labels, *, generator: str, fast: bool) -> torch.Tensor:
    raw = generator_map(
        generator, model, x, labels, create_graph=True, how=PassConfig(fast_conv=fast)
    )
    heat = to_heatmap(raw).clamp(1e-6, 1 - 1e-6)  # BCE on probabilities, never on logits
    return _plain_loss(model, x, gaze, labels) + F.binary_cross_entropy(heat, gaze)


def time_steps(
    steps: dict[str, tuple[torch.nn.Module, Callable[[], torch.Tensor]]], warmup: int, repeats: int
) -> list[tuple[str, float, float]]:
    """(label, median wall s, median process CPU s) of each ``step().backward()``.

    Each step runs as a block (``warmup`` untimed, then ``repeats`` timed), as training repeats
    one step. Process CPU time is reported beside wall time because on a shared machine other
    processes stretch wall time but not this process's CPU time (use --threads 1 there; idle
    OpenMP threads spin and count as CPU time).
    """
    results = []
    for label, (model, step) in steps.items():
        sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
        wall, cpu = [], []
        for i in range(warmup + repeats):
            model.zero_grad(set_to_none=True)
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            step().backward()
            sync()
            if i >= warmup:
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        results.append((label, statistics.median(wall), statistics.median(cpu)))
    return results


class _CountConvolutions(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += "convolution" in func.__name__
        return func(*args, **(kwargs or {}))


def convolution_calls(step: Callable[[], torch.Tensor]) -> int:
    """aten convolution / convolution_backward calls in one step: kernel launches on a GPU."""
    with _CountConvolutions() as counter:
        step().backward()
    return counter.calls


def run(args: argparse.Namespace, device: str) -> tuple[list[tuple[str, float, float]], tuple[int, int]]:  # fmt: skip
    """Time the four steps on one device (``args``: batch, size, repeats, warmup, encoder,
    generator from the command line).

    Returns:
        (label, median wall s, median process CPU s) per step, and the convolution calls of the stock and the fast
        saliency step.
    """
    batch, size, repeats, warmup = args.batch, args.size, args.repeats, args.warmup
    encoder, generator = args.encoder, args.generator
    torch.manual_seed(0)
    x = torch.rand(batch, 1, size, size, device=device)
    gaze = torch.rand(batch, 1, size, size, device=device)
    labels = torch.arange(batch, device=device) % 3
    patched = build_model(encoder, None).to(device).train()
    unpatched = build_model(encoder, None, patch_activations=False).to(device).train()
    steps = {
        "plain": (unpatched, lambda: _plain_loss(unpatched, x, gaze, labels)),
        "plain, patched activations": (patched, lambda: _plain_loss(patched, x, gaze, labels)),
        f"saliency ({generator}), stock conv": (
            patched,
            lambda: _saliency_loss(patched, x, gaze, labels, generator=generator, fast=False),
        ),
        f"saliency ({generator}), fast_conv": (
            patched,
            lambda: _saliency_loss(patched, x, gaze, labels, generator=generator, fast=True),
        ),
    }
    results = time_steps(steps, warmup, repeats)
    stock, fast = list(steps.values())[2:]
    return results, (convolution_calls(stock[1]), convolution_calls(fast[1]))


def main(argv: list[str] | None = None) -> None:
    """CLI: time the steps on the CPU and, when available, on CUDA; print a table per device."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--encoder", default="efficientnet-b0")
    parser.add_argument("--generator", default="gbp")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu and cuda if any")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--smoke-test", "--smoke", action="store_true", help="B=2, 32 px, 1 run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke_test:
        args.batch, args.size, args.repeats, args.warmup = 2, 32, 1, 0
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(machine())
    if hasattr(os, "getloadavg"):
        print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print(
        f"{args.encoder} U-Net, in_channels=1, B={args.batch}, {args.size} px, medians of "
        f"{args.repeats} after {args.warmup} warm-up"
    )
    for device in devices:
        results, calls = run(args, device)
        plain_wall, plain_cpu = results[0][1], results[0][2]
        print(
            f"\n[{device}]  {'step':<34} {'wall s':>7} {'x plain':>7} {'CPU s':>7} {'x plain':>7}"
        )
        for label, wall, cpu in results:
            print(
                f"[{device}]  {label:<34} {wall:>7.3f} {wall / plain_wall:>7.2f} "
                f"{cpu:>7.3f} {cpu / plain_cpu:>7.2f}"
            )
        print(
            f"[{device}]  aten convolution calls per saliency step: stock {calls[0]}, "
            f"fast_conv {calls[1]}"
        )
        print(
            f"[{device}]  fast_conv speed-up of the saliency step: wall "
            f"{results[2][1] / results[3][1]:.2f}x, CPU {results[2][2] / results[3][2]:.2f}x"
        )


if __name__ == "__main__":
    main()
