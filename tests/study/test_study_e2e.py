"""A small study end to end on a local Ray instance: two arms, Optuna + ASHA, the MLflow record."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.console import per_arm_table
from study.driver import run_study
from tests.study.conftest import tiny_study, trials_of
from tests.tiny import egd_task
from trainables.checkpoint import read_extra as read_checkpoint_extra
from trainables.config import TrialConfig
from trainables.model_sets import get_arm, unused_hyperparams
from trainables.record import arm_metric

pytestmark = pytest.mark.slow

ARMS = ("no-seg", "set3-gbp")
TRIALS = 2
PRED_COLUMNS = ["key", "split", "label", "label_name", "prob_normal", "prob_chf", "prob_pneumonia"]
EXPLAIN_COLUMNS = ["key", "label", "map", "generator", "cc", "kl", "nss", "auc_judd"]
AUC_KEYS = ("auc_mean", "auc_normal", "auc_chf", "auc_pneumonia")


@pytest.fixture(scope="module")
def study(ray_local, tiny_data, data_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    cfg = tiny_study(
        tmp,
        data_config,
        arms=ARMS,
        trials_per_arm=TRIALS,
        max_concurrent=2,
        search_space="demo",
        report=True,
        seeds=1,
    )
    summary = run_study(cfg)
    return cfg, summary, MlflowClient(summary.tracking.tracking_uri)


def _children(summary, client, stage="search"):
    return client.search_runs(
        [summary.tracking.experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.tracking.parent_run_id}' "
        f"and tags.stage = '{stage}'",
    )


def test_parent_run(study):
    cfg, summary, client = study
    assert not summary.interrupted
    parent = client.get_run(summary.tracking.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["role"] == "study" and parent.data.tags["study_name"] == "test-study"
    assert parent.data.tags["preset"] == "smoke"
    p = parent.data.params
    assert p["arms"] == ",".join(ARMS) and p["trials_per_arm"] == str(TRIALS)
    assert (p["epochs"], p["image_size"], p["encoder"]) == ("2", "32", cfg.trial.encoder)
    assert (
        p["search_space"] == "demo"
        and "lr:" in p["space/set3-gbp"]
        and "seg_ratio" in p["space/set3-gbp"]
    )
    config = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "study/config.json")).read_text()
    )
    assert config["trial"]["epochs"] == 2 and config["arms"] == list(ARMS)


def test_one_child_run_per_trial_with_the_documented_tags_and_params(study):
    _cfg, summary, client = study
    runs = _children(summary, client)
    assert len(runs) == len(ARMS) * TRIALS
    assert len({r.data.tags["trial_id"] for r in runs}) == len(runs)
    for run in runs:
        tags, params = run.data.tags, run.data.params
        arm = get_arm(tags["arm"])
        assert tags["role"] == "trial" and tags["stage"] == "search"
        assert (tags["model_set"], tags["generator"]) == (arm.model_set, arm.generator)
        assert tags["status"] in ("ok", "stopped")
        # Every config field, less the loss hyperparameters the arm never reads.
        unused = set(unused_hyperparams(arm.name))
        assert set(TrialConfig().to_dict()) - unused <= set(params) and not unused & set(params)
        assert params["epochs"] == "2" and params["image_size"] == "32"
        assert "device" not in params and "num_threads" not in params  # placement: not a param
    for arm in ARMS:
        mine = [r for r in runs if r.data.tags["arm"] == arm]
        # The baseline point is enqueued first; Optuna then samples inside the demo ranges.
        baseline = [r for r in mine if float(r.data.params["lr"]) == 1e-3]
        assert baseline, f"{arm}: no trial ran the baseline point"
        if arm == "set3-gbp":
            assert float(baseline[0].data.params["gamma"]) == 0.41731
        else:  # no-seg has no segmentation loss: no gamma (nor seg_ratio) to show
            assert "gamma" not in baseline[0].data.params
        assert any(r.data.tags["status"] == "ok" for r in mine)


def test_each_checkpoint_carries_its_trials_mlflow_run_id(study):
    _cfg, summary, _client = study
    runs = {r.trial_id: r.run_id for r in trials_of(summary.tracking)}
    checked = 0
    for outcome in summary.outcomes.values():
        for result in outcome.results:
            assert isinstance(result.metrics["node_id"], str) and result.metrics["node_id"]
            with result.checkpoint.as_directory() as d:
                extra = read_checkpoint_extra(d)
            assert extra == {"mlflow_run_id": runs[result.metrics["trial_id"]]}
            checked += 1
    assert checked == len(runs)  # every trial, search and seeds stage


def test_seeds_stage_reruns_each_arms_best_config_with_another_seed(study):
    cfg, summary, client = study
    search = _children(summary, client)
    for arm in ARMS:
        finished = [
            r for r in search if r.data.tags["arm"] == arm and r.data.tags["status"] == "ok"
        ]
        top = max(r.data.metrics["best/val_auc_mean"] for r in finished)
        names = ("lr", "gamma", "seg_ratio", "epochs", "encoder")
        best = [
            {k: r.data.params.get(k) for k in names}
            for r in finished
            if r.data.metrics["best/val_auc_mean"] == top
        ]  # ties: any of them
        (seeded,) = [r for r in _children(summary, client, "seeds") if r.data.tags["arm"] == arm]
        assert seeded.data.tags["status"] == "ok" and "test/auc_mean" in seeded.data.metrics
        assert seeded.data.params["seed"] == str(cfg.seed + 1)
        assert {k: seeded.data.params.get(k) for k in names} in best
    assert "seeds" in per_arm_table(summary.records, ARMS, egd_task())


def test_metrics_per_epoch_and_at_the_end(study):
    _, summary, client = study
    for run in _children(summary, client):
        arm = get_arm(run.data.tags["arm"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/auc_mean")]
        metrics = run.data.metrics
        if run.data.tags["status"] == "stopped":  # ASHA (grace 1): stopped after epoch 1 of 2
            assert run.info.status == "FINISHED" and steps == [1]  # not drawn as a failure
            assert not any(k.startswith(("test/", "best/")) for k in metrics)
            continue
        assert run.info.status == "FINISHED" and steps == [1, 2]
        for key in ("train/loss", "val/loss", *[f"val/{k}" for k in AUC_KEYS]):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
        assert 1 <= metrics["best/epoch"] <= 2 and 0 <= metrics["best/val_auc_mean"] <= 1
        for k in AUC_KEYS:
            assert metrics[f"test/{k}_ci_low"] <= metrics[f"test/{k}_ci_high"]
            assert 0 <= metrics[f"test/{k}"] <= 1
        for m in ("cc", "kl", "nss", "auc_judd"):
            assert f"test/explain/generator_{m}" in metrics
            assert (f"test/explain/decoder_{m}" in metrics) == arm.uses_decoder


def test_artifacts_of_finished_trials(study, tiny_data, tmp_path):
    _, summary, client = study
    test_keys = sorted(tiny_data.keys[i] for i in tiny_data.indices("test"))
    panel_keys = None
    for run in _children(summary, client):
        if run.data.tags["status"] != "ok":
            continue
        rid = run.info.run_id
        local = Path(client.download_artifacts(rid, "", str(tmp_path / rid)))
        pred = pd.read_csv(local / "predictions" / "test.csv")
        assert list(pred.columns) == PRED_COLUMNS
        assert pred["key"].tolist() == test_keys  # one row per test image, sorted by key
        probs = pred[["prob_normal", "prob_chf", "prob_pneumonia"]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        explain = pd.read_csv(local / "explain" / "test.csv")
        assert list(explain.columns) == EXPLAIN_COLUMNS
        maps = np.load(local / "heatmaps" / "maps.npz")
        keys = [str(k) for k in maps["keys"]]
        panel_keys = panel_keys or keys
        assert keys == panel_keys  # the same panel images in every trial
        assert sorted(p.stem for p in (local / "heatmaps").glob("*.png")) == sorted(keys)
        assert (local / "model" / "model.pt").stat().st_size > 0


def test_no_patient_identifiers_anywhere(study, tiny_data, tmp_path):
    _, summary, client = study
    patients = sorted(set(tiny_data.patients))
    pattern = re.compile("(?<![0-9A-Za-z])p?(" + "|".join(map(re.escape, patients)) + ")(?![0-9])")
    runs = [
        client.get_run(summary.tracking.parent_run_id),
        *_children(summary, client),
        *_children(summary, client, "seeds"),
    ]
    for run in runs:
        text = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert not pattern.search(text), run.info.run_id
        local = Path(
            client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
        )
        for path in local.rglob("*"):
            if path.suffix in (".csv", ".json", ".html", ".txt"):
                assert not pattern.search(path.read_text()), path
            elif path.suffix == ".npz":
                for name, arr in np.load(path).items():
                    if arr.dtype.kind in "US":
                        assert not any(pattern.search(str(v)) for v in arr.ravel()), (path, name)


def test_table_and_report(study):
    _cfg, summary, _ = study
    table = per_arm_table(summary.records, ARMS, egd_task())
    for arm in ARMS:
        assert re.search(
            rf"^{re.escape(arm)}\s+2/2( \(1 stopped early\))?\s+0\.\d{{3}}\s+0\.\d{{3}} \[",
            table,
            re.MULTILINE,
        ), table
    assert summary.report_path and Path(summary.report_path).is_file()
    records = trials_of(summary.tracking)
    assert {r.arm for r in records} == set(ARMS)


def test_the_driver_records_what_the_ui_shows(study, tiny_data):
    _cfg, summary, client = study
    parent = client.get_run(summary.tracking.parent_run_id)
    assert parent.data.tags["mlflow.source.git.commit"]  # a commit, or "unknown" outside git
    assert parent.data.tags["data_fingerprint"] == tiny_data.content_digest()
    data = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "study/data.json")).read_text()
    )
    assert data["images"] == len(tiny_data.labels) == int(parent.data.params["data/images"])
    search = _children(summary, client)
    for arm in ARMS:
        ok = [r for r in search if r.data.tags["arm"] == arm and r.data.tags["status"] == "ok"]
        top = max(r.data.metrics["best/val_auc_mean"] for r in ok)
        best = [
            r for r in search if r.data.tags["arm"] == arm and r.data.tags["best_of_arm"] == "true"
        ]
        assert len(best) == 1 and best[0].data.metrics["best/val_auc_mean"] == top
        assert parent.data.metrics[arm_metric(arm, "best_val_auc_mean")] == top
        assert (
            parent.data.metrics[arm_metric(arm, "test_auc_mean")]
            == (best[0].data.metrics["test/auc_mean"])
        )
    for run in [*search, *_children(summary, client, "seeds")]:
        assert run.data.tags["mlflow.note.content"].startswith(f"Arm `{run.data.tags['arm']}`")
        assert all(str(v).strip() for v in run.data.tags.values())  # no empty tag (error: none)
        assert run.data.tags["status"] != "ok" or "error" not in run.data.tags
    assert parent.data.tags["mlflow.note.content"].startswith("**Verdict.** Selected by validation")


def test_the_report_and_the_parent_run_give_the_same_verdict(study):
    """The verdict opens the report and the parent's description, in the same words."""
    _cfg, summary, client = study
    page = Path(summary.report_path).read_text()
    paragraph = re.search(r'<p class="verdict">(.*?)</p>', page, re.DOTALL).group(1)
    words = html.unescape(re.sub(r"<[^>]+>", "", paragraph))
    assert words.startswith("Selected by validation: ")
    # This study has no unet arm: nothing to compare with, and the verdict says so.
    assert words.endswith("No arm can be compared with unet: the study has no unet arm.")
    note = client.get_run(summary.tracking.parent_run_id).data.tags["mlflow.note.content"]
    assert note.startswith(f"**Verdict.** {words}")
    assert page.index('class="verdict"') < page.index('class="toc"')


