"""The Ray Tune function trainable: one trial = one ``trainables.fit.train`` run, logged to MLflow.

Ray stays at this edge: ``train`` is plain PyTorch yielding typed events (``EpochEnd``,
``Finished``, ``Diverged``), which are bridged here to ``ray.tune.report`` (with a ``Checkpoint``)
and to the trial's MLflow run (``trainables.record.writer``).

Use it as ``tune.with_resources(tune.with_parameters(train_trial, data=cached, study=ctx),
{"cpu": n, "gpu": f})``: the dataset travels through Ray's object store, not through the config.
A trial's Tune config is a ``TrialConfig``'s fields, plus ``DATASET_KEY`` (which of several
datasets it trains on) and ``TAG_PREFIX``-ed keys (extra tags of its run, flat: Tune's variant
generator cannot pin a dict value per trial) for the grid plans.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables import checkpoint
from trainables.config import Placement, TrialConfig
from trainables.data.cached import CachedData
from trainables.model_sets import get_arm, unused_hyperparams
from trainables.record import EPOCH, SEARCH_METRIC, Stage, Status, trial_tags
from trainables.record import writer as record
from trainables.record.store import TrackingContext

_TRIAL_FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}
DATASET_KEY = "dataset"  # config key naming the dataset when a trial is given several
TAG_PREFIX = "tag_"  # config keys "tag_<name>": extra tags of the trial's run (e.g. the twin)


def extra_tags(config: Mapping[str, Any]) -> dict[str, str]:
    """The run tags a trial's config carries (``tag_twin: clean`` -> ``twin: clean``)."""
    return {k[len(TAG_PREFIX) :]: str(v) for k, v in config.items() if k.startswith(TAG_PREFIX)}


TUNE_DIVERGED = "diverged"  # the one flag Tune's results carry: 1.0 on a diverged trial's report


@dataclass(frozen=True)
class StudyContext:
    """What every trial of one Tune experiment shares besides the data (picklable, no Ray)."""

    tracking: TrackingContext  # the study's MLflow parent run
    stage: Stage = Stage.SEARCH
    cpus_per_trial: float = 1.0  # sets torch's CPU threads unless the placement does
    placement: Placement = field(default_factory=Placement)  # --set placement.* overrides
    search_metric: str = SEARCH_METRIC  # what Tune optimises: every report carries it

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))  # ValueError for an unknown stage


def trial_config(config: Mapping[str, Any]) -> TrialConfig:
    """The trial's TrialConfig from Tune's config (search values + fixed settings).

    Raises:
        KeyError: the config names a field TrialConfig does not have.
    """
    unknown = {k for k in config if not k.startswith(TAG_PREFIX)} - _TRIAL_FIELDS - {DATASET_KEY}
    if unknown:
        raise KeyError(
            f"trial config has unknown keys {sorted(unknown)}; TrialConfig fields: "
            f"{sorted(_TRIAL_FIELDS)}"
        )
    return TrialConfig(**{k: v for k, v in config.items() if k in _TRIAL_FIELDS})


def run_params(cfg: TrialConfig, image_size: int) -> dict[str, Any]:
    """The trial's MLflow params: its resolved config at its data's image size, less the loss
    hyperparameters its arm never reads (no-seg has no gamma: a value there would read as used).
    The checkpoint and ``model.pt`` keep the whole config."""
    unused = set(unused_hyperparams(cfg.arm))
    return {**{k: v for k, v in cfg.to_dict().items() if k not in unused}, "image_size": image_size}


def placement_for(study: StudyContext, *, has_gpu: bool) -> Placement:
    """Where the trial runs: the study's placement where it sets one, else its Ray resources."""
    device = study.placement.device or ("cuda" if has_gpu and torch.cuda.is_available() else "cpu")
    threads = study.placement.num_threads or max(1, int(study.cpus_per_trial))
    return Placement(device=device, num_threads=threads)


def _finite_for_tune(metrics: dict[str, Any], search_metric: str = SEARCH_METRIC) -> dict[str, Any]:
    """What Tune sees of a report: finite values, and the search metric always (Tune refuses a
    result without it). An undefined search metric stays NaN: ASHA's rung cutoffs skip NaN, and
    the study's searcher tells Optuna the trial failed."""
    out = {k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}
    out.setdefault(search_metric, float(metrics.get(search_metric, math.nan)))
    return out


