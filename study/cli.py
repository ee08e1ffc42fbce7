"""Command line of the study: parse flags, build one StudyConfig (preset + overrides), call one function.

Parsing imports nothing heavy (no torch, Ray, MLflow): ``--help`` and flag errors come back at once.
Every value rule lives on the typed configs (``__post_init__``); a ``ConfigError`` is reported here as
an argparse error naming the flag, before any data is read or Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence

from search_spaces import list_spaces
from study.presets import (
    StudyConfig,
    apply_settings,
    get_preset,
    list_presets,
    with_overrides,
)
from trainables.config import ConfigError

# The flags that override one config field each (the argparse ``dest`` is the field's name).
DATA_FLAGS = ("egd_root", "mimic_root", "image_list", "data_dir", "synthetic_images", "image_size")
TRIAL_FLAGS = ("epochs", "encoder", "batch_size")
STUDY_FLAGS = (
    "study_name",
    "arms",
    "trials_per_arm",
    "search_space",
    "max_concurrent",
    "seed",
    "seeds",
    "cpus_per_trial",
    "gpus_per_trial",
    "address",
    "storage_path",
    "tracking_uri",
    "experiment",
    "optuna_storage",
)
SWITCHES = (
    "resume",
    "storage_is_shared",
    "sequential_arms",
    "verbose",
)  # store_true flags: only a True overrides
SINGLE_TRIAL_FLAGS = ("arm", "lr", "seg_ratio", "gamma", "out")  # one configuration, no search


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
    """Shows what the presets set for a flag instead of argparse's "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.dest in (*DATA_FLAGS, *TRIAL_FLAGS, *STUDY_FLAGS):
            values = _preset_values(action.dest)
            if values:
                text += f" [{values}]"
        return text


class _Parser(argparse.ArgumentParser):
    """Lists the registered arms in ``--help`` only, so that parsing stays cheap."""

    def format_help(self) -> str:
        self.epilog = (
            f"arms (--arms, --arm): {', '.join(_arm_names())}\n"
            f"search spaces (--search-space): {', '.join(list_spaces())}\n"
            "Flags left out take the preset's value; [brackets] show what each preset sets."
        )
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="gaze-study",
        description="Distributed hyperparameter study of gaze-guided U-Nets (Ray Tune + Optuna +\n"
        "MLflow). Without flags: the demo preset (all arms, synthetic data, a 2-core CPU).\n"
        "The same command: gaze-study, python -m study, python study/run.py.",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("study")
    g.add_argument(
        "--preset",
        default="demo",
        choices=list_presets(),
        help="named settings the flags below override (default %(default)s)",
    )
    g.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny everything (the 'smoke' preset): two arms, one epoch, 32 px",
    )
    g.add_argument(
        "--study-name",
        metavar="NAME",
        help="name of the study (Tune folder, MLflow tag; letters, digits, -_.); "
        "default <preset>-<time>; with --resume default the newest study of the preset",
    )
    g.add_argument(
        "--arms", type=_arms, metavar="A,B,...", help="comma-separated arms (default: all)"
    )
    g.add_argument(
        "--trials-per-arm", type=int, metavar="N", help="Optuna trials per arm (baseline first)"
    )
    g.add_argument(
        "--search-space", choices=list_spaces(), metavar="NAME", help="search_spaces registry name"
    )
    g.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="trials running at once (all arms together; the one arm searched with "
        "--sequential-arms); default: every trial slot of the cluster, i.e. GPUs / "
        "--gpus-per-trial but at most CPUs / --cpus-per-trial (CPUs / --cpus-per-trial without "
        "GPUs). An autoscaling cluster has fewer nodes at the start: pass it there",
    )
    g.add_argument(
        "--sequential-arms",
        action="store_true",
        help="search the arms one after another (the old order) instead of side by side. Side "
        "by side, every arm keeps its own Optuna study and ASHA; the arms start in turn, then a "
        "free slot goes to the arm with the most work left (trials not started x its measured "
        "epoch time), so no slot idles while any arm has trials left",
    )
    g.add_argument(
        "--seed", type=int, metavar="N", help="seed of the TPE sampler and the search trials"
    )
    g.add_argument(
        "--seeds", type=int, metavar="N", help="re-run each arm's best config with N more seeds"
    )
    g.add_argument(
        "--optuna-storage",
        metavar="URL",
        help="Optuna RDB URL (e.g. sqlite:////abs/optuna.db) to "
        "persist each arm's Optuna study for optuna-dashboard",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study (it must exist); finished trials are not repeated",
    )
    g.add_argument(
        "--no-report",
        action="store_true",
        help="skip the analysis report (tables, figures, report.html) at the end",
    )
    g.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's own progress tables and every trial's output (default: one line per trial)",
    )

    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        dest="egd_root",
        metavar="DIR",
        help="EGD-CXR root (master_sheet.csv, fixations.csv); default: the synthetic twin",
    )
    g.add_argument(
        "--mimic",
        dest="mimic_root",
        metavar="DIR",
        help="MIMIC-CXR root the master sheet's paths start from",
    )
    g.add_argument(
        "--image-list",
        metavar="CSV",
        help="filenames.csv-style list of dicom_ids to keep (the paper's 1,017)",
    )
    g.add_argument(
        "--synthetic-images",
        type=int,
        metavar="N",
        help="size of the synthetic twin generated when --data is not given",
    )
    g.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the synthetic twin and the preprocessing cache are written",
    )

    g = p.add_argument_group("trials")
    g.add_argument("--epochs", type=int, metavar="N", help="epochs per trial")
    g.add_argument(
        "--image-size", type=int, metavar="PX", help="square training size (a multiple of 32)"
    )
    g.add_argument("--encoder", help="smp encoder name (e.g. efficientnet-b0, tu-<timm model>)")
    g.add_argument(
        "--encoder-weights", metavar="WEIGHTS", help="'imagenet', a local .pth file, or 'none'"
    )
    g.add_argument("--batch-size", type=int, metavar="N", help="training batch size")
    g.add_argument(
        "--cpus-per-trial", type=float, metavar="N", help="Ray CPUs per trial (torch threads)"
    )
    g.add_argument(
        "--gpus-per-trial",
        type=float,
        metavar="N",
        help="Ray GPUs per trial; 0.5 puts two trials on a GPU; default 1 on a cluster with "
        "GPUs, 0 on one without",
    )

    g = p.add_argument_group("cluster and tracking")
    g.add_argument(
        "--address", help="Ray cluster to join ('auto' on the head node); default: local Ray"
    )
    g.add_argument(
        "--storage-path",
        metavar="PATH",
        help="Tune storage for checkpoints and experiment state: s3://, "
        "gs:// or a path every node mounts; default <project>/ray_results",
    )
    g.add_argument(
        "--storage-is-shared",
        action="store_true",
        help="the local --storage-path is a shared mount (NFS) on every node",
    )
    g.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (http://<head>:5000 on a cluster); "
        "default sqlite:///<project>/mlflow.db",
    )
    g.add_argument(
        "--experiment", metavar="NAME", help="MLflow experiment name (letters, digits, -_.)"
    )

    g = p.add_argument_group("any setting")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="settings",
        help="set any config field without a flag of its own, e.g. data.gaze_sigma=100, "
        "data.split_file=split.csv, trial.bn_mode=frozen, trial.weight_decay=1e-4, "
        "grace_period=2 (repeatable; applied after the flags)",
    )

    g = p.add_argument_group(
        "single trial (no Ray; debugger-friendly)",
        "--arm, --lr, --seg-ratio, --gamma and --out set one configuration, so they need\n"
        "--single-trial; a study searches lr, gamma and seg_ratio (see --search-space)\n"
        "and refuses them.",
    )
    g.add_argument(
        "--single-trial",
        action="store_true",
        help="train one configuration in this process and print its test AUCs",
    )
    g.add_argument("--arm", choices=_ArmChoices(), metavar="ARM", help="arm of the single trial")
    g.add_argument("--lr", type=float, help="learning rate (> 0)")
    g.add_argument("--seg-ratio", type=float, metavar="R", help="set 3 ratio r, in [0, 1]")
    g.add_argument("--gamma", type=float, help="classification weight gamma, in (0, 1]")
    g.add_argument(
        "--out",
        metavar="DIR",
        help="output folder of the single trial (default outputs/single-trial/<arm>-<time>)",
    )
    return p


