"""Train and evaluate one configuration: plain PyTorch, no Ray, no MLflow.

``train`` yields one typed event per epoch: ``EpochEnd`` (its metrics and a checkpoint folder
that lives until the next event is asked for), ``Finished`` on the last epoch (the test split
evaluated once with the best epoch's weights, by validation mean AUC, and every artifact written
to ``out_dir``: ``trainables.artifacts``), or ``Diverged`` (a non-finite loss; nothing more
follows). Ray Tune's trainable turns the events into ``tune.report`` calls and MLflow records;
``fit`` runs them in this process (the single trial). ``resume_from`` continues exactly after a
checkpointed epoch (same batches, same RNG draws: ``trainables.checkpoint``).

No score is NaN everywhere: an undefined validation AUC (a class missing from the split) stays NaN
in the metrics, is never the best epoch, and is left out of the record.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainables import artifacts, blind_selection, checkpoint
from trainables.config import ConfigError, Placement, TrialConfig, model_stride
from trainables.data.cached import CachedData
from trainables.device_data import DeviceData, random_affine
from trainables.evaluate import predict
from trainables.metrics import per_class_auc
from trainables.model import MultiTaskUNet, build_model
from trainables.model_sets import Arm, StepOutputs, get_arm
from trainables.record import SEARCH_METRIC, VAL_AUC_UNDEFINED, VAL_LOSS, Status, metric_key
from trainables.saliency import (
    PassConfig,
    generator_map,
    map_target,
    record_batch_stats,
    to_heatmap,
)

logger = logging.getLogger(__name__)
Log = Callable[[str], None]


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    metrics: dict[str, float]  # train/*, val/*, time/*
    checkpoint: Path  # valid until the next event is asked for


@dataclass(frozen=True)
class Finished(EpochEnd):
    final: dict[str, float]  # best/*, test/* with intervals, test/explain/*
    out_dir: Path  # holds the artifacts


@dataclass(frozen=True)
class Diverged:
    epoch: int
    message: str


Event = EpochEnd | Finished | Diverged


@dataclass
class FitResult:
    status: str  # Status.OK or Status.DIVERGED
    message: str
    epochs_run: int
    best_epoch: int
    best_val_auc_mean: float  # nan when no epoch had a validation AUC
    history: list[dict] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)
    out_dir: Path = Path(".")


# -- the state of one run ----------------------------------------------------------------------
def resolve_device(placement: Placement) -> torch.device:
    if placement.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(placement.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass
class TrainState:
    """Model, optimiser, scheduler, the batch RNG, the data on the device, and the run so far."""

    cfg: TrialConfig
    arm: Arm
    device: torch.device
    model: MultiTaskUNet
    opt: torch.optim.Optimizer
    sched: object | None
    gen: torch.Generator  # batch order + augmentation: one RNG, in the checkpoint
    dd: DeviceData
    image_size: int
    epoch: int = 0
    best_epoch: int = 0
    best_val: float = -math.inf
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: TrialConfig, data: CachedData, placement: Placement) -> TrainState:
        stride = model_stride(cfg.decoder_channels)
        if data.image_size % stride:
            raise ValueError(
                f"the cached data is {data.image_size} px, but a U-Net with "
                f"{len(cfg.decoder_channels)} decoder stages needs a multiple of {stride} px: "
                f"change --image-size (or the decoder)"
            )
        arm = get_arm(cfg.arm)
        if cfg.gaze_target != "mean" and data.readers is None:
            raise ConfigError("TrialConfig", "gaze_target", f"needs a dataset whose images several readers read (REFLACX; {data.dataset} has one reader per image)", cfg.gaze_target)  # fmt: skip
        seed_everything(cfg.seed)
        if placement.num_threads:
            torch.set_num_threads(placement.num_threads)
        device = resolve_device(placement)
        model = build_model(cfg.encoder, cfg.encoder_weights, cfg.decoder_channels, task=data.task).to(device)  # fmt: skip
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        return cls(cfg, arm, device, model, opt, _scheduler(cfg, opt), gen, DeviceData(data, device), data.image_size)  # fmt: skip


def _scheduler(cfg: TrialConfig, opt: torch.optim.Optimizer):
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    return None


# -- one epoch ---------------------------------------------------------------------------------
def step_terms(
    model: MultiTaskUNet, arm: Arm, cfg: TrialConfig, x, gaze, labels
) -> dict[str, torch.Tensor]:
    """The loss terms of one training batch for an arm (a pure function of model and batch).

    The generator map of image i is the gradient of image i's own score, with the BatchNorm
    statistics of this training forward as constants (``trainables.saliency``)."""
    with record_batch_stats(model) as stats:
        if arm.uses_decoder:
            mask_logits, class_logits = model(x)
        else:
            mask_logits, class_logits = None, model.classify(x)
    out = StepOutputs(class_logits=class_logits, mask_logits=mask_logits)
    if arm.needs_map != "none":
        raw = generator_map(
            arm.generator, model, x, map_target(labels, class_logits),
            create_graph=arm.needs_map == "graph", how=PassConfig(bn_mode=cfg.bn_mode, bn_stats=stats, fast_conv=cfg.fast_conv))  # fmt: skip
        out.raw_map, out.generator_map = raw, to_heatmap(raw)
    return arm.loss(out, labels, gaze, cfg)


def train_epoch(s: TrainState) -> dict[str, float] | None:
    """Mean loss terms of one epoch, or None when a loss went non-finite (diverged)."""
    s.model.train()
    sums: dict[str, float] = {}
    n_batches, data_s, t0 = 0, 0.0, time.perf_counter()
    for idx in s.dd.train_batches(s.cfg.batch_size, s.gen):
        td = time.perf_counter()
        x, gaze, y = s.dd.batch(idx)
        if s.cfg.gaze_target == "random-reader":  # one radiologist's map per image and epoch
            gaze = s.dd.reader_gaze(idx, gaze, s.gen)
        if s.cfg.augment:
            x, gaze = random_affine(x, gaze, s.gen)
        x = s.arm.train_input(x, gaze, s.gen, s.cfg)  # gaze-mask / cutout hide pixels; else x
        data_s += time.perf_counter() - td
        terms = step_terms(s.model, s.arm, s.cfg, x, gaze, y)
        if not torch.isfinite(terms["total"]):
            return None
        s.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        if s.cfg.grad_clip_value:
            torch.nn.utils.clip_grad_value_(s.model.parameters(), s.cfg.grad_clip_value)
        s.opt.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_batches += 1
    out = {f"train/{'loss' if k == 'total' else 'loss_' + k}": v / max(1, n_batches) for k, v in sums.items()}  # fmt: skip
    out["time/epoch_s"] = time.perf_counter() - t0
    out["time/data_frac"] = data_s / max(1e-9, out["time/epoch_s"])
    return out


def validate(s: TrainState) -> dict[str, float]:
    """Validation AUCs and loss; an undefined AUC stays NaN."""
    probs, labels, loss = predict(s.model, s.dd, "val", s.cfg.eval_batch_size)
    keys = s.dd.task.auc_keys
    aucs = per_class_auc(labels, probs, s.dd.task) if len(labels) else dict.fromkeys(keys, math.nan)
    out = {metric_key("val", k): float(aucs[k]) for k in keys}
    out[VAL_AUC_UNDEFINED] = float(sum(not math.isfinite(aucs[k]) for k in keys[:-1]))
    out[VAL_LOSS] = float(loss)
    if s.cfg.selection_signals:  # blind model-selection signals; never read test labels
        out.update(blind_selection.validation_signals(s.model, s.dd, s.cfg))
    return out


def _per_class(val: dict[str, float], task) -> str:
    """``0.741 (N 0.80 C 0.71 P 0.71)``: the mean and each class's first letter (up to 6)."""
    parts = [f"{c[:1]} {val[metric_key('val', k)]:.2f}" for c, k in zip(task.classes, task.auc_keys, strict=False)][:6]  # fmt: skip
    return f"{val[SEARCH_METRIC]:.3f} ({' '.join(parts)}{' ...' if task.n > 6 else ''})"


