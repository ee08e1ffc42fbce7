"""``--single-trial``: one configuration trained in this process, without Ray or MLflow (for a
debugger)."""

from __future__ import annotations

import time
from pathlib import Path

from study.console import auc_table
from study.presets import StudyConfig
from trainables.config import replace
from trainables.model_sets import get_arm


def run_single_trial(
    cfg: StudyConfig,
    *,
    arm: str,
    lr: float | None = None,
    seg_ratio: float | None = None,
    gamma: float | None = None,
    out: str | None = None,
):
    """Train one configuration in this process (no Ray, no MLflow) and print its test AUCs.

    Returns:
        trainables.fit.FitResult; outputs (and the latest checkpoint) are in ``result.out_dir``.
    """
    from trainables.data.prepare import prepare_data
    from trainables.fit import fit, resolve_device

    get_arm(arm)
    trial = replace(cfg.trial, arm=arm, lr=lr, seg_ratio=seg_ratio, gamma=gamma)
    out_dir = (
        Path(out)
        if out
        else (
            Path(cfg.project_dir)
            / "outputs"
            / "single-trial"
            / f"{arm}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    )
    data = prepare_data(cfg.data)
    device = resolve_device(cfg.placement)
    print(f"[single-trial] data: {data.summary()}\n[single-trial] {trial}", flush=True)
    print(f"[single-trial] training on {device}" + (f" ({_device_name(device)})" if device.type == "cuda" else ""), flush=True)  # fmt: skip
    result = fit(trial, data, out_dir.resolve(), placement=cfg.placement, log=lambda m: print(m, flush=True))  # fmt: skip
    if result.status != "ok":
        print(f"[single-trial] {result.status}: {result.message}", flush=True)
        return result
    print("\n" + auc_table(result.test, data.task), flush=True)
    print(
        f"best epoch {result.best_epoch} (val mean AUC {result.best_val_auc_mean:.3f}); "
        f"outputs in {result.out_dir}",
        flush=True,
    )
    return result


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device)
