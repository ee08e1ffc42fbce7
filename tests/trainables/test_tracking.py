"""trainables.tracking against a real MLflow sqlite store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainables import tracking


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    # One sqlite store per module: creating MLflow's schema takes seconds.
    return tmp_path_factory.mktemp("project")


@pytest.fixture()
def store(project, request):
    """(tracking uri, a fresh experiment id, project dir)."""
    uri = tracking.resolve_tracking_uri(None, project)
    exp = tracking.get_or_create_experiment(uri, f"exp {request.node.name}")
    return uri, exp, project


def _study(store, name="s1", resume=False):
    uri, exp, _ = store
    return tracking.start_study_run(
        uri,
        exp,
        study_name=name,
        preset="demo",
        params={"preset": "demo", "arms": "unet,no-seg"},
        config={"trial": {"lr": 1e-3}},
        resume=resume,
    )


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    assert (
        tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    )
    monkeypatch.chdir(tmp_path)
    # Relative sqlite paths are pinned now: trials chdir into their own folders.
    assert (
        tracking.resolve_tracking_uri("sqlite:///rel/m.db", "/elsewhere")
        == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    )
    assert tracking.resolve_tracking_uri("http://head:5000", tmp_path) == "http://head:5000"
    for file_store in ("./mlruns", "file:///tmp/mlruns"):
        with pytest.raises(ValueError, match="sqlite"):
            tracking.resolve_tracking_uri(file_store, tmp_path)


def test_experiment_keeps_artifacts_in_the_project(store):
    uri, exp, project = store
    name = MlflowClient(uri).get_experiment(exp).name
    assert tracking.get_or_create_experiment(uri, name) == exp  # get, not create
    location = MlflowClient(uri).get_experiment(exp).artifact_location
    safe = "exp_test_experiment_keeps_artifacts_in_the_project"
    assert location == (project / "mlartifacts" / safe).resolve().as_uri()


def test_a_custom_sqlite_store_keeps_artifacts_beside_it(tmp_path):
    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere' / 'm.db'}", "/project")
    exp = tracking.get_or_create_experiment(uri, "e")
    location = MlflowClient(uri).get_experiment(exp).artifact_location
    assert location == (tmp_path / "elsewhere" / "mlartifacts" / "e").resolve().as_uri()


def test_study_run_records_settings_and_reopens_on_resume(store):
    uri, exp, _ = store
    ctx = _study(store)
    run = MlflowClient(uri).get_run(ctx.parent_run_id)
    assert run.data.tags["role"] == "study" and run.data.tags["study_name"] == "s1"
    assert run.data.tags["preset"] == "demo" and run.data.params["arms"] == "unet,no-seg"
    path = MlflowClient(uri).download_artifacts(ctx.parent_run_id, "study/config.json")
    assert json.loads(Path(path).read_text()) == {"trial": {"lr": 1e-3}}
    tracking.end_study_run(ctx, "KILLED")
    again = _study(store, resume=True)
    assert again == ctx
    assert MlflowClient(uri).get_run(ctx.parent_run_id).info.status == "RUNNING"
    assert tracking.find_study_run(uri, exp, preset="demo") == (ctx.parent_run_id, "s1")
    assert _study(store, name="s2").parent_run_id != ctx.parent_run_id


def test_one_child_run_per_trial_id(store):
    uri, _, _ = store
    ctx = _study(store)
    tags = {"arm": "set3-gbp", "model_set": "set3", "generator": "gbp", "stage": "search"}
    run_id = tracking.trial_run(
        ctx, "abc_00001", run_id=None, tags=tags, params={"lr": 0.01, "encoder_weights": None}
    )
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == ctx.parent_run_id
    assert run.data.tags["role"] == "trial" and run.data.tags["trial_id"] == "abc_00001"
    assert run.data.tags["status"] == "running" and run.data.tags["arm"] == "set3-gbp"
    assert run.data.params == {"lr": "0.01", "encoder_weights": "None"}
    tracking.set_status(ctx, run_id, "failed", "RuntimeError: boom")
    # A restart before the first checkpoint has no run id: found again by its trial_id tag.
    assert (
        tracking.trial_run(ctx, "abc_00001", run_id=None, tags=tags, params={"lr": 0.01}) == run_id
    )
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["status"] == "running" and run.data.tags["error"] == ""
    assert run.info.status == "RUNNING"
    # A run id from a checkpoint that this store does not know (study logged elsewhere): by tag.
    assert tracking.trial_run(ctx, "abc_00001", run_id="0" * 32, tags=tags, params={}) == run_id
    # Another study (parent) with the same Tune trial id gets its own run.
    other = _study(store, name="s2")
    assert tracking.trial_run(other, "abc_00001", run_id=None, tags=tags, params={}) != run_id
    assert [r.run_id for r in tracking.trial_records(ctx)] == [run_id]


def test_metrics_per_epoch_and_final(store, tmp_path):
    uri, _, _ = store
    ctx = _study(store)
    run_id = tracking.trial_run(
        ctx, "t1", run_id=None, tags={"arm": "unet", "stage": "search"}, params={}
    )
    for epoch in (1, 2):
        tracking.log_epoch(
            ctx,
            run_id,
            {
                "epoch": float(epoch),
                "train/loss": 1.0 / epoch,
                "val/auc_mean": 0.5 + epoch / 10,
                "val/loss": math.nan,
                "time/epoch_s": 3.0,
                "done": 1.0,
            },
            step=epoch,
        )
    client = MlflowClient(uri)
    history = client.get_metric_history(run_id, "val/auc_mean")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.6), (2, 0.7)]
    run = client.get_run(run_id)
    # Only train/ and val/ values, and only finite ones.
    assert set(run.data.metrics) == {"train/loss", "val/auc_mean"}

    out = tmp_path / "fit"
    for sub, name in [
        ("predictions", "test.csv"),
        ("heatmaps", "maps.npz"),
        ("model", "model.pt"),
        ("checkpoint", "state.pt"),
    ]:
        (out / sub).mkdir(parents=True)
        (out / sub / name).write_text("x")
    (out / "summary.json").write_text("{}")
    tracking.log_final(
        ctx,
        run_id,
        {
            "best/val_auc_mean": 0.7,
            "test/auc_mean": 0.8,
            "test/auc_mean_ci_low": math.inf,
            "val/auc_mean": 0.1,
        },
        out,
    )
    metrics = client.get_run(run_id).data.metrics
    assert metrics["best/val_auc_mean"] == 0.7 and metrics["test/auc_mean"] == 0.8
    assert "test/auc_mean_ci_low" not in metrics and metrics["val/auc_mean"] == 0.7
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "heatmaps",
        "model",
        "predictions",
    ]
    assert [a.path for a in client.list_artifacts(run_id, "predictions")] == [
        "predictions/test.csv"
    ]


@pytest.mark.parametrize(
    ("status", "mlflow_status"),
    [("ok", "FINISHED"), ("stopped", "KILLED"), ("diverged", "FAILED"), ("failed", "FAILED")],
)
def test_status_tags_and_run_lifecycle(store, status, mlflow_status):
    uri, _, _ = store
    ctx = _study(store)
    run_id = tracking.trial_run(ctx, "t1", run_id=None, tags={"stage": "seeds"}, params={})
    tracking.set_status(ctx, run_id, status, "why" if status in ("failed", "diverged") else None)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["status"] == status and run.info.status == mlflow_status
    (record,) = tracking.trial_records(ctx, stage="seeds")
    assert record.status == status and record.trial_id == "t1"
    assert tracking.trial_records(ctx, stage="search") == []
    with pytest.raises(ValueError, match="running"):
        tracking.set_status(ctx, run_id, "exploded")


@pytest.mark.parametrize("name", ["o'neil's study", 'the "big" one', "x' or tags.role = 'study"])
def test_quotes_in_names_neither_break_nor_widen_the_filters(store, name):
    uri, exp, _ = store
    other = _study(store, name="plain")
    ctx = _study(store, name=name)
    assert tracking.find_study_run(uri, exp, study_name=name) == (ctx.parent_run_id, name)
    assert _study(store, name=name, resume=True) == ctx  # reopened, not a second parent
    run_id = tracking.trial_run(ctx, "t'1", run_id=None, tags={"stage": "search"}, params={})
    assert tracking.find_trial_run(ctx, "t'1") == run_id
    assert [r.run_id for r in tracking.trial_records(ctx, stage="search")] == [run_id]
    assert tracking.trial_records(other) == []


def test_a_value_with_both_quote_kinds_is_refused_by_name(store):
    uri, exp, _ = store
    with pytest.raises(ValueError, match=r"study_name .*study.* holds both ' and \""):
        tracking.find_study_run(uri, exp, study_name="""it's a "study\"""")
