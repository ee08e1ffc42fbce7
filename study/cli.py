"""The one command line, ``gaze-study`` (also ``python -m study``, ``python study/run.py``):

    gaze-study [study] [flags]     the study (the default subcommand)
    gaze-study evidence [flags]    the evidence plans (--plan: clean vs shortcut twins, ...)
    gaze-study predict ...         one radiograph through a trained model
    gaze-study verdict|tables|figures|doctor|report [flags]   the analysis of a study's record
    gaze-study --version

Parsing imports nothing heavy (no torch, Ray, MLflow): ``--help`` and flag errors come back at
once. Every value rule lives on the typed configs (``__post_init__``); a ``ConfigError`` is
reported here as an argparse error naming the flag, before any data is read or Ray starts. Each
subcommand's module stays a library (``study.driver.run_plan``, ``study.predict``, ``analysis.*``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version

from search_spaces import list_spaces
from study.presets import StudyConfig, apply_settings, get_preset, list_presets, with_overrides
from trainables.config import ConfigError

# The flags that override one config field each (the argparse ``dest`` is the field's name).
DATA_FLAGS = (
    "dataset",
    "data_root",
    "mimic_root",
    "image_list",
    "data_dir",
    "synthetic_images",
    "image_size",
)
TRIAL_FLAGS = ("epochs", "encoder", "batch_size", "seed")
STUDY_FLAGS = ("study_name", "arms", "trials_per_arm", "search_space", "max_concurrent", "seeds",
               "cpus_per_trial", "gpus_per_trial", "address", "storage_path", "tracking_uri",
               "experiment", "optuna_storage")  # fmt: skip
SWITCHES = ("resume", "storage_is_shared", "sequential_arms", "verbose")  # only a True overrides
SINGLE_TRIAL_FLAGS = ("arm", "lr", "seg_ratio", "gamma", "out")  # one configuration, no search
ANALYSIS = {"verdict": "analysis.verdict", "tables": "analysis.tables",
            "figures": "analysis.figures", "doctor": "analysis.doctor",
            "report": "analysis.report"}  # fmt: skip
SUBCOMMANDS = {
    "study": "the study: every arm's Optuna search (+ seeds), report at the end (default)",
    "evidence": "the evidence plans (--plan evidence|scanning|data-efficiency|selection|border)",
    "predict": "classify one radiograph with a trained model and draw its maps",
    **{name: f"analysis of a study's record ({module})" for name, module in ANALYSIS.items()},
}


def _arm_names() -> list[str]:
    from trainables.model_sets import list_arms  # the registry; read only when an arm is named

    return list_arms()


class _ArmChoices:
    """The arm registry as argparse ``choices``, read on first use (not when parsing other flags)."""

    def __contains__(self, name: object) -> bool:
        return name in _arm_names()

    def __iter__(self) -> Iterator[str]:
        return iter(_arm_names())


def _arms(text: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    valid = _arm_names()
    unknown = [a for a in names if a not in valid]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown arm(s) {', '.join(map(repr, unknown)) or repr(text)}; valid: {', '.join(valid)}"
        )
    return names


def _preset_values(dest: str) -> str:
    """``demo 3, paper 35, smoke 1``: what each preset sets for a flag's field (short values only)."""
    out = []
    for name in list_presets():
        cfg = get_preset(name)
        section = cfg.trial if dest in TRIAL_FLAGS else cfg.data if dest in DATA_FLAGS else cfg
        value = getattr(section, dest, None)
        if value is None or value == () or "/" in str(value) or len(str(value)) > 24:
            return ""
        out.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
    return ", ".join(out)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows what the presets set for a flag (config flags), or its default (the others)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.dest in (*DATA_FLAGS, *TRIAL_FLAGS, *STUDY_FLAGS):
            values = _preset_values(action.dest)
            return f"{text} [{values}]" if values else text
        default = action.default
        shown = action.option_strings and default not in (None, False, [], argparse.SUPPRESS)
        if shown and "%(default)" not in text:
            text += f" (default: {default})"
        return text


