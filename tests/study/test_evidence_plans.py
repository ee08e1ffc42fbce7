"""The evidence plans of issue 19 end to end under the one driver (real Ray, real sqlite MLflow,
real twins, 32 px, 1-2 epochs): the scanning sweep, data efficiency, selection without the test
set, the border calibration, and a search on a blind selection signal. Each plan runs once per
module; the tests read what it recorded and reported."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.selection import TEST, history_reader, rule_picks, selection_rows
from study.border import VARIANTS, BorderPlan
from study.driver import run_plan
from study.efficiency import DataEfficiencyPlan
from study.evidence import ScanningPlan
from study.plans import SearchPlan
from study.presets import get_preset
from study.selection_plan import SelectionPlan
from tests.study.conftest import tiny_trial
from tests.tiny import egd_task
from trainables.blind_selection import SIGNALS
from trainables.config import DataConfig
from trainables.metrics import per_class_auc
from trainables.record import Status
from trainables.record.reader import Record

EGD = egd_task()

pytestmark = pytest.mark.slow

PLANS = {
    "scanning": ScanningPlan(
        arms_run=("unet", "rrr-share", "density-share"), seeds=(0,), scanning=(0.0, 0.5)
    ),
    "efficiency": DataEfficiencyPlan(
        arms_run=("unet", "gaze-mask"), seeds=(0, 1), train_sizes=(6, 12), max_epochs=2
    ),
    "selection": SelectionPlan(
        arms_run=("rrr-share", "gaze-mask"), seeds=(0, 1), lambdas=(0.0, 1.0), lrs=(1e-3,)
    ),
    "border": BorderPlan(variants=VARIANTS[:3], seeds=(10,)),
}


def _study(tmp: Path, name: str, **kw):
    """The evidence-quick preset at 32 px on 30-image twins, 1 epoch, every output under ``tmp``."""
    settings = {
        "study_name": name,
        "project_dir": str(tmp),
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "storage_path": str(tmp / "ray_results"),
        "data": DataConfig(data_dir=str(tmp / "data"), synthetic_images=30, image_size=32),
        "trial": tiny_trial(epochs=1, panels=1),
        "max_failures": 0,
    }
    return dataclasses.replace(get_preset("evidence-quick"), **{**settings, **kw})


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plans")  # one store and one data folder: twins made once


@pytest.fixture(scope="module")
def ran(ray_local, tmp):
    """plan name -> (StudyConfig, StudySummary), each plan run once, on demand."""
    done = {}

    def run(name: str):
        if name not in done:
            cfg = _study(tmp, f"plan-{name}")
            done[name] = cfg, run_plan(PLANS[name], cfg)
        return done[name]

    return run


def _runs(summary):
    ctx = summary.tracking
    return MlflowClient(ctx.tracking_uri).search_runs(
        [ctx.experiment_id],
        f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}' and tags.role = 'trial'",
    )


def _logged(summary) -> set[str]:
    client = MlflowClient(summary.tracking.tracking_uri)
    return {a.path for a in client.list_artifacts(summary.tracking.parent_run_id, "analysis")}


def _parent(summary):
    return MlflowClient(summary.tracking.tracking_uri).get_run(summary.tracking.parent_run_id)


def test_scanning_sweep_runs_a_pair_of_twins_per_share_and_reports_each(ran):
    _, summary = ran("scanning")
    assert summary.exit_code == 0
    seen = sorted((r.data.tags["scanning"], r.data.tags["twin"], r.data.tags["arm"]) for r in _runs(summary))  # fmt: skip
    assert seen == sorted(
        (s, t, a)
        for s in ("0", "0.5")
        for t in ("clean", "shortcut")
        for a in PLANS["scanning"].arms_run
    )
    parent = _parent(summary)
    assert parent.data.params["plan"] == "scanning" and parent.data.params["scanning"] == "0,0.5"
    table = pd.read_csv(Path(summary.report_path).with_name("scanning.csv"))
    assert sorted(zip(table["scanning"], table["arm"], strict=True)) == sorted(
        (s, a) for s in (0.0, 0.5) for a in PLANS["scanning"].arms_run
    )
    md = Path(summary.report_path).with_name("scanning.md").read_text()
    assert "scanning 0.5" in md and "density-share - rrr-share" in md
    assert {"analysis/report.html", "analysis/scanning.csv", "analysis/scanning_recovered.png"} <= _logged(summary)  # fmt: skip


def test_data_efficiency_trains_on_nested_sizes_and_tests_on_the_same_images(ran):
    cfg, summary = ran("efficiency")
    assert summary.exit_code == 0
    runs = _runs(summary)
    assert sorted(
        (r.data.tags["train_images"], r.data.tags["arm"], r.data.params["seed"]) for r in runs
    ) == sorted((str(n), a, str(s)) for n in (6, 12) for a in ("unet", "gaze-mask") for s in (0, 1))
    # Smaller sets train more epochs (same steps), up to the plan's cap.
    assert {r.data.tags["train_images"]: r.data.params["epochs"] for r in runs} == {"6": "2", "12": "1"}  # fmt: skip
    record = Record(cfg.tracking_uri)
    keys = {tuple(record.predictions(r.info.run_id, EGD)["key"]) for r in runs}
    assert len(keys) == 1  # every size, arm and seed: the same test images
    data = record.study_data(summary.tracking.parent_run_id)["datasets"]
    train = {k: d["splits"]["train"]["images"] for k, d in data.items()}
    assert train == {"n6-s0": 6, "n6-s1": 6, "n12-s0": 12, "n12-s1": 12}
    table = pd.read_csv(Path(summary.report_path).with_name("data_efficiency.csv"))
    assert len(table) == 4 and (table.loc[table["arm"] == "unet", "vs unet"] == 0).all()
    assert {"analysis/data_efficiency.png", "analysis/report.html"} <= _logged(summary)


def _permuted(record: Record, trials, rng) -> list:
    """The trials with their test AUC recomputed on test labels permuted (one permutation: the
    trials share the test images)."""
    order = None
    out = []
    for t in trials:
        pred = record.predictions(t.run_id, EGD)
        if order is None:
            order = rng.permutation(len(pred))
        probs = pred[list(EGD.prob_columns)].to_numpy()
        auc = per_class_auc(pred["label"].to_numpy()[order], probs, EGD)["auc_mean"]
        out.append(dataclasses.replace(t, metrics={**t.metrics, "test/auc_mean": float(auc)}))
    return out


def test_selection_logs_the_blind_signals_and_its_picks_never_read_test_labels(ran):
    cfg, summary = ran("selection")
    assert summary.exit_code == 0
    record = Record(cfg.tracking_uri)
    study = record.study(cfg.experiment, summary.tracking.parent_run_id)
    trials = [t for t in study.trials if t.status == Status.OK]
    assert len(trials) == 6 and {t.tags["variant"] for t in trials} == {
        "rrr-share lambda=0 lr=0.001", "rrr-share lambda=1 lr=0.001", "gaze-mask lr=0.001"
    }  # fmt: skip
    for t in trials:  # every epoch of every trial logged every signal
        for key in SIGNALS:
            steps, values = record.metric_history(t.run_id, key)
            assert list(steps) == [1] and np.isfinite(values).all()
    reader = history_reader(record)
    rows = selection_rows(trials, reader)
    for seed in (1, 2, 3):
        shuffled = selection_rows(_permuted(record, trials, np.random.default_rng(seed)), reader)
        assert not np.allclose(shuffled[TEST], rows[TEST])  # the test labels did change ...
        assert rule_picks(shuffled) == rule_picks(rows)  # ... and no rule's pick did
    assert len(rule_picks(rows)) == 4 * 3  # 4 rules x (2 arms + all configurations)
    table = pd.read_csv(Path(summary.report_path).with_name("selection.csv"))
    assert set(table["rule"]) == {"validation AUC", "masked validation AUC", "gaze agreement", "combination"}  # fmt: skip
    assert {"analysis/selection.md", "analysis/selection.png", "analysis/report.html"} <= _logged(summary)  # fmt: skip


def test_border_calibrates_variants_on_their_own_seeds_and_measures_the_gaze_on_the_line(ran):
    _, summary = ran("border")
    assert summary.exit_code == 0
    runs = _runs(summary)
    assert sorted(
        (r.data.tags["variant"], r.data.tags["twin"], r.data.params["seed"]) for r in runs
    ) == sorted((v.label, t, "10") for v in VARIANTS[:3] for t in ("clean", "shortcut"))
    lam3 = [r for r in runs if r.data.tags["variant"] == "rrr-share lambda=3"]
    assert {r.data.params["share_lambda"] for r in lam3} == {"3.0"}
    md = Path(summary.report_path).with_name("border.md").read_text()
    assert "Gaze coverage of the line" in md and "covered@0.01" in md
    table = pd.read_csv(Path(summary.report_path).with_name("border.csv"))
    assert list(table["variant"]) == [v.label for v in VARIANTS[:3]]
    with pytest.raises(ValueError, match="evidence seeds"):
        BorderPlan(seeds=(4, 10))


def test_a_search_on_a_blind_signal_is_what_tune_optimises(ray_local, tmp):
    """``StudyConfig.search_metric``: Optuna is told the signal, and Tune ranks trials by it."""
    import optuna

    key, url = "val/selection_score", f"sqlite:///{tmp / 'optuna.db'}"
    cfg = _study(
        tmp, "search-blind", search_metric=key, trials_per_arm=2, search_space="demo",
        trial=tiny_trial(epochs=1, panels=1, selection_signals=True), optuna_storage=url,
        arms=("rrr-share",), report=False,
    )  # fmt: skip
    summary = run_plan(SearchPlan(), cfg)
    assert summary.exit_code == 0
    grid = summary.outcomes["search"].results
    scores = sorted(r.metrics[key] for r in grid)
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    assert scores != sorted(r.metrics["val/auc_mean"] for r in grid)
    told = optuna.load_study(study_name="search-blind-rrr-share", storage=url).trials
    assert sorted(t.value for t in told) == pytest.approx(scores)
    assert grid.get_best_result().metrics[key] == scores[-1]


@pytest.mark.parametrize(
    ("name", "changed", "named"),
    [
        (
            "efficiency",
            dataclasses.replace(PLANS["efficiency"], train_sizes=(6,)),
            "efficiency.train_sizes",
        ),
        (
            "selection",
            dataclasses.replace(PLANS["selection"], lambdas=(0.0, 3.0)),
            "selection.lambdas",
        ),
        ("border", dataclasses.replace(PLANS["border"], variants=VARIANTS[:2]), "border.variants"),
    ],
)
def test_a_resume_with_other_plan_settings_is_refused_naming_them(ran, name, changed, named):
    cfg, summary = ran(name)
    with pytest.raises(SystemExit, match=rf"--resume: .*{named}.*then"):
        run_plan(changed, dataclasses.replace(cfg, resume=True))
    assert _parent(summary).info.status == "FINISHED"  # the refusal touched nothing


def test_the_evidence_plan_builds_its_twins_from_reflacx(ray_local, tmp_path):
    """``gaze-study evidence --dataset reflacx``: the clean and shortcut twins are REFLACX twins
    (multi-label findings, five readers), split alike, and the report compares them."""
    from study.evidence import EvidencePlan
    from trainables.data.datasets import task_of

    data = DataConfig(dataset="reflacx", data_dir=str(tmp_path / "data"), synthetic_images=40, image_size=32)  # fmt: skip
    cfg = _study(tmp_path, "reflacx-evidence", data=data)
    summary = run_plan(EvidencePlan(arms_run=("unet",), seeds=(0,)), cfg)
    assert summary.exit_code == 0
    task = task_of("reflacx")
    record = Record(cfg.tracking_uri)
    study = record.study(cfg.experiment)
    assert study.dataset == "reflacx" and len(study.trials) == 2
    frames = {t.tags["twin"]: record.predictions(t.run_id, task) for t in study.trials}
    assert set(frames) == {"clean", "shortcut"}
    assert frames["clean"]["key"].tolist() == frames["shortcut"]["key"].tolist()  # split alike
    twins = sorted(p.name for p in (tmp_path / "data").iterdir() if p.name.startswith("reflacx"))
    assert any("marker" in t for t in twins) and any("marker" not in t for t in twins)
    page = next((tmp_path / "outputs").rglob("evidence.md")).read_text()
    assert "| unet |" in page