def test_predict_finds_the_doctor_threshold_of_the_studys_report(study, tiny_data, data_config, tmp_path, capsys):  # fmt: skip
    """The report the study wrote logged doctor.csv to the parent run: a best trial's run id
    gives predict the threshold the study's DOCTOR analysis chose for that arm."""
    from study import predict
    from trainables.data.prepare import synthetic_root

    _cfg, summary, _client = study
    results = pd.read_csv(Path(summary.report_path).parent / "results.csv").set_index("arm")
    doctor = pd.read_csv(Path(summary.report_path).parent / "doctor.csv").set_index("arm")
    run_id = results.loc["set3-gbp", "run_id"]
    key = tiny_data.keys[int(tiny_data.indices("test")[0])]
    (dicom,) = synthetic_root(data_config).rglob(f"{key}.dcm")
    argv = ["--model", run_id, "--tracking-uri", summary.tracking.tracking_uri, "--dicom",
            str(dicom), "--out", str(tmp_path)]  # fmt: skip
    assert predict.main(argv) == 0
    flag = json.loads(capsys.readouterr().out)["doctor"]
    assert flag["threshold"] == pytest.approx(doctor.loc["set3-gbp", "threshold"])
    assert flag["low_confidence"] == (flag["score"] > flag["threshold"])


