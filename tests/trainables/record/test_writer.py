"""The record's writer and store (``trainables.record``) against a real MLflow sqlite store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from trainables.record import writer
from trainables.record.store import TrackingContext, resolve_tracking_uri
from trainables.record.store import store as open_store


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    # One sqlite store per module: creating MLflow's schema takes seconds.
    return tmp_path_factory.mktemp("project")


@pytest.fixture()
def store(project, request):
    """(tracking uri, a fresh experiment id, project dir)."""
    uri = resolve_tracking_uri(None, project)
    exp = writer.get_or_create_experiment(uri, f"exp {request.node.name}")
    return uri, exp, project


def _study(store, name="s1", resume=False):
    """A study's parent run as the driver opens it (``study.lifecycle.open_parent``)."""
    uri, exp, _ = store
    if resume:
        ctx = TrackingContext(
            uri, exp, writer.study_runs(uri, exp, study_name=name)[-1].info.run_id
        )
        writer.reopen_study_run(ctx)
        return ctx
    ctx = writer.create_study_run(uri, exp, study_name=name, tags={"preset": "demo"})
    writer.log_study_settings(
        ctx, {"preset": "demo", "arms": "unet,no-seg"}, {"trial": {"lr": 1e-3}}
    )
    return ctx


def _found(uri, exp, **filters):
    runs = writer.study_runs(uri, exp, **filters)
    return (runs[0].info.run_id, runs[0].data.tags["study_name"]) if runs else None


