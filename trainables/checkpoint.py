"""A trial's checkpoint: model, optimiser, scheduler, best epoch, history and every RNG state, so a
resumed trial continues exactly (same batches, same random draws). Plain tensors and containers
only, loaded with ``torch.load(weights_only=True)``: checkpoints live in Tune's storage (s3, gs,
NFS), which more people can write to than run code on the workers.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE, EXTRA_FILE = "state.pt", "extra.json"


class CheckpointError(ValueError):
    """A checkpoint that is not plain tensors and containers (it would run code when unpickled)."""


def load_plain(
    path: str | Path, map_location: str | torch.device = "cpu", name: str | None = None
) -> dict:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only.

    Args:
        path: the file to read.
        map_location: where tensors go.
        name: how errors name the file (e.g. its place in Tune's storage when ``path`` is a local
            copy of it); default ``path``.

    Raises:
        CheckpointError: the file holds anything else (the message names the file).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; keep its one line that names the offending global.
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln]
        raise CheckpointError(
            f"{name or path}: refused to load: not plain weights (tensors, numbers and containers "
            f"only; unpickling anything else can run code). {lines[0] if lines else exc}"
        ) from None


def read_extra(ckpt_dir: str | Path) -> dict:
    """What the trainable stored beside a checkpoint's state (e.g. the MLflow run id)."""
    path = Path(ckpt_dir) / EXTRA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_extra(ckpt_dir: str | Path, extra: dict) -> None:
    (Path(ckpt_dir) / EXTRA_FILE).write_text(json.dumps(extra))


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python numbers (weights_only pickles refuse them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def rng_state(batches: torch.Generator) -> dict:
    """Every RNG a trial draws from: torch, numpy, python, the batch generator, CUDA."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "batches": batches.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }  # fmt: skip


def set_rng_state(state: dict, batches: torch.Generator) -> None:
    """Put back what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    key = n["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["name"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    batches.set_state(state["batches"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save(ckpt_dir: Path, state: Any) -> None:
    """Write a ``fit.TrainState`` to ``ckpt_dir/state.pt``."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "config": state.cfg.to_dict(),
            "epoch": state.epoch,
            "best_epoch": state.best_epoch,
            "best_val": float(state.best_val),
            "history": _plain(state.history),
            "best_weights": state.best_weights,
            "model": state.model.state_dict(),
            "opt": state.opt.state_dict(),
            "sched": state.sched.state_dict() if state.sched else None,
            "rng": rng_state(state.gen),
        },
        ckpt_dir / STATE_FILE,
    )


def load(ckpt_dir: str | Path, state: Any, name: str | None = None) -> None:
    """Restore a ``fit.TrainState`` from a checkpoint folder written by ``save``.

    Args:
        ckpt_dir: the folder (possibly a local copy).
        state: the freshly built state to fill.
        name: how errors name the checkpoint (its place in storage); default the folder.

    Raises:
        FileNotFoundError: no state file. CheckpointError: not plain weights.
    """
    path = Path(ckpt_dir) / STATE_FILE
    shown = f"{name.rstrip('/')}/{STATE_FILE}" if name else str(path)
    if not path.exists():
        raise FileNotFoundError(f"no {STATE_FILE} in checkpoint {name or ckpt_dir}")
    saved = load_plain(path, state.device, name=shown)
    state.model.load_state_dict(saved["model"])
    state.opt.load_state_dict(saved["opt"])
    if state.sched and saved["sched"]:
        state.sched.load_state_dict(saved["sched"])
    state.epoch, state.best_epoch = saved["epoch"], saved["best_epoch"]
    state.best_val, state.history = saved["best_val"], saved["history"]
    state.best_weights = saved["best_weights"]
    set_rng_state(saved["rng"], state.gen)