def build_config(args: argparse.Namespace, command: Sequence[str] = ()) -> StudyConfig:
    """The StudyConfig of the parsed flags: the preset, then every flag that was given.

    Raises:
        ConfigError: a value breaks its rule (``parse_config`` turns it into a flag error).
    """
    cfg = get_preset("smoke" if args.smoke_test else args.preset)
    trial = {k: getattr(args, k) for k in TRIAL_FLAGS}
    if args.single_trial:
        trial.update(arm=args.arm, lr=args.lr, seg_ratio=args.seg_ratio, gamma=args.gamma)
    cfg = with_overrides(
        cfg,
        data={k: getattr(args, k) for k in DATA_FLAGS},
        trial=trial,
        **{k: getattr(args, k) for k in STUDY_FLAGS},
        **{k: True for k in SWITCHES if getattr(args, k)},
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


def parse_config(
    parser: argparse.ArgumentParser, argv: Sequence[str], command: Sequence[str] = ()
) -> tuple[argparse.Namespace, StudyConfig]:
    """Parse ``argv`` and build its StudyConfig; every problem is an argparse error (exit 2)."""
    args = parser.parse_args(argv)
    given = [d for d in SINGLE_TRIAL_FLAGS if getattr(args, d) is not None]
    if args.single_trial and args.arm is None:
        parser.error("--single-trial needs --arm")
    if not args.single_trial and given:
        parser.error(
            f"argument {_flag(parser, given[0])}: sets one configuration and needs --single-trial; "
            "a study searches lr, gamma and seg_ratio (choose the ranges with --search-space)"
        )
    if args.single_trial and args.arms is not None:
        parser.error("argument --arms: a study flag; a single trial takes --arm")
    try:
        cfg = build_config(args, command)
    except ConfigError as err:
        flag = _flag(parser, err.field) or ("--set" if args.settings else None)
        parser.error(f"argument {flag}: {err}" if flag else f"invalid configuration: {err}")
    except ValueError as err:  # a malformed --set item
        parser.error(f"argument --set: {err}")
    return args, cfg


def _prog() -> str:
    # The resume hint repeats the command the way it was typed.
    return "gaze-study" if os.path.basename(sys.argv[0]) == "gaze-study" else "python -m study"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gaze-study`` / ``python -m study``; returns the process exit code.

    ``gaze-study predict ...`` runs ``study.predict`` (inference on one DICOM) and
    ``gaze-study evidence ...`` runs ``study.evidence`` (the shortcut experiment) instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        from study.predict import main as predict_main  # torch only past this point

        return predict_main(argv[1:])
    if argv[:1] == ["evidence"]:
        from study.evidence import main as evidence_main

        return evidence_main(argv[1:])
    args, cfg = parse_config(build_parser(), argv, command=(_prog(), *argv))
    if args.single_trial:
        from study.single_trial import run_single_trial

        result = run_single_trial(cfg, arm=args.arm, out=args.out)
        return 0 if result.status == "ok" else 1
    from study.driver import run_study

    summary = run_study(cfg)
    return 130 if summary.interrupted else 0
