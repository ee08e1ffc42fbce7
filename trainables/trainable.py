"""The Ray Tune function trainable: one trial = one ``trainables.fit.fit`` run, logged to MLflow.

Ray stays at this edge: fit is plain PyTorch with a ``report(metrics, checkpoint_dir)`` callback,
which is bridged here to ``ray.tune.report`` (with a ``Checkpoint``) and to the trial's MLflow run.

Use it as ``tune.with_resources(tune.with_parameters(train_trial, data=cached, study=ctx),
{"cpu": n, "gpu": f})``: the dataset travels through Ray's object store, not through the config.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables import tracking
from trainables.config import TrialConfig
from trainables.data.cached import CachedData
from trainables.model_sets import get_arm
from trainables.record import DIVERGED, DONE, EPOCH, SEARCH_METRIC, STAGES, TAG_TWIN, trial_tags

_TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}
DATASET_KEY = TAG_TWIN  # config key naming the dataset when a trial is given several


@dataclass(frozen=True)
class StudyContext:
    """What every trial of one Tuner shares besides the data (picklable, no Ray objects)."""

    tracking: tracking.TrackingContext  # the study's MLflow parent run
    stage: str = "search"  # "search" (Optuna), "seeds" (best config, other seeds), "evidence"
    cpus_per_trial: float = 1.0  # sets torch's CPU threads
    tags: tuple[tuple[str, str], ...] = ()  # extra tags of every trial run (e.g. the twin)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")


def trial_config(config: dict[str, Any], study: StudyContext, *, has_gpu: bool) -> TrialConfig:
    """Build the trial's TrialConfig from Tune's config (search values + fixed settings).

    Raises:
        KeyError: the config names a field TrialConfig does not have.
    """
    unknown = set(config) - _TRIAL_FIELDS
    if unknown:
        raise KeyError(
            f"trial config has unknown keys {sorted(unknown)}; TrialConfig fields: "
            f"{sorted(_TRIAL_FIELDS)}"
        )
    cfg = TrialConfig(**config)
    device = "cuda" if has_gpu and torch.cuda.is_available() else "cpu"
    return dataclasses.replace(cfg, device=device, num_threads=max(1, int(study.cpus_per_trial)))


def _finite_for_tune(metrics: dict[str, Any]) -> dict[str, Any]:
    """What Tune sees of a report: finite values, and the search metric always (Tune refuses a
    result without it). An undefined search metric (no validation AUC) stays NaN rather than a
    made-up AUC: ASHA's rung cutoffs skip NaN, and the study's searcher
    (``study.tuner.build_searcher``) tells Optuna the trial failed."""
    out = {k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}
    out.setdefault(SEARCH_METRIC, float(metrics.get(SEARCH_METRIC, math.nan)))
    return out


def _in_storage(exc: Exception, restore_dir: str | None, checkpoint: Any) -> Exception:
    """``exc`` naming the checkpoint in Tune's storage instead of the temp copy fit loaded (a
    refused ``state.pt`` must point at the planted file, not at /tmp/restore-...)."""
    if restore_dir is None or restore_dir not in str(exc):
        return exc
    fs = checkpoint.filesystem.type_name
    where = checkpoint.path if fs == "local" else f"{fs}://{checkpoint.path}"
    try:
        return type(exc)(str(exc).replace(restore_dir, where))
    except TypeError:  # an exception type built from other arguments: keep it as it is
        return exc


def train_trial(
    config: dict[str, Any], data: CachedData | Mapping[str, CachedData], study: StudyContext
) -> None:
    """Run one trial: restore, fit with per-epoch reports, log everything to one MLflow run.

    ``data`` may be several named datasets (the evidence experiment's twins): the trial then takes
    the one its config names under ``DATASET_KEY`` and tags its run with it.

    A trial restored by Tune (node lost, study resumed) continues its checkpoint and its MLflow run
    (run id from the checkpoint, else found by the ``trial_id`` tag); one whose run already
    finished (or that adopts a finished orphan, ``tracking.finished_trial``) reports that record
    to Tune and returns without training. A trial that raises is marked
    failed and the error re-raised, so Tune records it and the study goes on. ASHA-stopped trials stay
    "running" here; the driver marks them "stopped" once their Tuner returns.
    """
    from trainables.fit import fit, read_checkpoint_extra  # heavy; imported in the worker only

    context = tune.get_context()
    trial_id = context.get_trial_id()
    extra_tags = dict(study.tags)
    if isinstance(data, Mapping):
        config = dict(config)
        name = config.pop(DATASET_KEY)
        data, extra_tags[DATASET_KEY] = data[name], name
    cfg = trial_config(config, study, has_gpu=bool(ray.get_gpu_ids()))
    arm = get_arm(cfg.arm)
    node_id = ray.get_runtime_context().get_node_id()

    restore_dir, run_id = None, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restore_dir = checkpoint.to_directory(tempfile.mkdtemp(prefix="restore-"))
        run_id = read_checkpoint_extra(restore_dir).get("mlflow_run_id")
    # The trial trains at its data's image size: logged with its settings (the record's params).
    params = {**cfg.to_dict(), "image_size": data.image_size}
    finished = tracking.finished_trial(
        study.tracking,
        trial_id,
        run_id=run_id,
        stage=study.stage,
        arm=arm.name,
        params=params,
    )
    if finished is not None:
        # Tune lost this trial's end (driver killed) but MLflow holds its whole record: give Tune
        # that record as the final result instead of training, evaluating and logging again.
        if restore_dir is not None:
            shutil.rmtree(restore_dir, ignore_errors=True)
        print(
            f"[{arm.name} {trial_id}] already finished in MLflow run {finished[0]}: not run again",
            flush=True,
        )
        final = {**finished[1], EPOCH: float(cfg.epochs), DONE: 1.0}
        tune.report({**_finite_for_tune(final), "node_id": node_id})
        return
    run_id = tracking.trial_run(
        study.tracking,
        trial_id,
        run_id=run_id,
        tags={**trial_tags(arm.name, study.stage, arm.model_set, arm.generator), **extra_tags},
        params=params,
    )
    # A trial restarted from an older checkpoint than its last report (Tune had not recorded the
    # newest one: driver interrupted, node lost) re-runs epochs MLflow already holds. fit resumes
    # exactly (same batches and RNG draws), so those epochs are logged once, by the first attempt.
    logged = tracking.logged_epochs(study.tracking, run_id)
    out_dir = Path(context.get_trial_dir()).resolve() / "fit"

    def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        epoch = int(metrics[EPOCH])
        tune_metrics = {**_finite_for_tune(metrics), "node_id": node_id}
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        if metrics.get(DIVERGED):
            # fit reports a diverged run once, with done and a placeholder val/auc_mean of 0 for
            # Optuna; MLflow gets the status, not the placeholder.
            tracking.set_status(
                study.tracking,
                run_id,
                "diverged",
                f"non-finite training loss in epoch {epoch} (lr={cfg.lr:g})",
            )
            tune.report(tune_metrics, checkpoint=ckpt)
            return
        # MLflow first: tune.report blocks until Tune asks for the next epoch, and a trial that
        # Tune stops (ASHA, or done) never returns from it. Tune's reporting is synchronous, so
        # the trial cannot run ahead of what Tune has seen.
        if epoch not in logged:
            tracking.log_epoch(study.tracking, run_id, metrics, step=epoch)
            logged.add(epoch)
        if metrics.get(DONE):
            tracking.log_final(study.tracking, run_id, metrics, out_dir)
            tracking.set_status(study.tracking, run_id, "ok")
        tune.report(tune_metrics, checkpoint=ckpt)

    def log(message: str) -> None:
        print(f"[{arm.name} {trial_id}] {message}", flush=True)

    try:
        result = fit(
            cfg,
            data,
            out_dir,
            report=report,
            resume_from=restore_dir,
            checkpoint_extra={"mlflow_run_id": run_id},
            log=log,
        )
    except Exception as exc:
        named = _in_storage(exc, restore_dir, checkpoint)
        tracking.set_status(study.tracking, run_id, "failed", f"{type(named).__name__}: {named}")
        if named is not exc:
            raise named from None
        raise
    finally:
        if restore_dir is not None:
            shutil.rmtree(restore_dir, ignore_errors=True)
    if result.status == "diverged":  # reached when Tune let the function return after done
        tracking.set_status(study.tracking, run_id, "diverged", result.message)
