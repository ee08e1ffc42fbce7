"""The parts of a study's life the driver owns besides running trials: its name (claimed once,
found again on ``--resume``), its Ray connection, and its MLflow parent run, opened with the
settings and data it was started with and refused on a resume that would change either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study.presets import StudyConfig
from study.tuner import experiment_root
from trainables.record import (
    STUDY_CONFIG,
    TAG_DATA_FINGERPRINT,
    TAG_KIND,
    TAG_PRESET,
    TAG_STUDY_NAME,
)
from trainables.record import writer as record
from trainables.record.store import TrackingContext, store

log = logging.getLogger(__name__)
TAG_SETTINGS = "settings_digest"  # parent tag: sha256 of what the study's trials are
CLAIM_FILE = ".study-claim"  # in a local storage folder: which process started the study


class StudyRefused(SystemExit):
    """A study that must not start or resume as asked; the message says why and what to pass."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def study_name(cfg: StudyConfig, experiment_id: str, prefix: str) -> str:
    """The study's name: given, or on ``--resume`` the newest study of the preset, or new
    (``<prefix>-<time>``).

    Raises:
        StudyRefused: ``--resume`` of a study this experiment does not have.
    """
    uri = str(cfg.tracking_uri)
    if cfg.resume and not cfg.study_name:
        found = record.study_runs(uri, experiment_id, preset=cfg.preset)
        if not found:
            raise StudyRefused(f"--resume: no study of preset {cfg.preset!r} in MLflow experiment {cfg.experiment!r}; pass --study-name")  # fmt: skip
        return found[0].data.tags[TAG_STUDY_NAME]
    if cfg.resume and not record.study_runs(uri, experiment_id, study_name=cfg.study_name):
        raise StudyRefused(
            f"--resume: no study named {cfg.study_name!r} in MLflow experiment {cfg.experiment!r} "
            f"({uri}); drop --resume to start it"
        )
    if (
        not cfg.resume
        and cfg.study_name
        and record.study_runs(uri, experiment_id, study_name=cfg.study_name)
    ):
        raise StudyRefused(f"study {cfg.study_name!r} already exists in MLflow experiment {cfg.experiment!r}: pass --resume to continue it, or another --study-name")  # fmt: skip
    return cfg.study_name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def claim_name(cfg: StudyConfig) -> None:
    """Claim a new study's name in its local storage folder (created exclusively), so that two
    processes starting the same name at once cannot both create a parent run; the loser is
    refused before it creates anything. Remote storage (s3://, gs://) has no exclusive create:
    there ``open_parent``'s check after creating the run decides.

    Raises:
        StudyRefused: another process holds the name.
    """
    root = experiment_root(cfg)
    if cfg.resume or "://" in root:
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    claim = Path(root) / CLAIM_FILE
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        held = claim.read_text(errors="replace").strip()
        raise StudyRefused(f"study {cfg.study_name!r} is already taken in {root} ({held}): pass --resume to continue it, or another --study-name") from None  # fmt: skip
    with os.fdopen(fd, "w") as f:
        f.write(f"pid {os.getpid()} on {socket.gethostname()} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")  # fmt: skip


def connect_ray(cfg: StudyConfig, init_options: Mapping[str, Any]) -> bool:
    """Start or join Ray; True when this call started it (and should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    # Workers import trainables/ and study/ from the project root, wherever the driver was started.
    path = os.pathsep.join(p for p in (cfg.project_dir, os.environ.get("PYTHONPATH")) if p)
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}, **init_options}
    if cfg.address is None:
        kwargs["include_dashboard"] = False
    # Without --address: a new local instance ("local"), not whatever cluster a `ray start` left
    # running on this machine (ray.init(None) would attach to it); --address auto joins one.
    ray.init(address=cfg.address or "local", **kwargs)
    return True


def digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[
        :32
    ]


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): json.dumps(value, default=str)}


def _check_same(ctx: TrackingContext, settings: Mapping[str, Any], fingerprint: str) -> None:
    """Refuse a resume whose settings or data differ from those the study started with."""
    s = store(ctx.tracking_uri)
    tags = s.run(ctx.parent_run_id).data.tags
    if tags.get(TAG_SETTINGS) not in (None, digest(settings)):
        before = _recorded_settings(ctx)
        now = _flat(settings)
        changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        shown = "; ".join(f"{k}: {before.get(k, 'unset')} then, {now.get(k, 'unset')} now" for k in changed[:5])  # fmt: skip
        raise StudyRefused(f"--resume: study {tags.get(TAG_STUDY_NAME)!r} was started with other settings ({shown or 'unknown fields'}); resume with the same settings, or start a new study")  # fmt: skip
    before_fp = tags.get(TAG_DATA_FINGERPRINT)
    if before_fp is not None and before_fp != fingerprint:
        raise StudyRefused(f"--resume: study {tags.get(TAG_STUDY_NAME)!r} trained on other data (data fingerprint {before_fp} then, {fingerprint} now): point it at the same data, or start a new study")  # fmt: skip


def _recorded_settings(ctx: TrackingContext) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store(ctx.tracking_uri).download(ctx.parent_run_id, STUDY_CONFIG, tmp)
        except FileNotFoundError:
            return {}
        return _flat(json.loads(path.read_text()).get("settings", {}))


def open_parent(
    cfg: StudyConfig, experiment_id: str, kind: str, settings: Mapping[str, Any], fingerprint: str
) -> TrackingContext:
    """Create the study's parent run, or reopen it on ``--resume`` after checking that the
    settings (``settings``: what the trials are) and the data (``fingerprint``) are the ones it
    started with.

    Raises:
        StudyRefused: a resume that would change the study, or a name another process took.
    """
    uri, name = str(cfg.tracking_uri), str(cfg.study_name)
    if cfg.resume:
        runs = record.study_runs(uri, experiment_id, study_name=name)
        ctx = TrackingContext(uri, experiment_id, runs[-1].info.run_id)  # the oldest: the study
        _check_same(ctx, settings, fingerprint)
        record.reopen_study_run(ctx)
        return ctx
    ctx = record.create_study_run(uri, experiment_id, study_name=name, tags={TAG_PRESET: cfg.preset, TAG_KIND: kind, TAG_SETTINGS: digest(settings)})  # fmt: skip
    others = record.study_runs(uri, experiment_id, study_name=name)
    if len(others) > 1 and others[-1].info.run_id != ctx.parent_run_id:
        record.delete_run(ctx, ctx.parent_run_id)  # another process created it first: not ours
        raise StudyRefused(f"study {name!r} was started by another process at the same time: pass --resume to continue it, or another --study-name")  # fmt: skip
    return ctx
