"""Train and evaluate one configuration: plain PyTorch, no Ray, no MLflow.

``fit`` trains an arm on the cached data, validates every epoch, keeps the best epoch by validation mean
AUC (the test split is touched once, at the end, with the best epoch's weights), and writes predictions,
map-vs-gaze metrics and heatmap panels to ``out_dir``. Every epoch it writes a full checkpoint and calls
``report(metrics, checkpoint_dir)``: Ray Tune's trainable passes ``tune.report``, the single-trial CLI a
printer. ``resume_from`` continues exactly after the checkpointed epoch (same batches, same RNG draws).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainables.config import CLASSES, TrialConfig, model_stride
from trainables.data.cached import CachedData
from trainables.device_data import DeviceData, random_affine
from trainables.evaluate import choose_panel_keys, explain, predict
from trainables.metrics import bootstrap_auc_ci, per_class_auc
from trainables.model import MultiTaskUNet, build_model
from trainables.model_sets import Arm, StepOutputs, get_arm
from trainables.panels import write_panels
from trainables.record import (
    AUC_KEYS,
    BEST_EPOCH,
    DIVERGED,
    DONE,
    EPOCH,
    PREDICTION_COLUMNS,
    PROB_COLUMNS,
    SALIENCY_KEYS,
    SEARCH_METRIC,
    SELECTION_METRIC,
    VAL_AUC_UNDEFINED,
    explain_metric,
    metric_key,
)
from trainables.saliency import generator_map, record_batch_stats, to_heatmap

logger = logging.getLogger(__name__)
ReportFn = Callable[[dict[str, float], str | None], None]
_STATE_FILE, _EXTRA_FILE = "state.pt", "extra.json"


@dataclass
class FitResult:
    status: str  # "ok" | "diverged"
    message: str
    epochs_run: int
    best_epoch: int
    best_val_auc_mean: float
    history: list[dict] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=dict)
    out_dir: Path = Path(".")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


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
            arm.generator,
            model,
            x,
            labels,
            create_graph=arm.needs_map == "graph",
            bn_mode=cfg.bn_mode,
            bn_stats=stats,
            fast_conv=cfg.fast_conv,
        )
        out.raw_map, out.generator_map = raw, to_heatmap(raw)
    return arm.loss(out, labels, gaze, cfg)


def _make_scheduler(cfg: TrialConfig, opt: torch.optim.Optimizer):
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    return None


def _finite(x: float, default: float) -> float:
    return float(x) if x is not None and math.isfinite(x) else default


def read_checkpoint_extra(ckpt_dir: str | Path) -> dict:
    """The ``checkpoint_extra`` a checkpoint was written with (e.g. the MLflow run id)."""
    path = Path(ckpt_dir) / _EXTRA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class CheckpointError(ValueError):
    """A checkpoint that is not plain tensors and containers (it would run code when unpickled)."""


def load_plain(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only.

    Checkpoints live in Tune's storage (s3, gs, NFS), which more people can write to than run code
    on the workers: a pickle there would execute on every worker that resumes from it.

    Raises:
        CheckpointError: the file holds anything else (the message names the file).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; keep its one line that names the offending global.
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln]
        raise CheckpointError(
            f"{path}: refused to load: not plain weights (tensors, numbers and containers only; "
            f"unpickling anything else can run code). {lines[0] if lines else exc}"
        ) from None


def _plain(value):
    """``value`` with numpy scalars turned into Python numbers (weights_only pickles refuse them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _numpy_rng_state() -> dict:
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "key": torch.from_numpy(key.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(state: dict) -> None:
    key = state["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        (state["name"], key, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )


def _python_rng_state() -> dict:
    version, internal, gauss_next = random.getstate()
    return {
        "version": version,
        "state": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": gauss_next,
    }


def _set_python_rng_state(state: dict) -> None:
    internal = tuple(int(v) for v in state["state"].tolist())
    random.setstate((state["version"], internal, state["gauss_next"]))


class _Trainer:
    """The state of one run: model, optimiser, scheduler, RNGs, best epoch and history."""

    def __init__(self, cfg: TrialConfig, data: CachedData, log: Callable[[str], None]):
        stride = model_stride(cfg.decoder_channels)
        if data.image_size % stride:
            raise ValueError(
                f"the cached data is {data.image_size} px, but a U-Net with "
                f"{len(cfg.decoder_channels)} decoder stages needs a multiple of {stride} px: "
                f"change --image-size (or the decoder)"
            )
        self.image_size = data.image_size
        self.cfg, self.log = cfg, log
        self.arm = get_arm(cfg.arm)
        seed_everything(cfg.seed)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        self.model = build_model(cfg.encoder, cfg.encoder_weights, cfg.decoder_channels).to(
            self.device
        )
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.sched = _make_scheduler(cfg, self.opt)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # batch order + augmentation: one RNG
        self.dd = DeviceData(data, self.device)
        self.epoch, self.best_epoch, self.best_val = 0, 0, -math.inf
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict] = []

    # -- checkpointing -------------------------------------------------------------------------
    def save(self, ckpt_dir: Path, extra: dict | None) -> None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_val": float(self.best_val),
            "history": _plain(self.history),
            "best_weights": self.best_weights,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict() if self.sched else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": _numpy_rng_state(),
                "python": _python_rng_state(),
                "batches": self.gen.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }
        torch.save(state, ckpt_dir / _STATE_FILE)
        (ckpt_dir / _EXTRA_FILE).write_text(json.dumps(extra or {}))

    def load(self, ckpt_dir: str | Path) -> None:
        path = Path(ckpt_dir) / _STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no {_STATE_FILE} in checkpoint {ckpt_dir}")
        state = load_plain(path, self.device)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.sched and state["sched"]:
            self.sched.load_state_dict(state["sched"])
        self.epoch, self.best_epoch, self.best_val = (
            state["epoch"],
            state["best_epoch"],
            state["best_val"],
        )
        self.history, self.best_weights = state["history"], state["best_weights"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        _set_numpy_rng_state(rng["numpy"])
        _set_python_rng_state(rng["python"])
        self.gen.set_state(rng["batches"].cpu())
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.log(
            f"resumed {self.cfg.arm} after epoch {self.epoch} (best val AUC {self.best_val:.4f} "
            f"at epoch {self.best_epoch})"
        )

    # -- one epoch -----------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float] | None:
        """Mean loss terms of one epoch, or None when a loss went non-finite (diverged)."""
        self.model.train()
        sums: dict[str, float] = {}
        n_batches, data_s, t0 = 0, 0.0, time.perf_counter()
        for idx in self.dd.train_batches(self.cfg.batch_size, self.gen):
            td = time.perf_counter()
            x, gaze, y = self.dd.batch(idx)
            if self.cfg.augment:
                x, gaze = random_affine(x, gaze, self.gen)
            x = self.arm.train_input(x, gaze, self.gen, self.cfg)  # gaze-mask, cutout; else x
            data_s += time.perf_counter() - td
            terms = step_terms(self.model, self.arm, self.cfg, x, gaze, y)
            loss = terms["total"]
            if not torch.isfinite(loss):
                return None
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip_value:
                torch.nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.grad_clip_value)
            self.opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_batches += 1
        out = {
            f"train/{'loss' if k == 'total' else 'loss_' + k}": v / max(1, n_batches)
            for k, v in sums.items()
        }
        out["time/epoch_s"] = time.perf_counter() - t0
        out["time/data_frac"] = data_s / max(1e-9, out["time/epoch_s"])
        return out

    def validate(self) -> dict[str, float]:
        """Validation AUCs and loss; an undefined AUC (a class absent from the split, or the only
        one) stays NaN, which the record leaves out and the best-epoch choice skips."""
        probs, labels, loss = predict(self.model, self.dd, "val", self.cfg.eval_batch_size)
        aucs = per_class_auc(labels, probs) if len(labels) else {k: math.nan for k in AUC_KEYS}
        out = {metric_key("val", k): float(aucs[k]) for k in AUC_KEYS}
        out[VAL_AUC_UNDEFINED] = float(sum(not math.isfinite(aucs[k]) for k in AUC_KEYS[:-1]))
        out["val/loss"] = float(loss)
        return out

    # -- the end -------------------------------------------------------------------------------
    def finalize(self, out_dir: Path) -> dict[str, float]:
        """Evaluate test once with the best epoch's weights; write every artifact to out_dir."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        else:
            logger.warning(
                "[%s] no epoch had a defined validation AUC: testing the last epoch's "
                "weights; the trial has no selection score",
                self.cfg.arm,
            )
        cfg, dd = self.cfg, self.dd
        probs, labels, _ = predict(self.model, dd, "test", cfg.eval_batch_size)
        keys = [dd.keys[i] for i in dd.indices("test").tolist()]
        chosen = self.best_weights is not None
        res: dict[str, float] = {
            SELECTION_METRIC: self.best_val if chosen else math.nan,
            BEST_EPOCH: float(self.best_epoch) if chosen else math.nan,
        }
        point = per_class_auc(labels, probs)
        ci = bootstrap_auc_ci(labels, probs, resamples=cfg.bootstrap_resamples, seed=cfg.seed)
        for k in AUC_KEYS:
            res[metric_key("test", k)] = point[k]
            res[metric_key("test", k, "low")], res[metric_key("test", k, "high")] = (
                ci[k][1],
                ci[k][2],
            )

        pred = pd.DataFrame(
            {
                "key": keys,
                "split": "test",
                "label": labels,
                "label_name": [CLASSES[i] for i in labels],
                **{column: probs[:, c] for c, column in enumerate(PROB_COLUMNS)},
            },
            columns=list(PREDICTION_COLUMNS),
        )
        (out_dir / "predictions").mkdir(parents=True, exist_ok=True)
        pred.sort_values("key").to_csv(out_dir / "predictions" / "test.csv", index=False)

        panel_keys = choose_panel_keys(keys, labels, cfg.panels)
        rows, arrays = explain(
            self.model,
            dd,
            "test",
            self.arm,
            cfg.eval_batch_size,
            panel_keys,
            fast_conv=cfg.fast_conv,
        )
        exp = pd.DataFrame(rows)
        (out_dir / "explain").mkdir(parents=True, exist_ok=True)
        exp.to_csv(out_dir / "explain" / "test.csv", index=False)
        own = exp[exp["map"] != "probe"].groupby("map")[list(SALIENCY_KEYS)].mean()
        for (kind, metric), v in own.stack().items():
            res[explain_metric(kind, metric)] = float(v)
        probe = exp[exp["map"] == "probe"].groupby("generator")[list(SALIENCY_KEYS)].mean()
        for (generator, metric), v in probe.stack().items():
            res[explain_metric("probe", metric, generator)] = float(v)
        heat = out_dir / "heatmaps"
        heat.mkdir(parents=True, exist_ok=True)
        np.savez(heat / "maps.npz", **arrays)
        gen_name = self.arm.generator if self.arm.generator != "none" else "gbp"
        write_panels(arrays, gen_name, heat)
        (out_dir / "model").mkdir(parents=True, exist_ok=True)
        torch.save(
            # the image size is the data's: predict letterboxes a new image to it
            {
                "state_dict": self.model.state_dict(),
                "config": cfg.to_dict(),
                "image_size": self.image_size,
            },
            out_dir / "model" / "model.pt",
        )
        return res


def fit(
    cfg: TrialConfig,
    data: CachedData,
    out_dir: str | Path,
    *,
    report: ReportFn | None = None,
    resume_from: str | Path | None = None,
    checkpoint_extra: dict | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train one configuration, validate each epoch, test the best epoch once.

    Args:
        cfg: the arm and its hyperparameters.
        data: the preprocessed dataset; its image size is the trial's (a multiple of the U-Net's
            stride, ``trainables.config.model_stride``).
        out_dir: folder for predictions/, explain/, heatmaps/, model/, summary.json (and, without a
            ``report`` callback, the latest checkpoint in checkpoint/).
        report: called once per epoch with the metrics and a checkpoint folder that is deleted after the
            call returns (Ray Tune persists it); the last epoch's metrics also carry the test results.
        resume_from: a checkpoint folder written by ``fit``; training continues after its epoch.
        checkpoint_extra: JSON-able dict stored with every checkpoint (``read_checkpoint_extra``).
        log: progress printer.

    Returns:
        FitResult; status "diverged" (after one report with finite metrics) when a loss went non-finite.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tr = _Trainer(cfg, data, log)
    if resume_from is not None:
        tr.load(resume_from)

    def emit(metrics: dict[str, float]) -> None:
        if report is None:
            tr.save(out_dir / "checkpoint", checkpoint_extra)
            return
        tmp = Path(tempfile.mkdtemp(prefix="ckpt-"))
        try:
            tr.save(tmp, checkpoint_extra)
            report(metrics, str(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    test: dict[str, float] = {}
    warned = False
    for epoch in range(tr.epoch + 1, cfg.epochs + 1):
        train = tr.train_epoch()
        if train is None:
            msg = f"diverged in epoch {epoch}: non-finite training loss (lr={cfg.lr:g})"
            log(f"[{cfg.arm}] {msg}")
            metrics = {EPOCH: float(epoch), SEARCH_METRIC: 0.0, DIVERGED: 1.0, DONE: 1.0}
            if report is not None:
                report(metrics, None)
            return FitResult(
                "diverged",
                msg,
                epoch - 1,
                tr.best_epoch,
                _finite(tr.best_val, 0.0),
                tr.history,
                {},
                out_dir,
            )
        val = tr.validate()
        tr.epoch = epoch
        score = val[SEARCH_METRIC]
        if val[VAL_AUC_UNDEFINED] and not warned:
            undefined = [k for k in AUC_KEYS[:-1] if not math.isfinite(val[metric_key("val", k)])]
            logger.warning(
                "[%s] validation AUC undefined for %s (the validation split lacks a class "
                "or holds only one): recorded as missing, not as a value%s",
                cfg.arm,
                ", ".join(undefined),
                "" if math.isfinite(score) else "; no epoch can be chosen by it",
            )
            warned = True
        if math.isfinite(score) and score > tr.best_val:
            tr.best_val, tr.best_epoch = score, epoch
            tr.best_weights = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
        if isinstance(tr.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if math.isfinite(score):  # an undefined epoch is no evidence of a plateau
                tr.sched.step(score)
        elif tr.sched is not None:
            tr.sched.step()
        metrics = {EPOCH: float(epoch), **train, **val}
        tr.history.append(metrics)
        log(
            f"[{cfg.arm}] epoch {epoch}/{cfg.epochs}  loss {train.get('train/loss', math.nan):.4f}  "
            f"val AUC {val['val/auc_mean']:.3f} (N {val['val/auc_normal']:.3f} C {val['val/auc_chf']:.3f} "
            f"P {val['val/auc_pneumonia']:.3f})  {train['time/epoch_s']:.1f}s"
        )
        if epoch == cfg.epochs:
            test = tr.finalize(out_dir)
            metrics.update(test)
            metrics[DONE] = 1.0
            (out_dir / "summary.json").write_text(
                json.dumps(
                    {
                        "status": "ok",
                        "config": cfg.to_dict(),
                        "image_size": tr.image_size,
                        "history": tr.history,
                        "test": test,
                    },
                    indent=1,
                )
            )
        emit(metrics)
    best_val = tr.best_val if math.isfinite(tr.best_val) else math.nan
    return FitResult("ok", "finished", tr.epoch, tr.best_epoch, best_val, tr.history, test, out_dir)