class _Parser(argparse.ArgumentParser):
    """Lists the registered arms and the subcommands in ``--help`` only (parsing stays cheap)."""

    def format_help(self) -> str:
        subs = "\n".join(f"  {name:<9} {what}" for name, what in SUBCOMMANDS.items())
        self.epilog = (
            f"subcommands (gaze-study <subcommand> --help):\n{subs}\n"
            f"arms (--arms, --arm): {', '.join(_arm_names())}\n"
            f"search spaces (--search-space): {', '.join(list_spaces())}\n"
            "Flags left out take the preset's value; [brackets] show what each preset sets."
        )
        return super().format_help()


def _run_flags(p: argparse.ArgumentParser, default_preset: str) -> argparse._ArgumentGroup:
    g = p.add_argument_group("study")
    g.add_argument("--preset", default=default_preset, choices=list_presets(), help="named settings the flags below override (default %(default)s)")  # fmt: skip
    g.add_argument("--study-name", metavar="NAME", help="name of the study (Tune folder, MLflow tag; letters, digits, -_.); default <preset>-<time>; with --resume default the newest study of the preset")  # fmt: skip
    g.add_argument("--arms", type=_arms, metavar="A,B,...", help="comma-separated arms (default: the plan's)")  # fmt: skip
    g.add_argument("--max-concurrent", type=int, metavar="N", help="trials running at once (all arms together); default: every trial slot of the cluster, i.e. GPUs / --gpus-per-trial but at most CPUs / --cpus-per-trial. An autoscaling cluster has fewer nodes at the start: pass it there")  # fmt: skip
    g.add_argument("--seed", type=int, metavar="N", help="the study's seed: TPE samplers and search trials")  # fmt: skip
    g.add_argument("--resume", action="store_true", help="continue an interrupted study (it must exist, with the same settings and data); finished trials are not repeated")  # fmt: skip
    g.add_argument("--no-report", action="store_true", help="skip the analysis report at the end")
    g.add_argument("--verbose", action="store_true", help="Ray's own progress tables and every trial's output (default: one line per trial)")  # fmt: skip
    return g


