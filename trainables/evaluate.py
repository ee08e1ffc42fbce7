"""Inference on a split: class probabilities, and map-vs-gaze agreement of the generator and decoder maps.

Evaluation maps are made for the PREDICTED class (no label leakage) with the model in eval mode, so
BatchNorm uses running statistics and each image's map depends on that image alone.

Two more readings of a split serve model selection without test labels (``trainables.blind_selection``):
the probabilities on images hidden outside the gaze (:func:`predict_gaze_masked`), and where the
model's input gradient lies relative to the gaze (:func:`outside_energy_shares`).
"""

from __future__ import annotations

import numpy as np
import torch

from trainables.config import TrialConfig
from trainables.device_data import DeviceData
from trainables.generators import panel_generators, probe_generators
from trainables.losses import class_probabilities, classification_loss, outside_gradient_share
from trainables.masking import MaskSpec, mask_outside_gaze
from trainables.metrics import saliency_metrics
from trainables.model import MultiTaskUNet
from trainables.model_sets import Arm
from trainables.saliency import PassConfig, generator_map, to_heatmap


def _empty(dd: DeviceData) -> tuple[np.ndarray, np.ndarray]:
    shape = (0,) if dd.task.exclusive else (0, dd.task.n)
    return np.zeros((0, dd.task.n)), np.zeros(shape, dtype=np.int64)


@torch.no_grad()
def predict(model: MultiTaskUNet, dd: DeviceData, split: str, batch_size: int):
    """Class probabilities (N, K), labels and the mean classification loss of one split, in
    stored order (softmax and cross-entropy, or sigmoid and binary cross-entropy: the task's)."""
    model.eval()
    probs, labels, loss_sum = [], [], 0.0
    for idx in dd.eval_batches(split, batch_size):
        x, _, y = dd.batch(idx)
        logits = model.classify(x).float()
        loss_sum += classification_loss(logits, y, reduction="sum").item()
        probs.append(class_probabilities(logits, dd.task.exclusive).cpu())
        labels.append(y.cpu())
    n = max(1, len(dd.indices(split)))
    if not probs:
        return (*_empty(dd), float("nan"))
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy(), loss_sum / n


@torch.no_grad()
def predict_gaze_masked(
    model: MultiTaskUNet, dd: DeviceData, split: str, spec: MaskSpec, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N,3) and labels (N,) of one split with every image hidden outside
    its gaze as ``spec`` says (``masking.mask_outside_gaze``, as the gaze-mask arm trains).

    The noise comes from a generator seeded 0 here, so the result is a function of the model and
    the data alone (the same batches, the same noise, every call).
    """
    model.eval()
    gen = torch.Generator().manual_seed(0)
    probs, labels = [], []
    for idx in dd.eval_batches(split, batch_size):
        x, gaze, y = dd.batch(idx)
        logits = model.classify(mask_outside_gaze(x, gaze, spec, gen)).float()
        probs.append(class_probabilities(logits, dd.task.exclusive).cpu())
        labels.append(y.cpu())
    if not probs:
        return _empty(dd)
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy()


def outside_energy_shares(
    model: MultiTaskUNet, dd: DeviceData, split: str, threshold: float, batch_size: int
) -> np.ndarray:
    """Per image of one split, the share of the log-probability input gradient's energy outside
    the gaze (``losses.outside_gradient_share``: what rrr-share trains down), in stored order.

    The score sums every class's log-probability, so no label (true or predicted) is read; eval
    mode, BatchNorm on running statistics: each image's value depends on that image alone. nan
    for an image whose gradient is zero everywhere (no share to speak of).
    """
    model.eval()
    shares: list[float] = []
    for idx in dd.eval_batches(split, batch_size):
        x, gaze, _ = dd.batch(idx)
        target = torch.zeros(len(idx), dtype=torch.long, device=x.device)  # unused by the score
        grad = generator_map(
            "logprob-gradient",
            model,
            x,
            target,
            create_graph=False,
            how=PassConfig(bn_mode="frozen"),
        )
        # Scale-free, so each map may be divided by its largest value: an untrained or saturated
        # model's gradient (energy ~1e-20 in float32) would otherwise drown in the loss's eps.
        # An all-zero map has no share: nan.
        peak = grad.abs().flatten(1).amax(1).clamp(min=torch.finfo(grad.dtype).tiny)
        grad = grad / peak.view(-1, 1, 1, 1)
        for i in range(len(idx)):
            one = outside_gradient_share(grad[i : i + 1], gaze[i : i + 1], threshold, eps=0.0)
            shares.append(float(one))
    return np.asarray(shares, dtype=np.float64)


def predicted_class_maps(
    model: MultiTaskUNet,
    x: torch.Tensor,
    names: tuple[str, ...],
    with_decoder: bool,
    fast_conv: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """[0, 1] heatmaps (B,1,H,W) for the predicted class (each named generator, plus the decoder),
    and the class probabilities (B,3) they were made from. Eval mode: BatchNorm running
    statistics, so each image's maps depend on that image alone (test evaluation, predict)."""
    model.eval()
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        mask_logits, class_logits = model(x)
    target = class_logits.argmax(dim=1)
    if with_decoder:
        out["decoder"] = torch.sigmoid(mask_logits.float())
    for name in names:
        raw = generator_map(
            name,
            model,
            x,
            target,
            create_graph=False,
            how=PassConfig(bn_mode="frozen", fast_conv=fast_conv),
        )
        out[name] = to_heatmap(raw).detach()
    return out, class_probabilities(class_logits.float(), getattr(model, "exclusive", True))


