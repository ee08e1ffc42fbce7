"""The command line: every flag documented, flags land in the one StudyConfig."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from study.cli import build_config, build_parser
from study.presets import StudyConfig, get_preset, list_presets, with_overrides
from tests.study.conftest import PROJECT_DIR

FLAGS = [
    "--data",
    "--data-dir",
    "--synthetic-images",
    "--study-name",
    "--no-report",
    "--storage-is-shared",
    "--batch-size",
    "--mimic",
    "--image-list",
    "--arms",
    "--trials-per-arm",
    "--epochs",
    "--image-size",
    "--encoder",
    "--encoder-weights",
    "--gpus-per-trial",
    "--cpus-per-trial",
    "--address",
    "--storage-path",
    "--tracking-uri",
    "--experiment",
    "--seed",
    "--seeds",
    "--search-space",
    "--max-concurrent",
    "--sequential-arms",
    "--optuna-storage",
    "--resume",
    "--smoke-test",
    "--single-trial",
    "--arm",
    "--lr",
    "--seg-ratio",
    "--gamma",
    "--out",
    "--preset",
]


def test_help_lists_every_flag_with_text():
    # Run by path, as users do: the script must find the project on its own.
    out = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "study" / "run.py"), "--help"],
        cwd=PROJECT_DIR.parent,  # any directory: the script finds the project itself
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},  # this tree, even from a worktree
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    for flag in FLAGS:
        assert flag in out, flag
    for action in build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_no_flags_is_the_demo_preset():
    cfg = build_config(build_parser().parse_args([]))
    assert cfg == get_preset("demo")
    assert cfg.arms == () and cfg.trial.image_size == cfg.data.image_size == 64


EVERY_FLAG = (
    "--preset paper --arms unet,set3-gbp --trials-per-arm 3 --epochs 4 --image-size 96 "
    "--encoder resnet18 --encoder-weights none --gpus-per-trial 0.5 --cpus-per-trial 2 "
    "--address auto --storage-path s3://b/r --tracking-uri http://head:5000 --experiment e "
    "--seed 5 --seeds 2 --search-space lr-only --max-concurrent 3 "
    "--optuna-storage sqlite:////o.db --resume --data /egd --mimic /mimic "
    "--image-list /egd/filenames.csv --data-dir /d --synthetic-images 99 --batch-size 4 "
    "--study-name s --no-report --storage-is-shared --sequential-arms"
)


def test_flags_override_the_preset():
    args = build_parser().parse_args(EVERY_FLAG.split())
    cfg = build_config(args)
    assert cfg.preset == "paper" and cfg.arms == ("unet", "set3-gbp") and cfg.trials_per_arm == 3
    assert cfg.trial.epochs == 4 and cfg.trial.image_size == cfg.data.image_size == 96
    assert cfg.trial.encoder == "resnet18" and cfg.trial.encoder_weights is None
    assert (cfg.gpus_per_trial, cfg.cpus_per_trial, cfg.address) == (0.5, 2.0, "auto")
    assert (cfg.storage_path, cfg.tracking_uri, cfg.experiment) == (
        "s3://b/r",
        "http://head:5000",
        "e",
    )
    assert (cfg.seed, cfg.seeds, cfg.search_space, cfg.max_concurrent) == (5, 2, "lr-only", 3)
    assert cfg.optuna_storage == "sqlite:////o.db" and cfg.resume
    assert (cfg.data.data_dir, cfg.data.synthetic_images, cfg.trial.batch_size) == ("/d", 99, 4)
    assert cfg.study_name == "s" and not cfg.report and cfg.storage_is_shared
    assert cfg.sequential_arms and not build_config(build_parser().parse_args([])).sequential_arms
    assert (cfg.data.egd_root, cfg.data.mimic_root, cfg.data.image_list) == (
        "/egd",
        "/mimic",
        "/egd/filenames.csv",
    )


def test_smoke_test_and_paper_presets():
    smoke = build_config(build_parser().parse_args(["--smoke-test"]))
    assert smoke.preset == "smoke" and smoke.trial.epochs == 1 and len(smoke.arms) == 2
    paper = get_preset("paper")
    assert (paper.trial.image_size, paper.trial.epochs, paper.trials_per_arm) == (224, 35, 20)
    assert paper.trial.encoder == "efficientnet-b0" and paper.trial.encoder_weights == "imagenet"
    assert paper.search_space == "paper"
    # GPUs per trial and trials at once come from the cluster (study.resources.resolve_resources)
    assert paper.gpus_per_trial is None and paper.max_concurrent is None


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(KeyError, match="demo"):
        get_preset("nope")
    with pytest.raises(KeyError, match="epochs"):
        with_overrides(StudyConfig(), trial={"epoch": 3})
    assert {"demo", "paper", "smoke"} <= set(list_presets())


@pytest.mark.slow
def test_single_trial_runs_in_process_without_ray(data_config, tiny_data, tmp_path):
    out = tmp_path / "single"
    code = (
        "import sys; from study.cli import main; "
        f"rc = main(['--single-trial', '--smoke-test', '--arm', 'set3-gbp', '--lr', '0.002', "
        f"'--gamma', '0.3', '--seg-ratio', '0.7', '--data-dir', {data_config.data_dir!r}, "
        f"'--synthetic-images', '{data_config.synthetic_images}', '--out', {str(out)!r}]); "
        "print('RAY_IMPORTED', 'ray' in sys.modules); sys.exit(rc)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "RAY_IMPORTED False" in run.stdout  # a debugger sees plain PyTorch
    assert "epoch 1/1" in run.stdout
    for row in ("mean", "Normal", "CHF", "pneumonia"):
        assert re.search(rf"^{row}\s+\d\.\d{{3}} \[", run.stdout, re.MULTILINE), row
    assert (out / "predictions" / "test.csv").is_file() and (out / "summary.json").is_file()
    config = json.loads((out / "summary.json").read_text())["config"]
    assert (config["arm"], config["lr"], config["gamma"], config["seg_ratio"]) == (
        "set3-gbp",
        0.002,
        0.3,
        0.7,
    )
