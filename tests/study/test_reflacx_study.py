"""A REFLACX study end to end on its synthetic twin: multi-label findings through training, the
record, the per-finding table (AUCs against scikit-learn), the human ceiling and the expert
localization in the report with intervals, and predict on a multi-label model."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from study import predict
from study.driver import run_study
from tests.study.conftest import tiny_study
from trainables.config import DataConfig
from trainables.data.datasets import task_of
from trainables.record import CEILING, READERS, metric_key
from trainables.record.files import labels_and_probs, read_predictions

pytestmark = pytest.mark.slow

ARMS = ("unet", "set3-gbp")
TASK = task_of("reflacx")


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reflacx")
    data = DataConfig(
        dataset="reflacx", data_dir=str(tmp / "data"), synthetic_images=60, image_size=32,
        split_fractions=(0.5, 0.1, 0.4), synthetic_multi_reader_images=20,
    )  # fmt: skip
    cfg = tiny_study(tmp, data, arms=ARMS, trials_per_arm=1, max_concurrent=2, report=True)
    cfg = dataclasses.replace(cfg, trial=dataclasses.replace(cfg.trial, epochs=1))
    summary = run_study(cfg)
    client = MlflowClient(summary.tracking.tracking_uri)
    runs = client.search_runs(
        [summary.tracking.experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.tracking.parent_run_id}'",
    )
    return cfg, summary, client, {r.data.tags["arm"]: r for r in runs}


def _artifact(client, run_id: str, path: str) -> Path:
    return Path(client.download_artifacts(run_id, path))


def test_trials_log_one_auc_per_finding_and_predictions_of_the_findings(study):
    _cfg, summary, client, runs = study
    assert not summary.interrupted and set(runs) == set(ARMS)
    assert client.get_run(summary.tracking.parent_run_id).data.params["dataset"] == "reflacx"
    for run in runs.values():
        assert run.data.tags["status"] == "ok"
        frame = read_predictions(_artifact(client, run.info.run_id, "predictions/test.csv"), TASK)
        labels, probs = labels_and_probs(frame, TASK)
        assert labels.shape == probs.shape == (len(frame), TASK.n)
        assert not np.allclose(probs.sum(1), 1)  # a sigmoid per finding, not a softmax
        for c, key in enumerate(TASK.auc_keys[:-1]):  # sklearn, per finding, is the oracle
            logged = run.data.metrics.get(metric_key("test", key))
            if 0 < labels[:, c].sum() < len(labels):
                assert logged == pytest.approx(roc_auc_score(labels[:, c], probs[:, c]), abs=1e-9)
            else:  # no positive (or no negative) test image: no AUC, never a made-up 0.5
                assert logged is None or np.isnan(logged)


def test_the_record_holds_the_human_ceiling_and_each_trials_maps_against_the_readers(study):
    _cfg, summary, client, runs = study
    ceiling = pd.read_csv(_artifact(client, summary.tracking.parent_run_id, CEILING))
    assert len(ceiling) >= 2 and ceiling["readers"].between(2, 5).all()
    assert ceiling["cc"].between(-1, 1).all() and ceiling["cc"].mean() > 0.3  # readers agree
    for run in runs.values():
        readers = pd.read_csv(_artifact(client, run.info.run_id, READERS))
        assert set(ceiling["key"]) <= set(readers["key"])  # scored on the ceiling's images
        assert set(readers["map"]) == {"generator", "decoder"}
        assert readers["pointing"].dropna().isin((0.0, 1.0)).all()
        assert readers["energy"].dropna().between(0, 1).all()


def test_the_per_finding_table_compares_every_arm_with_unet(study):
    cfg, _summary, client, runs = study
    out = Path(cfg.project_dir) / "outputs" / "reports" / cfg.study_name
    long = pd.read_csv(out / "tables.csv")
    assert set(long["table"]) == {1} and set(long["arm"]) == set(ARMS)
    assert "paper_median" not in long.columns or long["paper_median"].isna().all()
    frame = read_predictions(_artifact(client, runs["set3-gbp"].info.run_id, "predictions/test.csv"), TASK)  # fmt: skip
    labels, probs = labels_and_probs(frame, TASK)
    for c, key in enumerate(TASK.auc_keys[:-1]):
        row = long[(long["arm"] == "set3-gbp") & (long["metric"] == key)].iloc[0]
        if 0 < labels[:, c].sum() < len(labels):
            assert row["auc"] == pytest.approx(roc_auc_score(labels[:, c], probs[:, c]), abs=1e-9)
    gbp = long[long["arm"] == "set3-gbp"]
    assert gbp["p_value"].notna().any() and long[long["arm"] == "unet"]["p_value"].isna().all()
    md = (out / "tables.md").read_text()
    assert "Ours vs the paper" not in md and "Left out, no AUC" in md


def test_the_report_shows_the_ceiling_and_the_localization_with_intervals(study):
    cfg, *_ = study
    page = (Path(cfg.project_dir) / "outputs" / "reports" / cfg.study_name / "report.html").read_text()  # fmt: skip
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "human ceiling (leave one reader out)" in text and "share of ceiling CC" in text
    assert "Expert localization" in text and "pointing game" in text
    ceiling_row = re.search(r"human ceiling \(leave one reader out\)\s+(\S+ \(\S+, \S+\))", text)
    assert ceiling_row, "the ceiling's CC has no interval"
    assert re.search(r"Set 3, guided backpropagation: generator \(gbp\)(\s+\S+ \(\S+, \S+\)){5}", text)  # fmt: skip
    assert "DOCTOR applies to one class per image" in text or "does not apply" in text
    assert "Ours vs the paper" not in text  # the paper has no REFLACX numbers


def test_predict_names_the_findings_of_a_multi_label_model(study, tmp_path):
    cfg, summary, _client, runs = study
    dicom = next((Path(cfg.data.data_dir)).rglob("*.dcm"))
    code = predict.main(
        ["--dicom", str(dicom), "--model", runs["set3-gbp"].info.run_id, "--tracking-uri",
         summary.tracking.tracking_uri, "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    probs = result["probabilities"]
    assert list(probs) == list(TASK.classes) and all(0 <= p <= 1 for p in probs.values())
    present = [c for c in TASK.classes if probs[c] >= 0.5]
    assert sorted(result["predicted"]) == sorted(present) and result["predicted_threshold"] == 0.5
    assert result["doctor"]["low_confidence"] is None and "multi-label" in result["doctor"]["threshold_source"]  # fmt: skip
