"""Checks ``run_study`` makes before anything starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.driver import run_study
from tests.study.conftest import tiny_study
from trainables import tracking


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
    uri = tracking.resolve_tracking_uri(cfg.tracking_uri, cfg.project_dir)
    exp = MlflowClient(uri).get_experiment_by_name(cfg.experiment)
    assert MlflowClient(uri).search_runs([exp.experiment_id]) == []
