"""What a trial leaves behind when it ends: the test split evaluated once with the best epoch's
weights, and every artifact the record declares (``trainables.record.schema``): predictions,
map-vs-gaze metrics, heatmap arrays and panels, the model, and a summary."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainables.evaluate import choose_panel_keys, explain, predict
from trainables.metrics import bootstrap_auc_ci, per_class_auc
from trainables.panels import write_panels
from trainables.reader_eval import READERS_COLUMNS, model_frame
from trainables.record import (
    BEST_EPOCH,
    MODEL,
    SALIENCY_KEYS,
    SELECTION_METRIC,
    explain_metric,
    metric_key,
    readers_metric,
)
from trainables.record.files import write_explain, write_maps, write_predictions, write_readers
from trainables.task import Task

if TYPE_CHECKING:
    from trainables.fit import TrainState

logger = logging.getLogger(__name__)
SUMMARY = "summary.json"


def test_metrics(keys: list[str], labels: np.ndarray, probs: np.ndarray, cfg, task: Task) -> dict[str, float]:  # fmt: skip
    """Whole-test-set AUCs with their percentile-bootstrap intervals, the images in key order
    (the order analysis pairs arms in) and the study's bootstrap seed: the one interval every
    view of the record shows."""
    order = np.argsort(np.asarray(keys, dtype=str), kind="stable")
    labels, probs = labels[order], probs[order]
    point = per_class_auc(labels, probs, task)
    ci = bootstrap_auc_ci(labels, probs, task, resamples=cfg.bootstrap_resamples, seed=cfg.bootstrap_seed)  # fmt: skip
    out: dict[str, float] = {}
    for k in task.auc_keys:
        out[metric_key("test", k)] = point[k]
        out[metric_key("test", k, "low")], out[metric_key("test", k, "high")] = ci[k][1:]
    return out


def _map_means(frame) -> dict[str, float]:
    out: dict[str, float] = {}
    own = frame[frame["map"] != "probe"].groupby("map")[list(SALIENCY_KEYS)].mean()
    for (kind, metric), v in own.stack().items():
        out[explain_metric(kind, metric)] = float(v)
    probe = frame[frame["map"] == "probe"].groupby("generator")[list(SALIENCY_KEYS)].mean()
    for (generator, metric), v in probe.stack().items():
        out[explain_metric("probe", metric, generator)] = float(v)
    return out


def _readers_means(frame) -> dict[str, float]:
    """``test/readers/<map>_<metric>``: per map kind, the mean over the test images."""
    means = frame.groupby("map")[list(READERS_COLUMNS[3:])].mean()
    return {readers_metric(kind, metric): float(v) for (kind, metric), v in means.stack().items()}


def finalize(state: TrainState, out_dir: Path) -> dict[str, float]:
    """Evaluate the test split once with the best epoch's weights; write every artifact.

    Returns:
        The trial's final metrics: ``best/*``, ``test/auc_*`` with intervals, ``test/explain/*``.
    """
    chosen = state.best_weights is not None
    if chosen:
        state.model.load_state_dict(state.best_weights)
    else:
        logger.warning(
            "[%s] no epoch had a defined validation AUC: testing the last epoch's weights; the "
            "trial has no selection score",
            state.cfg.arm,
        )
    cfg, dd = state.cfg, state.dd
    probs, labels, _ = predict(state.model, dd, "test", cfg.eval_batch_size)
    keys = [dd.keys[i] for i in dd.indices("test").tolist()]
    res = {
        SELECTION_METRIC: state.best_val if chosen else math.nan,
        BEST_EPOCH: float(state.best_epoch) if chosen else math.nan,
        **test_metrics(keys, labels, probs, cfg, dd.task),
    }
    write_predictions(out_dir, keys, labels, probs, dd.task)
    panel_keys = choose_panel_keys(keys, dd.task.stratum(labels), cfg.panels)
    rows, arrays, own = explain(state.model, dd, "test", state.arm, cfg, panel_keys)
    res.update(_map_means(write_explain(out_dir, rows)))
    if own:  # a dataset with readers and ellipses: the maps judged by them (reader_eval)
        res.update(_readers_means(write_readers(out_dir, model_frame(dd.host, dd.indices("test").cpu().numpy(), own))))  # fmt: skip
    trains_own = state.arm.generator != "none"  # GBP stands in for arms that train with none
    write_panels(arrays, state.arm.display_generator, write_maps(out_dir, arrays).parent, dd.task.classes, trains_own)  # fmt: skip
    model_path = out_dir / MODEL
    model_path.parent.mkdir(parents=True, exist_ok=True)
    # the image size is the data's: predict letterboxes a new image to it
    torch.save(
        {
            "state_dict": state.model.state_dict(),
            "config": cfg.to_dict(),
            "image_size": state.image_size,
            "task": dd.task.to_dict(),  # the classes the head predicts
        },
        model_path,
    )
    return res


def write_summary(out_dir: Path, state: TrainState, test: dict[str, float]) -> None:
    """``summary.json``: the config, image size, per-epoch history and final metrics."""
    summary = {
        "status": "ok",
        "config": state.cfg.to_dict(),
        "image_size": state.image_size,
        "history": state.history,
        "test": test,
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