def _keep_if_best(s: TrainState, epoch: int, score: float) -> None:
    if math.isfinite(score) and score > s.best_val:
        s.best_val, s.best_epoch = score, epoch
        s.best_weights = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
    if isinstance(s.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if math.isfinite(score):  # an undefined epoch is no evidence of a plateau
            s.sched.step(score)
    elif s.sched is not None:
        s.sched.step()


def _warn_undefined(s: TrainState, val: dict[str, float]) -> None:
    undefined = [k for k in s.dd.task.auc_keys[:-1] if not math.isfinite(val[metric_key("val", k)])]
    logger.warning(
        "[%s] validation AUC undefined for %s (the validation split lacks a class or holds only "
        "one): recorded as missing, not as a value%s", s.cfg.arm, ", ".join(undefined),
        "" if math.isfinite(val[SEARCH_METRIC]) else "; no epoch can be chosen by it",
    )  # fmt: skip


# -- the loop ----------------------------------------------------------------------------------
def train(
    cfg: TrialConfig,
    data: CachedData,
    out_dir: str | Path,
    *,
    placement: Placement | None = None,
    resume_from: tuple[str | Path, str] | None = None,
    log: Log = print,
) -> Iterator[Event]:
    """Train one configuration, validate each epoch, test the best epoch once; see the module doc.

    Args:
        cfg: the arm and its hyperparameters.
        data: the preprocessed dataset; its image size is the trial's.
        out_dir: the artifacts' folder (``trainables.artifacts``).
        placement: device and CPU threads (default: cuda if available, torch's threads).
        resume_from: ``(checkpoint folder, how errors name it)`` to continue after its epoch.
        log: progress printer.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = TrainState.create(cfg, data, placement or Placement())
    if resume_from is not None:
        checkpoint.load(resume_from[0], s, name=resume_from[1])
        log(
            f"resumed {cfg.arm} after epoch {s.epoch} (best val AUC {s.best_val:.4f} at epoch {s.best_epoch})"
        )
    warned = False
    for epoch in range(s.epoch + 1, cfg.epochs + 1):
        losses = train_epoch(s)
        if losses is None:
            yield Diverged(
                epoch, f"diverged in epoch {epoch}: non-finite training loss (lr={cfg.lr:g})"
            )
            return
        val = validate(s)
        s.epoch = epoch
        if val[VAL_AUC_UNDEFINED] and not warned:
            _warn_undefined(s, val)
            warned = True
        _keep_if_best(s, epoch, val[SEARCH_METRIC])
        metrics = {**losses, **val}
        s.history.append({"epoch": float(epoch), **metrics})
        log(f"[{cfg.arm}] epoch {epoch}/{cfg.epochs}  loss {losses['train/loss']:.4f}  val AUC {_per_class(val, s.dd.task)}  {losses['time/epoch_s']:.1f}s")  # fmt: skip
        final = artifacts.finalize(s, out_dir) if epoch == cfg.epochs else None
        if final is not None:
            artifacts.write_summary(out_dir, s, final)
        ckpt = Path(tempfile.mkdtemp(prefix="ckpt-"))
        try:
            checkpoint.save(ckpt, s)
            if final is None:
                yield EpochEnd(epoch, metrics, ckpt)
            else:
                yield Finished(epoch, metrics, ckpt, final, out_dir)
        finally:
            shutil.rmtree(ckpt, ignore_errors=True)


def fit(
    cfg: TrialConfig,
    data: CachedData,
    out_dir: str | Path,
    *,
    placement: Placement | None = None,
    log: Log = print,
) -> FitResult:
    """Run ``train`` to the end in this process; the latest checkpoint is kept in
    ``out_dir/checkpoint`` (the single trial; breakpoints work)."""
    out_dir = Path(out_dir)
    history: list[dict] = []
    for event in train(cfg, data, out_dir, placement=placement, log=log):
        if isinstance(event, Diverged):
            log(f"[{cfg.arm}] {event.message}")
            best = _best(history)
            return FitResult(
                Status.DIVERGED, event.message, event.epoch - 1, *best, history, {}, out_dir
            )
        history.append({"epoch": float(event.epoch), **event.metrics})
        shutil.copytree(event.checkpoint, out_dir / "checkpoint", dirs_exist_ok=True)
        if isinstance(event, Finished):
            best_val = event.final.get("best/val_auc_mean", math.nan)
            best_epoch = event.final.get("best/epoch", math.nan)
            best_epoch = int(best_epoch) if math.isfinite(best_epoch) else 0
            return FitResult(Status.OK, "finished", event.epoch, best_epoch, best_val, history, event.final, out_dir)  # fmt: skip
    raise AssertionError("train ended without a final event")


def _best(history: list[dict]) -> tuple[int, float]:
    """(epoch, score) of the best validation mean AUC so far; (0, nan) when none was defined."""
    scored = [
        (h[SEARCH_METRIC], int(h["epoch"]))
        for h in history
        if math.isfinite(h.get(SEARCH_METRIC, math.nan))
    ]
    if not scored:
        return 0, math.nan
    score, epoch = max(scored, key=lambda t: (t[0], -t[1]))
    return epoch, score