def test_one_number_one_interval_wherever_it_is_shown(study):
    """Each arm's test AUC and its 95% CI read the same, to 3 decimals, in MLflow (the trial's
    metrics and the parent's), the console table, results.csv, Tables 1-4 and the HTML report."""
    _cfg, summary, client = study
    out = Path(summary.report_path).parent
    results = pd.read_csv(out / "results.csv").set_index("arm")
    tables = pd.read_csv(out / "tables.csv")
    html = Path(summary.report_path).read_text()
    console = per_arm_table(summary.records, ARMS, egd_task())
    parent = client.get_run(summary.tracking.parent_run_id).data.metrics
    for arm in ARMS:
        run_id = results.loc[arm, "run_id"]
        m = client.get_run(run_id).data.metrics
        assert client.get_run(run_id).data.tags["best_of_arm"] == "true"
        for key in AUC_KEYS:
            logged = [m[f"test/{key}"], m[f"test/{key}_ci_low"], m[f"test/{key}_ci_high"]]
            on_parent = [parent[arm_metric(arm, f"test_{key}", b)] if b else parent[arm_metric(arm, f"test_{key}")] for b in (None, "low", "high")]  # fmt: skip
            in_csv = [results.loc[arm, f"test_{key}{s}"] for s in ("", "_low", "_high")]
            cell = tables[(tables["arm"] == arm) & (tables["metric"] == key)].iloc[0]
            in_tables = [cell["auc"], cell["low"], cell["high"]]
            for other in (on_parent, in_csv, in_tables):
                assert [f"{v:.3f}" for v in other] == [f"{v:.3f}" for v in logged], (arm, key)
            shown = f"{logged[0]:.3f} ({logged[1]:.3f}, {logged[2]:.3f})"
            assert shown in html, (arm, key, shown)
        mean = "{:.3f} [{:.3f}, {:.3f}]".format(m["test/auc_mean"], m["test/auc_mean_ci_low"], m["test/auc_mean_ci_high"])  # fmt: skip
        assert re.search(rf"^{re.escape(arm)}\s.*{re.escape(mean)}", console, re.MULTILINE), console
