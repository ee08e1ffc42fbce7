"""How many trials fit on the Ray cluster, and the resource settings a study leaves to it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from study.presets import StudyConfig


def trial_resources(cfg: StudyConfig) -> dict[str, float]:
    """Ray resources of one trial (``cpu`` always: left out, a trial would get none)."""
    return {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial or 0.0}


def _fits(total: float, each: float) -> int:
    return math.floor(total / each + 1e-9)  # 1 // 0.1 is 9.0 in floating point


def trial_slots(cfg: StudyConfig, cluster: Mapping[str, float]) -> int:
    """How many trials fit on the cluster at once (``ray.cluster_resources()``), at least 1.

    GPU trials: GPUs / ``gpus_per_trial``, and no more than CPUs / ``cpus_per_trial``; CPU trials:
    CPUs / ``cpus_per_trial``.
    """
    slots = []
    if cfg.gpus_per_trial:
        slots.append(_fits(cluster.get("GPU", 0.0), cfg.gpus_per_trial))
    if cfg.cpus_per_trial > 0:
        slots.append(_fits(cluster.get("CPU", 0.0), cfg.cpus_per_trial))
    return max(1, min(slots, default=1))


def resolve_resources(cfg: StudyConfig, cluster: Mapping[str, float]) -> StudyConfig:
    """Fill in what the config leaves to the cluster (None), from its resources now:
    ``gpus_per_trial`` is 1 where the cluster has a GPU and 0 where it has none;
    ``max_concurrent`` (trials at once: all arms side by side, or the one arm searched) is every
    trial slot (``trial_slots``). Side by side, ``study.arms.ArmSearcher`` gives each free slot to
    the arm with the most work left, with no fixed share per arm that would idle once the cheap
    arms are done.

    An autoscaling cluster has fewer nodes at the start than it will: give both values there.
    """
    if cfg.gpus_per_trial is None:
        cfg = dataclasses.replace(cfg, gpus_per_trial=1.0 if cluster.get("GPU", 0) >= 1 else 0.0)
    if cfg.max_concurrent is None:
        cfg = dataclasses.replace(cfg, max_concurrent=trial_slots(cfg, cluster))
    return cfg


def describe(cfg: StudyConfig, cluster: Mapping[str, float]) -> str:
    """One line on the resources trials get and the cluster they came from."""
    gpus = f"{cfg.gpus_per_trial:g} GPU" if cfg.gpus_per_trial else "no GPU"
    return (
        f"{cfg.max_concurrent} trials at once, {gpus} + {cfg.cpus_per_trial:g} CPUs each "
        f"(cluster now: {cluster.get('GPU', 0):g} GPUs, {cluster.get('CPU', 0):g} CPUs; an "
        f"autoscaling one: pass --max-concurrent and --gpus-per-trial)"
    )
