"""Checks the driver makes before anything starts (no data read, no Ray, no parent run)."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.driver import run_plan, run_study
from study.evidence import EvidencePlan
from study.plans import SearchPlan
from tests.study.conftest import tiny_study
from trainables.record.store import resolve_tracking_uri


def test_resume_of_an_unknown_study_is_refused_before_anything_starts(data_config, tmp_path):
    import ray

    cfg = dataclasses.replace(
        tiny_study(tmp_path, data_config), study_name="never-ran", resume=True
    )
    with pytest.raises(SystemExit, match="--resume: no study named 'never-ran'"):
        run_study(cfg)
    # It used to start a new study: no Ray, no Tune folder, no parent run.
    assert not ray.is_initialized()
    assert not Path(cfg.storage_root(), "never-ran").exists()
    uri = resolve_tracking_uri(cfg.tracking_uri, cfg.project_dir)
    exp = MlflowClient(uri).get_experiment_by_name(cfg.experiment)
    assert MlflowClient(uri).search_runs([exp.experiment_id]) == []


def test_an_unknown_encoder_is_refused_before_data_or_ray(data_config, tmp_path):
    import ray

    cfg = tiny_study(tmp_path, data_config)
    bad = dataclasses.replace(cfg, trial=dataclasses.replace(cfg.trial, encoder="tu-nope_model"))
    started = time.monotonic()
    with pytest.raises(ValueError, match="unknown encoder 'tu-nope_model'"):
        run_plan(EvidencePlan(arms_run=("no-seg",), seeds=(0,)), bad)
    assert time.monotonic() - started < 30 and not ray.is_initialized()
    assert not Path(cfg.storage_root()).exists()
    exp = MlflowClient(cfg.tracking_uri).get_experiment_by_name(cfg.experiment)
    assert exp is None or MlflowClient(cfg.tracking_uri).search_runs([exp.experiment_id]) == []


def test_an_unreachable_tracking_server_is_named_within_seconds(data_config, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = dataclasses.replace(tiny_study(tmp_path, data_config), tracking_uri=f"http://127.0.0.1:{port}")  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port} is not reachable"):
        run_plan(SearchPlan(), cfg)
    assert time.monotonic() - started < 10