def _restore() -> tuple[tuple[str, str] | None, str | None]:
    """The checkpoint Tune restored this trial from, as a local copy and its storage path, and the
    MLflow run id it holds."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None, None
    local = ckpt.to_directory(tempfile.mkdtemp(prefix="restore-"))
    fs = ckpt.filesystem.type_name  # errors name the checkpoint where it lies, not the local copy
    where = str(ckpt.path) if fs == "local" else f"{fs}://{ckpt.path}"
    return (local, where), checkpoint.read_extra(local).get("mlflow_run_id")


def train_trial(
    config: dict[str, Any], data: CachedData | Mapping[str, CachedData], study: StudyContext
) -> None:
    """Run one trial: restore, train with per-epoch reports, log everything to one MLflow run.

    A trial restored by Tune (node lost, study resumed) continues its checkpoint and its MLflow run
    (run id from the checkpoint, else found by the ``trial_id`` tag); one whose run already
    finished (or that adopts a finished orphan, ``writer.finished_trial``) reports that record to
    Tune and returns without training. A trial that raises is marked failed and the error
    re-raised, so Tune records it and the study goes on. ASHA-stopped trials stay "running" here;
    the driver marks them "stopped" once their experiment returns.
    """
    from trainables.fit import Diverged, Finished, train  # heavy; imported in the worker only

    context = tune.get_context()
    trial_id = context.get_trial_id()
    tags_of_config = extra_tags(config)
    if isinstance(data, Mapping):
        data = data[config[DATASET_KEY]]
    cfg = trial_config(config)
    arm = get_arm(cfg.arm)
    node_id = ray.get_runtime_context().get_node_id()
    restore, run_id = _restore()
    params = run_params(cfg, data.image_size)
    try:
        done = record.finished_trial(study.tracking, trial_id, run_id=run_id, stage=study.stage, arm=arm.name, params=params)  # fmt: skip
        if done is not None:
            # Tune lost this trial's end (driver killed) but MLflow holds its whole record: give
            # Tune that record as the final result instead of training, evaluating, logging again.
            print(f"[{arm.name} {trial_id}] already finished in MLflow run {done[0]}: not run again", flush=True)  # fmt: skip
            tune.report({**_finite_for_tune({**done[1], EPOCH: float(cfg.epochs)}, study.search_metric), "node_id": node_id})  # fmt: skip
            return
        tags = {**trial_tags(arm.name, study.stage, arm.model_set, arm.generator), **tags_of_config}
        run_id = record.trial_run(study.tracking, trial_id, run_id=run_id, tags=tags, params=params)
        # A trial restarted from an older checkpoint than its last report re-runs epochs MLflow
        # already holds; train resumes exactly, so those epochs are logged once, by the first.
        logged = record.logged_epochs(study.tracking, run_id)
        out_dir = Path(context.get_trial_dir()).resolve() / "fit"
        placement = placement_for(study, has_gpu=bool(ray.get_gpu_ids()))

        def log(message: str) -> None:
            print(f"[{arm.name} {trial_id}] {message}", flush=True)

        for event in train(cfg, data, out_dir, placement=placement, resume_from=restore, log=log):
            if isinstance(event, Diverged):
                record.set_status(study.tracking, run_id, Status.DIVERGED, event.message)
                tune.report({EPOCH: float(event.epoch), study.search_metric: math.nan, TUNE_DIVERGED: 1.0, "node_id": node_id})  # fmt: skip
                return
            # MLflow first: tune.report blocks until Tune asks for the next epoch, and a trial
            # that Tune stops (ASHA, or done) never returns from it.
            if event.epoch not in logged:
                record.log_epoch(study.tracking, run_id, event.metrics, step=event.epoch)
                logged.add(event.epoch)
            metrics = {EPOCH: float(event.epoch), **event.metrics}
            if isinstance(event, Finished):
                record.log_final(study.tracking, run_id, event.final, event.out_dir)
                record.set_status(study.tracking, run_id, Status.OK)
                metrics.update(event.final)
            checkpoint.write_extra(event.checkpoint, {"mlflow_run_id": run_id})
            ckpt = tune.Checkpoint.from_directory(str(event.checkpoint))
            tune.report(
                {**_finite_for_tune(metrics, study.search_metric), "node_id": node_id},
                checkpoint=ckpt,
            )
    except Exception as exc:
        if run_id is not None:
            record.set_status(study.tracking, run_id, Status.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if restore is not None:
            shutil.rmtree(restore[0], ignore_errors=True)