def _trials(ctx, **kw):
    return open_store(ctx.tracking_uri).trials(ctx, artifacts=False, **kw)


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    # $MLFLOW_TRACKING_URI stands in for a missing URI (as for MLflow and analysis/), under the
    # same rules; a given URI still wins.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://tracker:5000"
    assert resolve_tracking_uri("http://head:5000", tmp_path) == "http://head:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    with pytest.raises(ValueError, match="sqlite"):
        resolve_tracking_uri(None, tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    # Relative sqlite paths are pinned now: trials chdir into their own folders.
    assert (
        resolve_tracking_uri("sqlite:///rel/m.db", "/elsewhere")
        == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    )
    assert resolve_tracking_uri("http://head:5000", tmp_path) == "http://head:5000"
    for file_store in ("./mlruns", "file:///tmp/mlruns"):
        with pytest.raises(ValueError, match="sqlite"):
            resolve_tracking_uri(file_store, tmp_path)


def test_experiment_keeps_artifacts_in_the_project(store):
    uri, exp, project = store
    name = MlflowClient(uri).get_experiment(exp).name
    assert writer.get_or_create_experiment(uri, name) == exp  # get, not create
    location = MlflowClient(uri).get_experiment(exp).artifact_location
    safe = "exp_test_experiment_keeps_artifacts_in_the_project"
    assert location == (project / "mlartifacts" / safe).resolve().as_uri()


def test_a_custom_sqlite_store_keeps_artifacts_beside_it(tmp_path):
    uri = resolve_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere' / 'm.db'}", "/project")
    exp = writer.get_or_create_experiment(uri, "e")
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
    writer.end_study_run(ctx, "KILLED")
    again = _study(store, resume=True)
    assert again == ctx
    assert MlflowClient(uri).get_run(ctx.parent_run_id).info.status == "RUNNING"
    assert _found(uri, exp, preset="demo") == (ctx.parent_run_id, "s1")
    assert _study(store, name="s2").parent_run_id != ctx.parent_run_id


def test_one_child_run_per_trial_id(store):
    uri, _, _ = store
    ctx = _study(store)
    tags = {"arm": "set3-gbp", "model_set": "set3", "generator": "gbp", "stage": "search"}
    run_id = writer.trial_run(
        ctx, "abc_00001", run_id=None, tags=tags, params={"lr": 0.01, "encoder_weights": None}
    )
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == ctx.parent_run_id
    assert run.data.tags["role"] == "trial" and run.data.tags["trial_id"] == "abc_00001"
    assert run.data.tags["status"] == "running" and run.data.tags["arm"] == "set3-gbp"
    assert run.data.params == {"lr": "0.01", "encoder_weights": "None"}
    writer.set_status(ctx, run_id, "failed", "RuntimeError: boom")
    # A restart before the first checkpoint has no run id: found again by its trial_id tag.
    assert writer.trial_run(ctx, "abc_00001", run_id=None, tags=tags, params={"lr": 0.01}) == run_id
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["status"] == "running" and "error" not in run.data.tags
    assert run.info.status == "RUNNING"
    # A run id from a checkpoint that this store does not know (study logged elsewhere): by tag.
    assert writer.trial_run(ctx, "abc_00001", run_id="0" * 32, tags=tags, params={}) == run_id
    # Another study (parent) with the same Tune trial id gets its own run.
    other = _study(store, name="s2")
    assert writer.trial_run(other, "abc_00001", run_id=None, tags=tags, params={}) != run_id
    assert [r.run_id for r in _trials(ctx)] == [run_id]


def test_metrics_per_epoch_and_final(store, tmp_path):
    uri, _, _ = store
    ctx = _study(store)
    run_id = writer.trial_run(
        ctx, "t1", run_id=None, tags={"arm": "unet", "stage": "search"}, params={}
    )
    for epoch in (1, 2):
        writer.log_epoch(
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
    writer.log_final(
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
    # ASHA's early stop is a normal end: FINISHED (the MLflow UI draws KILLED as a failure).
    [("ok", "FINISHED"), ("stopped", "FINISHED"), ("diverged", "FAILED"), ("failed", "FAILED")],
)
def test_status_tags_and_run_lifecycle(store, status, mlflow_status):
    uri, _, _ = store
    ctx = _study(store)
    run_id = writer.trial_run(ctx, "t1", run_id=None, tags={"stage": "seeds"}, params={})
    writer.set_status(ctx, run_id, status, "why" if status in ("failed", "diverged") else None)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["status"] == status and run.info.status == mlflow_status
    (record,) = _trials(ctx, stage="seeds")
    assert record.status == status and record.trial_id == "t1"
    assert _trials(ctx, stage="search") == []
    with pytest.raises(ValueError, match="running"):
        writer.set_status(ctx, run_id, "exploded")


@pytest.mark.parametrize("name", ["o'neil's study", 'the "big" one', "x' or tags.role = 'study"])
def test_quotes_in_names_neither_break_nor_widen_the_filters(store, name):
    uri, exp, _ = store
    other = _study(store, name="plain")
    ctx = _study(store, name=name)
    assert _found(uri, exp, study_name=name) == (ctx.parent_run_id, name)
    assert _study(store, name=name, resume=True) == ctx  # reopened, not a second parent
    run_id = writer.trial_run(ctx, "t'1", run_id=None, tags={"stage": "search"}, params={})
    assert writer.find_trial_run(ctx, "t'1") == run_id
    assert [r.run_id for r in _trials(ctx, stage="search")] == [run_id]
    assert _trials(other) == []


def test_a_value_with_both_quote_kinds_is_refused_by_name(store):
    uri, exp, _ = store
    with pytest.raises(ValueError, match=r"study_name .*study.* holds both ' and \""):
        _found(uri, exp, study_name="""it's a "study\"""")


FINAL = {"best/val_auc_mean": 0.7, "best/epoch": 2.0, "test/auc_mean": 0.8}


def test_the_final_record_is_logged_once_when_a_restarted_trial_logs_it_again(store, tmp_path):
    uri, _, _ = store
    ctx = _study(store)
    run_id = writer.trial_run(ctx, "t1", run_id=None, tags={"stage": "search"}, params={})
    writer.log_final(ctx, run_id, FINAL, None)
    writer.log_final(ctx, run_id, {**FINAL, "test/auc_normal": 0.9}, None)  # the re-run
    client = MlflowClient(uri)
    for key, value in {**FINAL, "test/auc_normal": 0.9}.items():
        assert [m.value for m in client.get_metric_history(run_id, key)] == [value], key


def _trial(ctx, trial_id, lr, stage="search", arm="unet"):
    return writer.trial_run(
        ctx,
        trial_id,
        run_id=None,
        tags={"arm": arm, "stage": stage},
        params={"arm": arm, "lr": lr, "device": "cpu", "num_threads": 1},
    )


def test_a_finished_trial_gives_its_record_instead_of_running_again(store):
    ctx = _study(store)
    run_id = _trial(ctx, "t1", 0.01)
    args = {"stage": "search", "arm": "unet", "params": {"arm": "unet", "lr": 0.01}}
    assert writer.finished_trial(ctx, "t1", run_id=None, **args) is None  # still running
    writer.log_final(ctx, run_id, FINAL, None)
    writer.set_status(ctx, run_id, "ok")
    for saved in (None, run_id):  # found by trial_id tag, or by the checkpoint's run id
        found, metrics = writer.finished_trial(ctx, "t1", run_id=saved, **args)
        assert found == run_id and metrics["test/auc_mean"] == 0.8
    assert writer.finished_trial(ctx, "t2", run_id=None, **args) is None  # another trial


def test_orphaned_runs_are_closed_left_out_and_a_finished_one_adopted_once(store):
    uri, _, _ = store
    ctx = _study(store)
    done, partial = _trial(ctx, "lost1", 0.01), _trial(ctx, "lost2", 0.02)
    writer.log_final(ctx, done, FINAL, None)
    writer.set_status(ctx, done, "ok")
    records = {r.run_id: r for r in _trials(ctx)}
    for run_id in (done, partial):
        writer.mark_orphaned(ctx, records[run_id], "no Tune trial")
    client = MlflowClient(uri)
    assert _trials(ctx) == []  # not counted
    orphans = {r.run_id: r for r in _trials(ctx, include_orphaned=True)}
    assert {r.status for r in orphans.values()} == {"orphaned"}
    for run_id, before in ((done, "ok"), (partial, "running")):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.data.tags["orphaned_from"] == before
        assert run.data.tags["error"] == "no Tune trial"

    def adopt(trial_id, lr, stage="search", arm="unet", device="cuda"):
        params = {"arm": arm, "lr": lr, "device": device, "num_threads": 4}
        return writer.finished_trial(
            ctx, trial_id, run_id=None, stage=stage, arm=arm, params=params
        )

    # The same configuration, suggested again under a new trial id, takes the finished orphan
    # (where it runs does not matter); other configs, stages, arms and the unfinished one do not.
    assert adopt("new0", 0.03) is None and adopt("new0", 0.02) is None
    assert adopt("new0", 0.01, stage="seeds") is None and adopt("new0", 0.01, arm="no-seg") is None
    run_id, metrics = adopt("new1", 0.01)
    assert run_id == done and metrics["best/val_auc_mean"] == 0.7
    run = client.get_run(done)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    assert run.data.tags["trial_id"] == "new1" and run.data.tags["adopted_from_trial"] == "lost1"
    assert [r.trial_id for r in _trials(ctx)] == ["new1"]
    assert adopt("new2", 0.01) is None  # adopted once


def test_an_orphaned_run_whose_trial_comes_back_is_its_run_again(store):
    """Grid trials that Tune lost come back with their old ids (the generator's state is saved)."""
    uri, _, _ = store
    ctx = _study(store)
    done, partial = _trial(ctx, "g_00000", 0.01), _trial(ctx, "g_00001", 0.02)
    writer.log_final(ctx, done, FINAL, None)
    writer.set_status(ctx, done, "ok")
    for record in _trials(ctx):
        writer.mark_orphaned(ctx, record, "no Tune trial")
    params = {"arm": "unet", "lr": 0.01}
    found = writer.finished_trial(
        ctx, "g_00000", run_id=None, stage="search", arm="unet", params=params
    )
    assert found is not None and found[0] == done
    assert (
        writer.finished_trial(
            ctx, "g_00001", run_id=None, stage="search", arm="unet", params={**params, "lr": 0.02}
        )
        is None
    )
    assert _trial(ctx, "g_00001", 0.02) == partial  # reopened to continue, not a second run
    client = MlflowClient(uri)
    for run_id, status, lifecycle in ((done, "ok", "FINISHED"), (partial, "running", "RUNNING")):
        run = client.get_run(run_id)
        assert run.data.tags["status"] == status and run.info.status == lifecycle
        assert "orphaned_from" not in run.data.tags and "error" not in run.data.tags
    assert len(_trials(ctx)) == 2


def _open_new_store(uri: str, name: str, barrier) -> None:
    barrier.wait()  # every process imported MLflow: they open the new store at the same moment
    writer.get_or_create_experiment(uri, name)  # an error: traceback on stderr, exit code 1


@pytest.mark.slow
def test_studies_starting_on_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    """MLflow creates a new sqlite store's schema without a lock; studies opening it at once
    collided (table exists, duplicate column, CircularDependencyError) and one died."""
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    barrier = mp.Barrier(3)
    procs = [mp.Process(target=_open_new_store, args=(uri, f"s{i}", barrier)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {"s0", "s1", "s2"} <= names
