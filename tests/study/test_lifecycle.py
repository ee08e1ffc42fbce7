"""What the one driver guarantees every plan (``study.driver.run_plan``), tested on each plan: the
parent run ends FAILED on a crash with the commit and the data fingerprint recorded; a resume with
other settings or other data is refused naming what changed; an unknown name is refused; a name
taken by another process is refused before a parent run exists; a plan where an arm never
succeeded ends non-zero and FAILED. (Refusals before Ray starts: ``test_driver``.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.border import VARIANTS, BorderPlan
from study.driver import run_plan
from study.efficiency import DataEfficiencyPlan
from study.evidence import EvidencePlan, ScanningPlan
from study.lifecycle import CLAIM_FILE
from study.plans import SearchPlan, get_plan, plan_names
from study.selection_plan import SelectionPlan
from tests.study.conftest import tiny_study, tiny_trial
from trainables.config import DataConfig

pytestmark = pytest.mark.slow

PLANS = {
    "search": lambda: SearchPlan(),
    "evidence": lambda: EvidencePlan(arms_run=("no-seg",), seeds=(0,)),
}
# The smallest form of every registered plan. The refusals and the failed-arm ending below run on
# each; the full lifecycle (finish, resume refusals) on the two above, and each plan's own resume
# settings in test_evidence_plans. A plan registered without an entry here fails
# test_every_registered_plan_has_its_lifecycle_tested.
EVERY_PLAN = {
    **PLANS,
    "scanning": lambda: ScanningPlan(arms_run=("no-seg",), seeds=(0,), scanning=(0.25,)),
    "data-efficiency": lambda: DataEfficiencyPlan(
        arms_run=("no-seg",), seeds=(0,), train_sizes=(6,), max_epochs=1
    ),
    "selection": lambda: SelectionPlan(
        arms_run=("no-seg",), seeds=(0,), lambdas=(1.0,), lrs=(1e-3,)
    ),
    "border": lambda: BorderPlan(variants=(VARIANTS[0],), seeds=(10,)),
}


def _cfg(tmp: Path, data_config: DataConfig, plan: str, **kw):
    cfg = tiny_study(tmp, data_config, arms=("no-seg",), trials_per_arm=1, **kw)
    if plan != "search":  # the evidence twins: 40 images, 20 px test splits
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic_images=40))
    return dataclasses.replace(cfg, trial=tiny_trial(epochs=1))


def _parents(cfg):
    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], "tags.role = 'study'")


@pytest.fixture(scope="module", params=sorted(PLANS))
def finished(request, ray_local, data_config, tmp_path_factory):
    """One tiny study of each plan, run to its end."""
    tmp = tmp_path_factory.mktemp(request.param)
    cfg = _cfg(tmp, data_config, request.param)
    summary = run_plan(PLANS[request.param](), cfg)
    assert summary.exit_code == 0
    return request.param, cfg, summary


def test_a_finished_plan_records_its_commit_and_its_data(finished):
    _, cfg, summary = finished
    (parent,) = _parents(cfg)
    assert parent.info.status == "FINISHED" and parent.info.run_id == summary.tracking.parent_run_id
    assert parent.data.tags["mlflow.source.git.commit"] and parent.data.tags["data_fingerprint"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda c: dataclasses.replace(c, trial=dataclasses.replace(c.trial, epochs=2)),
            "trial.epochs",
        ),
        (
            lambda c: dataclasses.replace(c, data=dataclasses.replace(c.data, gaze_sigma=90.0)),
            "data.gaze_sigma",
        ),
    ],
)
def test_a_resume_with_other_settings_is_refused_naming_them(finished, change, named):
    _, cfg, _ = finished
    with pytest.raises(SystemExit, match=rf"--resume: .*{named}.*then"):
        run_plan(PLANS[finished[0]](), change(dataclasses.replace(cfg, resume=True)))
    (parent,) = _parents(cfg)
    assert parent.info.status == "FINISHED"  # the refusal touched nothing


def test_a_resume_on_other_data_is_refused(finished, tmp_path):
    plan, cfg, _ = finished
    # The same settings, another twin's pixels: a data folder whose twin was drawn with a
    # different split file (a location, not a setting) gives different data.
    split = tmp_path / "split.csv"
    first = cfg.data if plan == "search" else PLANS[plan]().twin(cfg, "clean")
    from trainables.data.prepare import prepare_data

    keys = prepare_data(first).keys
    split.write_text("dicom_id,split\n" + "".join(f"{k},{['train', 'val', 'test'][i % 3]}\n" for i, k in enumerate(keys)))  # fmt: skip
    moved = dataclasses.replace(cfg, resume=True, data=dataclasses.replace(cfg.data, split_file=str(split)))  # fmt: skip
    with pytest.raises(SystemExit, match=r"--resume: .*other data \(data fingerprint"):
        run_plan(PLANS[plan](), moved)


def test_reusing_a_name_without_resume_is_refused(finished):
    plan, cfg, _ = finished
    with pytest.raises(SystemExit, match="already exists.*pass --resume"):
        run_plan(PLANS[plan](), cfg)
    assert len(_parents(cfg)) == 1


def test_every_registered_plan_has_its_lifecycle_tested():
    assert sorted(plan_names()) == sorted(EVERY_PLAN)
    for name, make in EVERY_PLAN.items():
        assert type(make()) is get_plan(name)


@pytest.mark.parametrize("plan", sorted(EVERY_PLAN))
def test_a_name_another_process_holds_is_refused_before_any_parent_run(plan, data_config, tmp_path):
    cfg = _cfg(tmp_path, data_config, plan, study_name="taken")
    claim = Path(cfg.storage_root()) / "taken" / CLAIM_FILE
    claim.parent.mkdir(parents=True)
    claim.write_text("pid 1 on another-host at 2026-12-07 00:00:00\n")  # it started a moment ago
    with pytest.raises(SystemExit, match="already taken.*another-host"):
        run_plan(EVERY_PLAN[plan](), cfg)
    assert _parents(cfg) == []


@pytest.mark.parametrize("plan", sorted(EVERY_PLAN))
def test_resuming_a_name_no_study_has_is_refused_before_any_parent_run(plan, data_config, tmp_path):
    cfg = _cfg(tmp_path, data_config, plan, study_name="nosuch", resume=True)
    with pytest.raises(SystemExit, match="--resume: no study named 'nosuch'"):
        run_plan(EVERY_PLAN[plan](), cfg)
    assert _parents(cfg) == []


@pytest.mark.parametrize("plan", sorted(EVERY_PLAN))
def test_a_trial_that_raises_leaves_the_parent_failed_with_commit_and_fingerprint(plan, ray_local, data_config, tmp_path):  # fmt: skip
    cfg = _cfg(tmp_path, data_config, plan, max_failures=0, report=True)
    broken = dataclasses.replace(cfg, trial=dataclasses.replace(cfg.trial, encoder_weights="/no/such.pth"))  # fmt: skip
    summary = run_plan(EVERY_PLAN[plan](), broken)
    arm = EVERY_PLAN[plan]().arms(cfg)[0]
    assert summary.exit_code == 1 and arm in summary.failed_arms
    assert "encoder weights file not found" in summary.failed_arms[arm]
    (parent,) = _parents(cfg)
    assert parent.info.status == "FAILED"
    assert f"no successful trial for arm(s): {arm}" in parent.data.tags["error"]
    assert parent.data.tags["mlflow.source.git.commit"] and parent.data.tags["data_fingerprint"]
    # the report says which arm had no successful trial, and why
    (page,) = (tmp_path / "outputs").rglob("report.html")
    assert (
        f"No successful trial for {arm}" in page.read_text()
        and "encoder weights file not found" in page.read_text()
    )


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_a_crash_of_the_driver_ends_the_parent_failed(plan, ray_local, data_config, tmp_path):
    cfg = _cfg(tmp_path, data_config, plan, project_dir=str(tmp_path / "no-write"))
    (tmp_path / "no-write").write_text("a file where the report folder must go")
    with pytest.raises(OSError):  # the report folder cannot be created
        run_plan(PLANS[plan](), dataclasses.replace(cfg, report=True))
    (parent,) = _parents(cfg)
    assert parent.info.status == "FAILED" and "error" in parent.data.tags
