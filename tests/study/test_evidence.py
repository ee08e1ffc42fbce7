"""The evidence experiment end to end (real Ray, real sqlite MLflow, real twins): two arms x two
seeds x {clean, shortcut}, one run per trial tagged with its twin, the table and the HTML page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.cli import build_config, build_evidence_parser
from study.driver import run_plan
from study.evidence import EvidencePlan, build_plan
from study.presets import get_preset
from tests.study.conftest import tiny_trial
from trainables.config import DataConfig

pytestmark = pytest.mark.slow

ARMS = ("unet", "rrr")
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def evidence(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evidence")
    study = dataclasses.replace(
        get_preset("evidence-quick"),
        study_name="ev-test",
        project_dir=str(tmp),
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        storage_path=str(tmp / "ray_results"),
        data=DataConfig(data_dir=str(tmp / "data"), synthetic_images=30, image_size=32),
        trial=tiny_trial(epochs=1, panels=2),
        max_failures=0,
    )
    plan = EvidencePlan(arms_run=ARMS, seeds=SEEDS, shortcut="marker")
    return study, run_plan(plan, study)


def test_every_arm_seed_and_twin_ran_once_and_is_tagged(evidence):
    _cfg, summary = evidence
    ctx = summary.tracking
    client = MlflowClient(ctx.tracking_uri)
    runs = client.search_runs(
        [ctx.experiment_id],
        f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}' and tags.role = 'trial'",
    )
    seen = sorted(
        (r.data.tags["twin"], r.data.tags["arm"], r.data.params["seed"], r.data.tags["stage"])
        for r in runs
    )
    expected = sorted(
        (twin, arm, str(seed), "evidence")
        for twin in ("clean", "shortcut")
        for arm in ARMS
        for seed in SEEDS
    )
    assert seen == expected
    assert all(r.data.tags["status"] == "ok" for r in runs)
    parent = client.get_run(ctx.parent_run_id)
    assert parent.data.tags["kind"] == "evidence" and parent.info.status == "FINISHED"
    assert "kind" not in parent.data.params  # one home: the tag
    # the one driver's guarantees: provenance of the code and of the data
    assert parent.data.tags["mlflow.source.git.commit"] and parent.data.tags["data_fingerprint"]


def test_table_and_report_cover_every_arm(evidence):
    _, summary = evidence
    table = pd.read_csv(Path(summary.report_path).with_name("evidence.csv"))
    assert list(table["arm"]) == list(ARMS)
    assert (table["seeds"] == len(SEEDS)).all()
    assert table["clean AUC"].between(0, 1).all() and table["shortcut AUC"].between(0, 1).all()
    html = Path(summary.report_path).read_text()
    for arm in ARMS:
        assert arm in html
    assert html.count("<img") == 3 and "What the numbers show" in html
    assert "unet: test mean AUC" in Path(summary.report_path).with_name("evidence.md").read_text()
    # The report and the evidence files are logged to the parent run, like a study's.
    client = MlflowClient(summary.tracking.tracking_uri)
    logged = {a.path for a in client.list_artifacts(summary.tracking.parent_run_id, "analysis")}
    assert {"analysis/report.html", "analysis/evidence.csv", "analysis/evidence.md"} <= logged


def _parsed(*argv):
    args = build_evidence_parser().parse_args(list(argv))
    return build_config(args), build_plan(args, args.arms)


def test_cli_builds_the_quick_and_full_plans():
    quick_cfg, quick = _parsed("--quick", "--shortcut", "border")
    full_cfg, full = _parsed()
    assert len(quick.seeds) == 3 and len(full.seeds) == 5
    assert quick_cfg.preset == "evidence-quick" and full_cfg.preset == "evidence"
    assert set(quick.arms_run) < set(full.arms_run) and quick_cfg.data == full_cfg.data
    assert quick.twin(quick_cfg, "shortcut").synthetic_shortcut == "border"
    assert quick.twin(quick_cfg, "clean").synthetic_shortcut is None
    with pytest.raises(KeyError, match="clean, shortcut"):
        quick.twin(quick_cfg, "dirty")
    # Both twins are split alike (the evidence shares), whatever the study preset's split.
    assert full.twin(full_cfg, "clean").split_fractions == full.twin(full_cfg, "shortcut").split_fractions  # fmt: skip
    assert full.twin(full_cfg, "clean").split_fractions == full.split_fractions != (0.8, 0.1, 0.1)
    tuned_cfg, tuned = _parsed("--set", "trial.rrr_lambda=1", "--seeds", "3", "--arms", "unet,rrr")
    assert tuned_cfg.trial.rrr_lambda == 1.0 and tuned.seeds == (0, 1, 2)
    assert tuned.arms_run == ("unet", "rrr") and tuned_cfg.seeds == 0  # not the study's re-runs


def test_cli_builds_every_plan_and_refuses_a_flag_of_another(capsys):
    from study.cli import main

    sizes = {
        ("--plan", "scanning"): 150, ("--plan", "scanning", "--quick"): 24,
        ("--plan", "data-efficiency"): 120, ("--plan", "data-efficiency", "--quick"): 12,
        ("--plan", "selection"): 105, ("--plan", "selection", "--quick"): 8,
        ("--plan", "border"): 100, ("--plan", "border", "--quick"): 20,
        (): 140, ("--quick",): 30,
    }  # fmt: skip
    for argv, trials in sizes.items():
        cfg, plan = _parsed(*argv)
        assert len(plan.grid_trials(cfg)) == trials, argv
        assert {"gaze-mask", "cutout"} <= set(plan.arms(cfg)) or "--quick" in argv, argv
    cfg, scan = _parsed("--plan", "scanning", "--scanning", "0,0.3", "--arms", "unet,density-share")
    assert scan.scanning == (0.0, 0.3) and set(scan.datasets(cfg)) == {
        "clean", "shortcut", "clean-scan0.3", "shortcut-scan0.3"
    }  # fmt: skip
    assert scan.twin(cfg, "shortcut", 0.3).synthetic_scanning_share == 0.3
    cfg, eff = _parsed("--plan", "data-efficiency", "--train-sizes", "12,48", "--seeds", "2")
    assert eff.train_sizes == (12, 48) and eff.datasets(cfg)["n12-s1"].train_images_seed == 1
    _, border = _parsed("--plan", "border", "--seeds", "3")
    assert border.seeds == (10, 11, 12) and border.shortcut == "border"
    with pytest.raises(SystemExit) as err:
        main(["evidence", "--plan", "selection", "--train-sizes", "24"])
    assert err.value.code == 2
    assert "--train-sizes is a flag of the data-efficiency plan(s), not of selection" in capsys.readouterr().err  # fmt: skip
