"""A hand-made MLflow record (real sqlite store, runs made with the MLflow client).

Imported by name (not via conftest) so tests can use its helpers; conftest re-exports the fixture.

12 test images, 4 per class. Predictions are built so every AUC is known by hand:

- ``perfect``: 0.8 on the true class, 0.1 elsewhere -> every AUC 1.0.
- ``rotated``: per class, 2 images right (0.8 on the true class) and 2 confidently wrong, sent to
  the next class (0 -> 1 -> 2 -> 0). For class c: positives 2 x 0.8 and 2 x 0.1; negatives 6 x 0.1 and
  the 2 wrong images of class c-1 at 0.8. Wins 2*6 + ties (2*2 + 2*6)/2 = 12 + 8 = 20 of 32 pairs:
  every AUC 0.625.
- ``pneumonia_half``: perfect except two pneumonia images at (0.45, 0.45, 0.1): pneumonia positives
  2 x 0.8 and 2 x 0.1 vs 8 negatives at 0.1 -> (16 + 16/2) / 32 = 0.75; Normal and CHF stay 1.0
  (0.45 < 0.8); mean 2.75 / 3.

Best runs (by validation): unet -> rotated, no-seg -> perfect, set1-gbp -> pneumonia_half,
set2-gbp -> pneumonia_half, set3-gbp -> perfect: no-seg and set3-gbp predict identically, and so
do set1-gbp and set2-gbp. Every run logs ``train/loss`` = 1/epoch, ``val/loss`` = 1.2/epoch and
``val/auc_mean`` = val - 0.1/epoch for epochs 1, 2 and lasts ``seconds`` (60 unless given). The parent run holds
``study/config.json`` (a trial template with arm unet, lr 0.001, seed 0, epochs 3) and
``study/data.json`` (``DATA``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tests.tiny import egd_task
from trainables.record import data_summary

CLASSES = egd_task().classes

KEYS = [f"img{i:02d}" for i in range(12)]
LABELS = np.repeat(np.arange(3), 4)
PANEL_KEYS = ["img00", "img04", "img08"]


def perfect() -> np.ndarray:
    return np.where(np.eye(3)[LABELS] == 1, 0.8, 0.1)


def rotated() -> np.ndarray:
    probs = perfect()
    for c in range(3):
        for i in np.flatnonzero(LABELS == c)[2:]:
            probs[i] = np.where(np.arange(3) == (c + 1) % 3, 0.8, 0.1)
    return probs


def pneumonia_half() -> np.ndarray:
    probs = perfect()
    probs[np.flatnonzero(LABELS == 2)[2:]] = [0.45, 0.45, 0.1]
    return probs


def predictions_frame(probs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "key": KEYS,
            "split": "test",
            "label": LABELS,
            "label_name": [CLASSES[c] for c in LABELS],
        }
    )
    for c, name in enumerate(CLASSES):
        frame[f"prob_{name.lower()}"] = probs[:, c]
    return frame


def explain_frame(cc: float, decoder: bool) -> pd.DataFrame:
    rows = []
    for i, (key, label) in enumerate(zip(KEYS, LABELS)):
        rows.append((key, label, "generator", "gbp", cc + 0.01 * (i % 3 - 1), 1.0, 1.5, 0.8))
        if decoder:
            rows.append((key, label, "decoder", "gbp", 0.5, 0.7, 1.0, 0.75))
    rows.append(("img99", 0, "generator", "gbp", float("nan"), 1.0, 1.0, 0.5))  # excluded row
    return pd.DataFrame(
        rows, columns=["key", "label", "map", "generator", "cc", "kl", "nss", "auc_judd"]
    )


def maps_arrays(probs: np.ndarray, decoder: bool, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = [KEYS.index(k) for k in PANEL_KEYS]
    s = 16
    out = {
        "keys": np.array(PANEL_KEYS),
        "labels": LABELS[idx],
        "probs": probs[idx].astype(np.float32),
    }
    for name in ("image", "gaze", "gbp", "deconv", "gradcam", "decoder"):
        out[name] = rng.random((len(idx), s, s)).astype(np.float32)
    if not decoder:
        out["decoder"][:] = np.nan
    return out


SPACE = "lr:1e-05-0.01 log,gamma:0.1-0.9"
DATA = data_summary(
    labels=[0] * 30 + [1] * 28 + [2] * 26 + list(LABELS),
    split_ids=[0] * 40 + [1] * 44 + [2] * 12,
    exclusions={"calibration_screen": 5, "no_fixation_on_image": 2, "calibration_rows": 40},
    classes=CLASSES,
    image_size=16,
)


@dataclass
class HandMadeRecord:
    tracking_uri: str
    experiment: str
    parent: str
    old_parent: str
    root: Path
    runs: dict[str, str] = field(default_factory=dict)  # name -> run id


PARAMS = {"arm": "unet", "lr": "0.001", "seg_ratio": "0.5", "gamma": "0.41731", "epochs": "3", "image_size": "16",
          "encoder": "efficientnet-b0", "batch_size": "4"}  # fmt: skip


def add_trial(
    client,
    exp,
    parent,
    root,
    name,
    arm,
    *,
    start,
    val,
    probs=None,
    status="ok",
    stage="search",
    seed=0,
    lr="0.001",
    explain=None,
    maps=None,
    predictions=None,
    seconds=60,
):
    """One child run as the study logs it; ``predictions`` replaces the frame from ``probs``."""
    model_set, _, generator = arm.partition("-")
    if arm in ("unet", "no-seg"):
        model_set, generator = arm, "none"
    tags = {"mlflow.parentRunId": parent, "role": "trial", "arm": arm, "model_set": model_set,
            "generator": generator, "stage": stage, "trial_id": name, "status": status}  # fmt: skip
    run = client.create_run(exp, start_time=start, tags=tags, run_name=name)
    rid = run.info.run_id
    params = [Param(k, v) for k, v in (PARAMS | {"arm": arm, "lr": lr, "seed": str(seed)}).items()]
    metrics = [Metric("val/auc_mean", val - 0.1 / e, start + e, e) for e in (1, 2)]
    metrics += [Metric("train/loss", 1.0 / e, start + e, e) for e in (1, 2)]
    metrics += [Metric("val/loss", 1.2 / e, start + e, e) for e in (1, 2)]
    metrics += [Metric("best/val_auc_mean", val, start + 3, 0)]
    if probs is not None:
        metrics += [Metric("test/auc_mean", 0.0, start + 3, 0)]  # must never drive selection
    client.log_batch(rid, metrics=metrics, params=params)
    local = root / "staging" / name
    local.mkdir(parents=True)
    if predictions is None and probs is not None:
        predictions = predictions_frame(probs)
    if predictions is not None:
        predictions.to_csv(local / "test.csv", index=False)
        client.log_artifact(rid, str(local / "test.csv"), "predictions")
    if explain is not None:
        (local / "explain").mkdir()
        explain.to_csv(local / "explain" / "test.csv", index=False)
        client.log_artifact(rid, str(local / "explain" / "test.csv"), "explain")
    if maps is not None:
        np.savez(local / "maps.npz", **maps)
        client.log_artifact(rid, str(local / "maps.npz"), "heatmaps")
    client.set_terminated(rid, end_time=start + 1000 * seconds)
    return rid


@pytest.fixture(scope="session")
def hand_made_record(tmp_path_factory) -> HandMadeRecord:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("gaze-unet", artifact_location=(root / "mlartifacts").as_uri())
    old = client.create_run(
        exp, start_time=1_000, tags={"role": "study"}, run_name="old"
    ).info.run_id
    parent = client.create_run(
        exp, start_time=2_000, tags={"role": "study", "study_name": "hand-made", "preset": "demo"}
    ).info.run_id
    study_params = {"preset": "demo", "arms": "all", "trials_per_arm": "2"}
    study_params |= {f"space/{a}": SPACE for a in ("unet", "set1-gbp", "set2-gbp", "set3-gbp")}
    study_params["space/no-seg"] = "lr:1e-05-0.01 log"
    client.log_batch(parent, params=[Param(k, v) for k, v in study_params.items()])
    template = {"arm": "unet", "lr": 0.001, "seed": 0, "epochs": 3, "decoder_channels": [16, 8]}
    (root / "config.json").write_text(json.dumps({"trial": template, "data": {"size": 16}}))
    client.log_artifact(parent, str(root / "config.json"), "study")
    (root / "data.json").write_text(json.dumps(DATA))
    client.log_artifact(parent, str(root / "data.json"), "study")
    rec = HandMadeRecord(uri, "gaze-unet", parent, old, root)

    def t(name: str, arm: str, **kw) -> None:
        rec.runs[name] = add_trial(client, exp, parent, root, name, arm, **kw)

    t(
        "unet",
        "unet",
        start=3_000,
        seconds=90,
        val=0.80,
        probs=rotated(),
        explain=explain_frame(0.40, True),
        maps=maps_arrays(rotated(), True, 0),
    )
    # Same config, other seed, higher validation: describes the spread, is never "the best".
    t("unet_seed1", "unet", start=3_100, val=0.95, probs=perfect(), stage="seeds", seed=1)
    t(
        "noseg",
        "no-seg",
        start=3_200,
        val=0.70,
        probs=perfect(),
        explain=explain_frame(0.20, False),
        maps=maps_arrays(perfect(), False, 1),
    )
    # Higher test AUC but lower validation than set1_best: must not be chosen.
    t("set1_decoy", "set1-gbp", start=3_300, val=0.60, probs=perfect(), lr="0.01")
    t(
        "set1_best",
        "set1-gbp",
        start=3_400,
        val=0.85,
        probs=pneumonia_half(),
        explain=explain_frame(0.60, True),
        maps=maps_arrays(pneumonia_half(), True, 2),
    )
    t("set1_deconv_failed", "set1-deconv", start=3_500, val=0.99, status="failed")
    # A validation tie: the earlier run wins.
    t("set2_early", "set2-gbp", start=3_600, val=0.70, probs=pneumonia_half(), lr="0.002")
    t("set2_late", "set2-gbp", start=3_700, val=0.70, probs=perfect(), lr="0.003")
    # ASHA-stopped with the best validation: only status ok counts.
    t("set3_stopped", "set3-gbp", start=3_800, val=0.99, probs=rotated(), status="stopped")
    t("set3_ok_no_predictions", "set3-gbp", start=3_850, val=0.98)
    t("set3_ok", "set3-gbp", start=3_900, val=0.50, probs=perfect())
    client.set_terminated(parent)
    return rec
