"""The command line: every flag documented, flags land in the one StudyConfig, parsing is cheap,
and every bad value is an argparse error naming its flag before anything starts."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from study.cli import build_config, build_parser, parse_config
from study.presets import StudyConfig, get_preset, list_presets, with_overrides
from tests.study.conftest import PROJECT_DIR
from trainables.config import ConfigError

FLAGS = [
    "--data",
    "--dataset",
    "--set",
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
    "--verbose",
    "--images",
    "--version",
    "--help",
]
HEAVY = ("torch", "mlflow", "ray", "sklearn")


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
    parser = build_parser()
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert options == set(FLAGS)  # exactly the documented flags, no more, no fewer
    in_help = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*(?![\w-])", out))
    assert options <= in_help, sorted(options - in_help)
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
    assert "None" not in out  # no argparse "(default: None)" noise
    from trainables.model_sets import list_arms

    listed = re.search(r"^arms \(--arms, --arm\): (.+)$", out, re.MULTILINE)
    assert listed and listed.group(1).split(", ") == list_arms()


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study", *argv],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_one_command_line_lists_its_subcommands_and_a_version():
    from study.cli import SUBCOMMANDS

    out = _run_cli("--help").stdout
    for sub in ("study", "evidence", "predict", "verdict", "tables", "figures", "doctor", "report"):
        assert sub in SUBCOMMANDS and re.search(rf"^  {sub}\s+\S", out, re.MULTILINE), sub
    version = _run_cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"gaze-study \S+\n", version.stdout)


@pytest.mark.parametrize(
    ("sub", "shown"),
    [
        (
            "evidence",
            ["--shortcut SHORTCUT", "(default: marker;", "--seeds N", "--quick", "--plan"],
        ),
        ("predict", ["--out OUT", "(default: outputs/predict)", "--model MODEL"]),
        ("report", ["--experiment EXPERIMENT", "(default: gaze-unet)", "--log"]),
        ("tables", ["--parent PARENT", "--log"]),
        ("verdict", ["--parent PARENT", "--log", "differs from the baseline"]),
    ],
)
def test_each_subcommands_help_shows_its_flags_and_defaults(sub, shown):
    run = _run_cli(sub, "--help")
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())
    for words in shown:
        assert " ".join(words.split()) in text, (sub, words)
    assert f"gaze-study {sub}" in run.stdout  # its own program name, not the study's


def test_placement_is_its_own_setting():
    _, cfg = parse_config(build_parser(), ["--set", "placement.device=cpu", "--set", "placement.num_threads=2"])  # fmt: skip
    assert (cfg.placement.device, cfg.placement.num_threads) == ("cpu", 2)
    assert "device" not in {f.name for f in dataclasses.fields(cfg.trial)}  # not a trial param


def test_no_flags_is_the_demo_preset():
    cfg = build_config(build_parser().parse_args([]))
    assert cfg == get_preset("demo")
    assert cfg.arms == () and cfg.data.image_size == 64


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
    assert cfg.trial.epochs == 4 and cfg.data.image_size == 96
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
    assert (cfg.data.data_root, cfg.data.mimic_root, cfg.data.image_list) == (
        "/egd",
        "/mimic",
        "/egd/filenames.csv",
    )


def test_smoke_test_and_paper_presets():
    smoke = build_config(build_parser().parse_args(["--smoke-test"]))
    assert smoke.preset == "smoke" and smoke.trial.epochs == 1 and len(smoke.arms) == 2
    paper = get_preset("paper")
    assert (paper.data.image_size, paper.trial.epochs, paper.trials_per_arm) == (224, 35, 20)
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
    assert "[single-trial] training on cpu" in run.stdout  # the device it trains on
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


def _heavy_modules_after(argv: list[str]) -> tuple[list[str], str, int]:
    """(heavy modules imported, stderr+stdout, exit code) of ``main(argv)`` in a fresh process."""
    code = (
        "import json, sys\n"
        "from study.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        f"print('HEAVY', json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), rc)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    line = run.stdout.strip().splitlines()[-1]
    mods, rc = line.split(" ", 1)[1].rsplit(" ", 1)
    return json.loads(mods), run.stderr + run.stdout, int(rc)


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["--epochs", "0"],
        ["--study-name", "../x"],
        ["--lr", "0.1"],
        ["--image-size", "48"],
        ["--search-space", "nope"],
    ],
)
def test_argument_errors_import_nothing_heavy(argv):
    heavy, out, rc = _heavy_modules_after(argv)
    assert rc == 2, out
    assert heavy == [], f"parsing {argv} imported {heavy}"


def test_help_imports_nothing_heavy():
    heavy, out, rc = _heavy_modules_after(["--help"])
    assert rc == 0, out
    assert heavy == [], f"--help imported {heavy}"


def _parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(build_parser(), argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_unknown_arms_are_argparse_errors_listing_the_valid_ones(capsys):
    from trainables.model_sets import list_arms

    for argv, flag in (
        (["--arms", "unet,nope"], "--arms"),
        (["--single-trial", "--arm", "nope"], "--arm"),
    ):
        err = _parse_error(argv, capsys)
        assert f"argument {flag}: " in err and "nope" in err, err
        assert all(arm in err for arm in list_arms()), err
    assert parse_config(build_parser(), ["--arms", "unet,no-seg"])[1].arms == ("unet", "no-seg")


SINGLE = ["--single-trial", "--arm", "unet"]
BAD_VALUES = [
    (SINGLE + ["--lr", "0"], "--lr"),
    (SINGLE + ["--lr=-1e-3"], "--lr"),  # "-1e-3" alone reads as an option to argparse
    (SINGLE + ["--lr", "nan"], "--lr"),
    (SINGLE + ["--seg-ratio", "-0.1"], "--seg-ratio"),
    (SINGLE + ["--seg-ratio", "1.01"], "--seg-ratio"),
    (SINGLE + ["--gamma", "0"], "--gamma"),
    (SINGLE + ["--gamma", "1.5"], "--gamma"),
    (["--epochs", "0"], "--epochs"),
    (["--image-size", "16"], "--image-size"),
    (["--image-size", "48"], "--image-size"),
    (["--trials-per-arm", "0"], "--trials-per-arm"),
    (["--batch-size", "0"], "--batch-size"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial"),
    (["--seed", "-1"], "--seed"),
    (["--seeds", "-2"], "--seeds"),
    (["--max-concurrent", "0"], "--max-concurrent"),
    (["--synthetic-images", "2"], "--synthetic-images"),
    (["--study-name", "../x"], "--study-name"),
    (["--study-name", ".."], "--study-name"),
    (["--study-name", "a'b"], "--study-name"),
    (["--experiment", "x/y"], "--experiment"),
    (["--search-space", "nope"], "--search-space"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_VALUES)
def test_bad_values_are_argparse_errors_naming_the_flag(argv, flag, capsys):
    err = _parse_error(argv, capsys)
    assert f"argument {flag}: " in err, err


def test_values_on_the_boundaries_are_accepted():
    _, cfg = parse_config(
        build_parser(),
        SINGLE + ["--seg-ratio", "0", "--gamma", "1", "--image-size", "32", "--seed", "0"],
    )
    assert (cfg.trial.seg_ratio, cfg.trial.gamma, cfg.data.image_size) == (0.0, 1.0, 32)
    _, cfg = parse_config(build_parser(), SINGLE + ["--seg-ratio", "1", "--lr", "7"])
    assert (cfg.trial.arm, cfg.trial.seg_ratio, cfg.trial.lr) == ("unet", 1.0, 7.0)


@pytest.mark.parametrize("flag", ["--lr", "--seg-ratio", "--gamma"])
def test_single_trial_hyperparameters_are_refused_in_study_mode(flag, capsys):
    # A study searches them; silently ignoring "--lr 7" ran trials at lr 0.001 (issue 10).
    err = _parse_error([flag, "0.5"], capsys)
    assert f"argument {flag}: " in err and "--single-trial" in err, err
    err = _parse_error(["--arm", "unet"], capsys)
    assert "argument --arm: " in err


def test_the_rules_live_on_the_configs_for_programmatic_callers():
    # The same rules without the CLI: the field is named, and it maps to one flag.
    demo = get_preset("demo")
    cases = [
        (lambda: dataclasses.replace(demo, study_name="../x"), "study_name"),
        (lambda: dataclasses.replace(demo, trials_per_arm=0), "trials_per_arm"),
        (lambda: with_overrides(demo, trial={"lr": -1.0}), "lr"),
        (lambda: with_overrides(demo, data={"image_size": 40}), "image_size"),
    ]
    for make, field in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == field and field in str(info.value)


def test_the_command_is_kept_for_the_resume_hint():
    _, cfg = parse_config(
        build_parser(), ["--epochs", "2"], command=("gaze-study", "--epochs", "2")
    )
    assert cfg.command == ("gaze-study", "--epochs", "2")


def test_set_reaches_any_field_with_its_type_and_its_rules(capsys):
    _, cfg = parse_config(
        build_parser(),
        ["--set", "data.gaze_sigma=100", "--set", "trial.decoder_channels=16,8,8,4,4",
         "--set", "trial.bn_mode=frozen", "--set", "grace_period=3", "--set", "data.split_file=none",
         "--set", "trial.augment=false"],
    )  # fmt: skip
    assert cfg.data.gaze_sigma == 100.0 and cfg.trial.decoder_channels == (16, 8, 8, 4, 4)
    assert cfg.trial.bn_mode == "frozen" and cfg.grace_period == 3
    assert cfg.data.split_file is None and cfg.trial.augment is False
    for item, words in (
        ("data.gaze_sigma=-3", "gaze_sigma must be > 0"),  # the config's own rule
        ("trial.bn_mode=eval", "not one of frozen, batch"),
        ("data.nope=1", "no such field"),
        ("epochs=x", "no such field"),  # epochs is a trial field: trial.epochs
        ("trial.epochs=two", "not an int"),
        ("gaze_sigma", "expected KEY=VALUE"),
    ):
        err = _parse_error(["--set", item], capsys)
        assert "argument --set: " in err and words in err, (item, err)