def explain(
    model: MultiTaskUNet,
    dd: DeviceData,
    split: str,
    arm: Arm,
    cfg: TrialConfig,
    panel_keys: list[str],
):
    """Map-vs-gaze metrics per image, and the maps of the panel images.

    The "generator" map is the arm's own generator (GBP for arms that train with none); the decoder map
    is left out for arms whose decoder is never trained (``arm.uses_decoder`` False). "probe" rows
    score every probe generator (``generators.probe_generators``) on every model, so arms can be compared map for map
    (the evidence experiment compares, e.g., the input gradient of the rrr arm with no-seg's).

    Returns:
        rows: dicts with key, label, map ("generator" | "decoder" | "probe"), generator, cc, kl,
            nss, auc_judd.
        panels: dict of arrays for ``heatmaps/maps.npz`` (keys, labels, probs, image, gaze, each
            panel generator's map, decoder, and "generator": the arm's own map), in
            ``panel_keys`` order.
        own: ``(map kind, generator) -> (N, S, S)`` the arm's own map and its decoder's of every
            image of the split (stored order), for a dataset with readers (``dd.readers``);
            else empty.
    """
    batch_size, fast_conv = cfg.eval_batch_size, cfg.fast_conv
    keep_all = dd.readers is not None
    own: dict[tuple[str, str], list[np.ndarray]] = {}
    model.eval()
    gen_name = arm.display_generator
    with_decoder = arm.uses_decoder
    probes, panel_maps = probe_generators(), panel_generators()
    wanted = set(panel_keys)
    rows: list[dict] = []
    panel: dict[str, dict[str, np.ndarray]] = {}
    for idx in dd.eval_batches(split, batch_size):
        x, gaze, y = dd.batch(idx)
        keys = [dd.keys[i] for i in idx.tolist()]
        need_panel = any(k in wanted for k in keys)
        names = tuple(dict.fromkeys((gen_name, *probes, *(panel_maps if need_panel else ()))))
        maps, probs = predicted_class_maps(model, x, names, with_decoder, fast_conv)
        g = gaze[:, 0].cpu().numpy()
        scored = [("generator", gen_name, maps[gen_name])]
        if with_decoder:
            scored.append(("decoder", gen_name, maps["decoder"]))
        scored += [("probe", name, maps[name]) for name in probes]
        for kind, generator, m in scored:
            m = m[:, 0].float().cpu().numpy()
            if keep_all and kind != "probe":
                own.setdefault((kind, generator), []).append(m)
            for i, key in enumerate(keys):
                rows.append(
                    {
                        "key": key,
                        "label": _label(y[i]),
                        "map": kind,
                        "generator": generator,
                        **saliency_metrics(m[i], g[i]),
                    }
                )
        if need_panel:
            probs = probs.cpu().numpy()
            for i, key in enumerate(keys):
                if key not in wanted:
                    continue
                entry = {
                    "image": x[i, 0].cpu().numpy(),
                    "gaze": g[i],
                    "label": _label(y[i]),
                    "probs": probs[i],
                }
                for name in (*panel_maps, "decoder"):
                    m = maps.get(name)
                    entry[name] = (
                        m[i, 0].float().cpu().numpy()
                        if m is not None
                        else np.full_like(g[i], np.nan)
                    )
                entry["generator"] = maps[gen_name][i, 0].float().cpu().numpy()  # the arm's own
                panel[key] = entry
    order = [k for k in panel_keys if k in panel]
    arrays: dict[str, np.ndarray] = {"keys": np.array(order, dtype=str)}
    if order:
        arrays["labels"] = np.array([panel[k]["label"] for k in order], dtype=np.int64)
        arrays["probs"] = np.stack([panel[k]["probs"] for k in order]).astype(np.float32)
        for name in ("image", "gaze", *panel_maps, "decoder", "generator"):
            arrays[name] = np.stack([panel[k][name] for k in order]).astype(np.float32)
    return rows, arrays, {k: np.concatenate(v) for k, v in own.items()}


def _label(y: torch.Tensor) -> int:
    """A row's class id, or -1 for a multi-label image (its labels are in the predictions)."""
    return int(y) if y.ndim == 0 else -1


def choose_panel_keys(keys: list[str], strata: np.ndarray, count: int) -> list[str]:
    """The same panel images in every trial: round-robin over the strata (the classes of an
    exclusive task: ``Task.stratum``), each in sorted key order."""
    strata = np.asarray(strata)
    by_class = [
        sorted(k for k, lab in zip(keys, strata, strict=True) if lab == c)
        for c in sorted(set(strata.tolist()))
    ]
    chosen: list[str] = []
    rank = 0
    while len(chosen) < count and any(rank < len(b) for b in by_class):
        for b in by_class:
            if rank < len(b) and len(chosen) < count:
                chosen.append(b[rank])
        rank += 1
    return chosen