def _common_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", metavar="NAME", help="dataset registry entry: egd-cxr (default), reflacx")  # fmt: skip
    g.add_argument("--data", dest="data_root", metavar="DIR", help="the dataset's folder (EGD-CXR: master_sheet.csv, fixations.csv; REFLACX: main_data/); default: its synthetic twin")  # fmt: skip
    g.add_argument("--mimic", dest="mimic_root", metavar="DIR", help="MIMIC-CXR root the dataset's image paths start from (default: --data)")  # fmt: skip
    g.add_argument("--image-list", metavar="CSV", help="filenames.csv-style list of dicom_ids to keep (the paper's 1,017)")  # fmt: skip
    g.add_argument("--synthetic-images", "--images", type=int, metavar="N", help="size of the synthetic twin generated when --data is not given")  # fmt: skip
    g.add_argument("--data-dir", metavar="DIR", help="where the synthetic twin and the preprocessing cache are written")  # fmt: skip
    g = p.add_argument_group("trials")
    g.add_argument("--epochs", type=int, metavar="N", help="epochs per trial")
    g.add_argument("--image-size", type=int, metavar="PX", help="square training size (a multiple of 32)")  # fmt: skip
    g.add_argument("--encoder", help="smp encoder name (e.g. efficientnet-b0, tu-<timm model>)")
    g.add_argument("--encoder-weights", metavar="WEIGHTS", help="'imagenet', a local .pth file, or 'none'")  # fmt: skip
    g.add_argument("--batch-size", type=int, metavar="N", help="training batch size")
    g.add_argument("--cpus-per-trial", type=float, metavar="N", help="Ray CPUs per trial (torch threads)")  # fmt: skip
    g.add_argument("--gpus-per-trial", type=float, metavar="N", help="Ray GPUs per trial; 0.5 puts two trials on a GPU; default 1 on a cluster with GPUs, 0 on one without")  # fmt: skip
    g = p.add_argument_group("cluster and tracking")
    g.add_argument("--address", help="Ray cluster to join ('auto' on the head node); default: local Ray")  # fmt: skip
    g.add_argument("--storage-path", metavar="PATH", help="Tune storage for checkpoints and experiment state: s3://, gs:// or a path every node mounts; default <project>/ray_results")  # fmt: skip
    g.add_argument("--storage-is-shared", action="store_true", help="the local --storage-path is a shared mount (NFS) on every node")  # fmt: skip
    g.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (http://<head>:5000 on a cluster); default $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db")  # fmt: skip
    g.add_argument("--experiment", metavar="NAME", help="MLflow experiment name (letters, digits, -_.)")  # fmt: skip
    g = p.add_argument_group("any setting")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings", help="set any config field without a flag of its own, e.g. data.gaze_sigma=100, trial.bn_mode=frozen, trial.weight_decay=1e-4, placement.device=cpu, grace_period=2 (repeatable; applied after the flags)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """``gaze-study [study]``: the study's flags."""
    p = _Parser(prog="gaze-study", formatter_class=_HelpFormatter, description=(
        "Distributed hyperparameter study of gaze-guided U-Nets (Ray Tune + Optuna + MLflow).\n"
        "Without flags: the demo preset (the paper's arms, synthetic data, a 2-core CPU)."))  # fmt: skip
    p.add_argument("--version", action="version", version=f"gaze-study {_version()}")
    g = _run_flags(p, "demo")
    g.add_argument("--smoke-test", action="store_true", help="tiny everything (the 'smoke' preset): two arms, one epoch, 32 px")  # fmt: skip
    g.add_argument("--trials-per-arm", type=int, metavar="N", help="Optuna trials per arm (baseline first)")  # fmt: skip
    g.add_argument("--search-space", choices=list_spaces(), metavar="NAME", help="search_spaces registry name")  # fmt: skip
    g.add_argument("--sequential-arms", action="store_true", help="search the arms one after another (an arm starts once the one before it ended) instead of side by side (a free slot goes to the arm with the most work left)")  # fmt: skip
    g.add_argument("--seeds", type=int, metavar="N", help="re-run each arm's best config with N more seeds")  # fmt: skip
    g.add_argument("--optuna-storage", metavar="URL", help="Optuna RDB URL (e.g. sqlite:////abs/optuna.db) to persist each arm's Optuna study for optuna-dashboard")  # fmt: skip
    _common_flags(p)
    g = p.add_argument_group("single trial (no Ray; debugger-friendly)", "--arm, --lr, --seg-ratio, --gamma and --out set one configuration, so they need\n--single-trial; a study searches lr, gamma and seg_ratio (see --search-space)\nand refuses them.")  # fmt: skip
    g.add_argument("--single-trial", action="store_true", help="train one configuration in this process and print its test AUCs")  # fmt: skip
    g.add_argument("--arm", choices=_ArmChoices(), metavar="ARM", help="arm of the single trial")
    g.add_argument("--lr", type=float, help="learning rate (> 0)")
    g.add_argument("--seg-ratio", type=float, metavar="R", help="set 3 ratio r, in [0, 1]")
    g.add_argument("--gamma", type=float, help="classification weight gamma, in (0, 1]")
    g.add_argument("--out", metavar="DIR", help="output folder of the single trial (default outputs/single-trial/<arm>-<time>)")  # fmt: skip
    return p


def build_evidence_parser() -> argparse.ArgumentParser:
    """``gaze-study evidence``: the evidence plan's flags and the shared ones."""
    from study import evidence

    p = _Parser(prog="gaze-study evidence", formatter_class=_HelpFormatter, description=(
        "The evidence plans on the synthetic twins (--plan): evidence (every arm x seeds, clean vs\n"
        "shortcut twin), scanning (the same over scanning readers), data-efficiency (AUC against\n"
        "training-set size), selection (rules that pick hyperparameters without the test set),\n"
        "border (the border shortcut on calibration seeds)."))  # fmt: skip
    _run_flags(p, "evidence")
    evidence.add_arguments(p)
    _common_flags(p)
    return p


def build_config(args: argparse.Namespace, command: Sequence[str] = ()) -> StudyConfig:
    """The StudyConfig of the parsed flags: the preset, then every flag that was given.

    Raises:
        ConfigError: a value breaks its rule (``parse_config`` turns it into a flag error).
    """
    cfg = get_preset("smoke" if getattr(args, "smoke_test", False) else args.preset)
    if getattr(args, "quick", False) and args.preset == "evidence":
        cfg = get_preset("evidence-quick")
    trial = {k: getattr(args, k, None) for k in TRIAL_FLAGS}
    if getattr(args, "single_trial", False):
        trial.update(arm=args.arm, lr=args.lr, seg_ratio=args.seg_ratio, gamma=args.gamma)
    cfg = with_overrides(
        cfg,
        data={k: getattr(args, k, None) for k in DATA_FLAGS},
        trial=trial,
        **{k: getattr(args, k, None) for k in STUDY_FLAGS},
        **{k: True for k in SWITCHES if getattr(args, k, False)},
    )
    if args.encoder_weights is not None:
        # Set directly: "--encoder-weights none" must clear a preset's "imagenet", and
        # with_overrides drops None values (it reads None as "flag not given").
        weights = None if args.encoder_weights.lower() == "none" else args.encoder_weights
        cfg = dataclasses.replace(
            cfg, trial=dataclasses.replace(cfg.trial, encoder_weights=weights)
        )
    cfg = apply_settings(cfg, args.settings)
    return dataclasses.replace(
        cfg, report=not args.no_report and cfg.report, command=tuple(command)
    )


def _flag(parser: argparse.ArgumentParser, dest: str) -> str | None:
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return action.option_strings[0]
    return None


def parse_config(parser: argparse.ArgumentParser, argv: Sequence[str], command: Sequence[str] = ()) -> tuple[argparse.Namespace, StudyConfig]:  # fmt: skip
    """Parse ``argv`` and build its StudyConfig; every problem is an argparse error (exit 2)."""
    args = parser.parse_args(argv)
    single = getattr(args, "single_trial", False)
    given = [d for d in SINGLE_TRIAL_FLAGS if getattr(args, d, None) is not None]
    if single and args.arm is None:
        parser.error("--single-trial needs --arm")
    if not single and given:
        parser.error(
            f"argument {_flag(parser, given[0])}: sets one configuration and needs --single-trial; "
            "a study searches lr, gamma and seg_ratio (choose the ranges with --search-space)"
        )
    if single and args.arms is not None:
        parser.error("argument --arms: a study flag; a single trial takes --arm")
    try:
        cfg = build_config(args, command)
    except ConfigError as err:
        flag = _flag(parser, err.field) or ("--set" if args.settings else None)
        parser.error(f"argument {flag}: {err}" if flag else f"invalid configuration: {err}")
    except ValueError as err:  # a malformed --set item
        parser.error(f"argument --set: {err}")
    return args, cfg


def _version() -> str:
    try:
        return version("gaze-unet-study")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _prog() -> str:
    # The resume hint repeats the command the way it was typed.
    return "gaze-study" if os.path.basename(sys.argv[0]) == "gaze-study" else "python -m study"


def _study(argv: list[str], prog: str) -> int:
    args, cfg = parse_config(build_parser(), argv, command=(prog, *argv))
    if args.single_trial:
        from study.single_trial import run_single_trial

        result = run_single_trial(cfg, arm=args.arm, out=args.out)
        return 0 if result.status == "ok" else 1
    from study.driver import run_study

    return run_study(cfg).exit_code


def _evidence(argv: list[str], prog: str) -> int:
    parser = build_evidence_parser()
    args, cfg = parse_config(parser, argv, command=(prog, "evidence", *argv))
    from study.driver import run_plan
    from study.evidence import build_plan

    try:  # --plan and its own flags (study.evidence.add_arguments)
        plan = build_plan(args, args.arms)
    except ValueError as err:
        parser.error(str(err))
    return run_plan(plan, cfg).exit_code


def _module_main(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).main(argv)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gaze-study`` / ``python -m study``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    sub = argv[0] if argv and argv[0] in SUBCOMMANDS else "study"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    if sub == "study":
        return _study(rest, prog)
    if sub == "evidence":
        return _evidence(rest, prog)
    if sub == "predict":
        return _module_main("study.predict")(rest)
    return _module_main(ANALYSIS[sub])(rest)
