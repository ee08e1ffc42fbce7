"""Command line of the study: parse flags, build one StudyConfig (preset + overrides), call one function."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from study.presets import StudyConfig, get_preset, list_presets, with_overrides


def _arms(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gaze-study",
        description="Distributed hyperparameter study of gaze-guided U-Nets (Ray Tune + Optuna + "
        "MLflow). Without flags: the demo preset (all arms, synthetic data, 2-core CPU).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("study")
    g.add_argument(
        "--preset",
        default="demo",
        choices=list_presets(),
        help="named settings the flags below override",
    )
    g.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny everything (the 'smoke' preset): two arms, one epoch, 32 px",
    )
    g.add_argument(
        "--study-name",
        help="name of the study (Tune folder, MLflow tag); "
        "default <preset>-<time>; with --resume default the newest study of the preset",
    )
    g.add_argument("--arms", type=_arms, help="comma-separated arms (default: all registered arms)")
    g.add_argument(
        "--trials-per-arm", type=int, help="Optuna trials per arm (baseline point first)"
    )
    g.add_argument("--search-space", help="search_spaces registry name (paper, demo, lr-only)")
    g.add_argument(
        "--max-concurrent",
        type=int,
        help="trials running at once (all arms together; the one arm searched with "
        "--sequential-arms); None: every trial slot of the cluster, i.e. GPUs / --gpus-per-trial "
        "but at most CPUs / --cpus-per-trial (CPUs / --cpus-per-trial without GPUs). An "
        "autoscaling cluster has fewer nodes at the start: pass it there",
    )
    g.add_argument(
        "--sequential-arms",
        action="store_true",
        help="search the arms one after another (the old order) instead of side by side. Side "
        "by side, every arm keeps its own Optuna study and ASHA; the arms start in turn, then a "
        "free slot goes to the arm with the most work left (trials not started x its measured "
        "epoch time), so no slot idles while any arm has trials left",
    )
    g.add_argument("--seed", type=int, help="seed of the TPE sampler and of the search trials")
    g.add_argument("--seeds", type=int, help="re-run each arm's best config with N further seeds")
    g.add_argument(
        "--optuna-storage",
        help="Optuna RDB URL (e.g. sqlite:////abs/optuna.db) to "
        "persist each arm's Optuna study for optuna-dashboard",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study; finished trials are not repeated",
    )
    g.add_argument(
        "--no-report",
        action="store_true",
        help="skip the analysis report (tables, figures, report.html) at the end",
    )

    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        dest="egd_root",
        help="EGD-CXR root (master_sheet.csv, fixations.csv); default: the synthetic twin",
    )
    g.add_argument(
        "--mimic", dest="mimic_root", help="MIMIC-CXR root the master sheet's paths start from"
    )
    g.add_argument(
        "--image-list", help="filenames.csv-style list of dicom_ids to keep (the paper's 1,017)"
    )
    g.add_argument(
        "--synthetic-images",
        type=int,
        help="size of the synthetic twin generated when --data is not given",
    )
    g.add_argument(
        "--data-dir", help="where the synthetic twin and the preprocessing cache are written"
    )

    g = p.add_argument_group("trials")
    g.add_argument("--epochs", type=int, help="epochs per trial")
    g.add_argument("--image-size", type=int, help="square training size in pixels")
    g.add_argument("--encoder", help="smp encoder name (e.g. efficientnet-b0, tu-<timm model>)")
    g.add_argument("--encoder-weights", help="'imagenet', a local .pth file, or 'none'")
    g.add_argument("--batch-size", type=int, help="training batch size")
    g.add_argument("--cpus-per-trial", type=float, help="Ray CPUs per trial (torch threads)")
    g.add_argument(
        "--gpus-per-trial",
        type=float,
        help="Ray GPUs per trial; 0.5 puts two trials on a GPU; None: 1 on a cluster with GPUs, "
        "0 on one without",
    )

    g = p.add_argument_group("cluster and tracking")
    g.add_argument(
        "--address", help="Ray cluster to join ('auto' on the head node); default: local Ray"
    )
    g.add_argument(
        "--storage-path",
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
        help="MLflow tracking URI (http://<head>:5000 on a cluster); "
        "default sqlite:///<project>/mlflow.db",
    )
    g.add_argument("--experiment", help="MLflow experiment name")

    g = p.add_argument_group("single trial (no Ray; debugger-friendly)")
    g.add_argument(
        "--single-trial",
        action="store_true",
        help="train one configuration in this process and print its test AUCs",
    )
    g.add_argument("--arm", help="arm of the single trial (see trainables.model_sets.list_arms())")
    g.add_argument("--lr", type=float, help="learning rate of the single trial")
    g.add_argument("--seg-ratio", type=float, help="set 3 ratio r of the single trial")
    g.add_argument("--gamma", type=float, help="classification weight gamma of the single trial")
    g.add_argument(
        "--out",
        help="output folder of the single trial (default outputs/single-trial/<arm>-<time>)",
    )
    return p


def build_config(args: argparse.Namespace) -> StudyConfig:
    """The StudyConfig of the parsed flags: the preset, then every flag that was given."""
    cfg = get_preset("smoke" if args.smoke_test else args.preset)
    weights = args.encoder_weights
    if weights is not None and weights.lower() == "none":
        weights = None
    cfg = with_overrides(
        cfg,
        data={
            "egd_root": args.egd_root,
            "mimic_root": args.mimic_root,
            "image_list": args.image_list,
            "data_dir": args.data_dir,
            "synthetic_images": args.synthetic_images,
            "image_size": args.image_size,
        },
        trial={
            "epochs": args.epochs,
            "image_size": args.image_size,
            "encoder": args.encoder,
            "batch_size": args.batch_size,
        },
        study_name=args.study_name,
        arms=args.arms,
        trials_per_arm=args.trials_per_arm,
        search_space=args.search_space,
        max_concurrent=args.max_concurrent,
        seed=args.seed,
        seeds=args.seeds,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        address=args.address,
        storage_path=args.storage_path,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        optuna_storage=args.optuna_storage,
    )
    if args.encoder_weights is not None:
        # Set directly: "--encoder-weights none" must clear a preset's "imagenet", and
        # with_overrides drops None values (it reads None as "flag not given").
        cfg = dataclasses.replace(
            cfg, trial=dataclasses.replace(cfg.trial, encoder_weights=weights)
        )
    flags = {
        "resume": args.resume,
        "storage_is_shared": args.storage_is_shared,
        "sequential_arms": args.sequential_arms,
    }
    cfg = with_overrides(cfg, **{k: v for k, v in flags.items() if v})
    return dataclasses.replace(cfg, report=False) if args.no_report else cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gaze-study`` / ``python -m study``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = build_config(args)
    if args.single_trial:
        if not args.arm:
            parser.error("--single-trial needs --arm")
        from study.single_trial import run_single_trial

        result = run_single_trial(
            cfg, arm=args.arm, lr=args.lr, seg_ratio=args.seg_ratio, gamma=args.gamma, out=args.out
        )
        return 0 if result.status == "ok" else 1
    from study.driver import run_study

    summary = run_study(cfg)
    return 130 if summary.interrupted else 0
