"""The evidence experiment: does gaze guidance make a model right for the right reasons?

    python -m study.evidence              # every arm x 5 seeds, clean twin and shortcut twin
    python -m study.evidence --quick      # 4 arms x 3 seeds (a few minutes)

Two synthetic twins with the same images and gaze: a clean one, and one whose training and
validation images carry a class-correlated shortcut away from the findings, where the radiologist
never looks (``--shortcut marker|intensity|border``), broken in its test split. Every arm trains
with fixed hyperparameters and several seeds on both (a Ray Tune grid per twin, one MLflow run per
trial, tagged ``stage=evidence`` and ``twin``). ``analysis.evidence`` then reports, per arm, the
test AUC on both twins, the AUC the shortcut costs, map-vs-gaze agreement, and paired differences
against ``unet`` (and against ``no-seg`` for the maps) with 95% CIs over seeds.

No hyperparameter search here: validation is contaminated by the shortcut too, so selecting on it
would favour the shortcut -- the situation a real study is in.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from study.presets import StudyConfig, get_preset
from trainables.config import DataConfig

TWINS: tuple[str, ...] = ("clean", "shortcut")
# The default arms: the paper's eight, Ross et al.'s RRR, its scale-free variant, Grad-CAM in the
# loss. gbp-share and set1-gradcam-mid are diagnostic arms (--arms). --quick: the two baselines,
# the paper's strongest arm in the full run and the loss that resisted the shortcut, 3 seeds.
DEFAULT_ARMS: tuple[str, ...] = (
    "no-seg", "unet", "set1-gbp", "set1-deconv", "set2-gbp", "set2-deconv", "set3-gbp",
    "set3-deconv", "rrr", "rrr-share", "set1-gradcam",
)  # fmt: skip
QUICK_ARMS: tuple[str, ...] = ("no-seg", "unet", "set1-gbp", "rrr-share")


@dataclass(frozen=True)
class EvidenceConfig:
    """What the evidence experiment runs."""

    study: StudyConfig  # trial settings, the clean twin, tracking, storage and Ray
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # trial seeds; runs are paired across arms by seed
    shortcut: str = "marker"  # trainables.data.synthetic.shortcuts registry name
    shortcut_fraction: float = 0.98  # train/val images carrying the shortcut
    shortcut_test: str = "shuffled"  # test images: the shortcut of a random class ("absent": none)
    # train/val/test shares of both twins: AUCs read off ~40% of the images, not the paper's 10%
    # (24 test images at 240 made seed-to-seed differences larger than the effects measured)
    split_fractions: tuple[float, float, float] = (0.5, 0.1, 0.4)

    def twin(self, name: str) -> DataConfig:
        """The DataConfig of twin ``name`` ("clean" or "shortcut")."""
        data = dataclasses.replace(
            self.study.data, synthetic_shortcut=None, split_fractions=self.split_fractions
        )
        if name == "clean":
            return data
        if name == "shortcut":
            return dataclasses.replace(
                data,
                synthetic_shortcut=self.shortcut,
                synthetic_shortcut_fraction=self.shortcut_fraction,
                synthetic_shortcut_test=self.shortcut_test,  # type: ignore[arg-type]
            )
        raise KeyError(f"unknown twin {name!r}; valid: {', '.join(TWINS)}")


@dataclass
class EvidenceSummary:
    study_name: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    interrupted: bool = False
    report: str | None = None
    table: str = ""
    wall_s: float = 0.0


def run_evidence(cfg: EvidenceConfig) -> EvidenceSummary:
    """Train every arm with every seed on both twins, then write the evidence report.

    Returns:
        EvidenceSummary (``interrupted`` after Ctrl-C; rerun with ``resume`` to continue).
    """
    import ray

    from study import console, progress, tuner
    from study.driver import _connect_ray
    from study.reconcile import close_open_trials
    from study.resources import resolve_resources
    from trainables import tracking
    from trainables.data.prepare import prepare_data
    from trainables.model_sets import get_arm
    from trainables.record import TAG_KIND
    from trainables.trainable import DATASET_KEY, StudyContext

    t0 = time.perf_counter()
    console.quiet_console(cfg.study.verbose)
    arms = list(cfg.arms)
    for arm in arms:
        get_arm(arm)
    scfg = cfg.study
    if scfg.data.egd_root is not None:
        raise ValueError("the evidence experiment runs on the synthetic twins (no --data)")
    name = scfg.study_name or f"evidence-{time.strftime('%Y%m%d-%H%M%S')}"
    scfg = dataclasses.replace(scfg, study_name=name)
    uri = tracking.resolve_tracking_uri(scfg.tracking_uri, scfg.project_dir)
    experiment_id = tracking.get_or_create_experiment(uri, scfg.experiment)
    owns_ray = _connect_ray(scfg)
    try:
        scfg = resolve_resources(scfg, ray.cluster_resources())
        datasets = {twin: prepare_data(cfg.twin(twin)) for twin in TWINS}
        for twin, data in datasets.items():
            print(f"[evidence] {twin} twin: {data.summary()}", flush=True)
        ctx = tracking.start_study_run(
            uri,
            experiment_id,
            study_name=name,
            preset=scfg.preset,
            params={
                "kind": "evidence",
                "arms": ",".join(arms),
                "seeds": ",".join(map(str, cfg.seeds)),
                "shortcut": cfg.shortcut,
                "shortcut_fraction": cfg.shortcut_fraction,
                "shortcut_test": cfg.shortcut_test,
                "split_fractions": ",".join(f"{f:g}" for f in cfg.split_fractions),
                "epochs": scfg.trial.epochs,
                "image_size": scfg.data.image_size,
                "images": scfg.data.synthetic_images,
                "encoder": scfg.trial.encoder,
                "lr": scfg.trial.lr,
            },
            config={"evidence": dataclasses.asdict(cfg)},
            resume=scfg.resume,
        )
        tracking.set_run_tags(ctx, {TAG_KIND: "evidence"})
        summary = EvidenceSummary(name, uri, scfg.experiment, ctx.parent_run_id)
        # One Tune grid over twin x arm x seed: one experiment to resume, trial actors reused.
        outcome = tuner.run_grid(
            scfg,
            "evidence",
            scfg.trial,
            {DATASET_KEY: list(TWINS), "arm": arms, "seed": list(cfg.seeds)},
            datasets,
            StudyContext(ctx, "evidence", scfg.cpus_per_trial),
            callbacks=[
                progress.TuneProgress(name, progress.ProgressBoard(arms, 2 * len(cfg.seeds)))
            ],
        )
        if outcome.interrupted:
            tracking.end_study_run(ctx, "KILLED")
            summary.interrupted = True
            print(f"[evidence] interrupted; continue with --resume --study-name {name}")
            return summary
        close_open_trials(ctx, outcome, "evidence")
        from analysis.report import write_report

        out_dir = Path(scfg.project_dir) / "outputs" / "evidence" / name
        # The report of an evidence study is the evidence page (logged to the parent run too).
        summary.report = str(write_report(uri, scfg.experiment, out_dir, parent=ctx.parent_run_id))
        summary.table = (out_dir / "evidence.md").read_text()
        tracking.end_study_run(ctx, "FINISHED")
    finally:
        if owns_ray:
            ray.shutdown()
    summary.wall_s = time.perf_counter() - t0
    print("\n" + summary.table, flush=True)
    print(f"\nReport: {summary.report}\n[evidence] {name} finished in {summary.wall_s:.0f} s")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m study.evidence",
        description="The evidence experiment: every arm x several seeds on a clean and a shortcut "
        "synthetic twin; reports whether gaze guidance resists the shortcut.",
    )
    p.add_argument("--quick", action="store_true", help="the small form (a few minutes on a CPU)")
    p.add_argument("--arms", help="comma-separated arms (default: the paper's, rrr, rrr-share, "
                   "set1-gradcam; --quick: no-seg, unet, set1-gbp, rrr-share)")  # fmt: skip
    p.add_argument("--seeds", type=int, help="number of seeds (default 5; --quick 3)")
    p.add_argument("--shortcut", default="marker", help="shortcut kind: marker, intensity, border")
    p.add_argument("--shortcut-fraction", type=float, default=0.98, help="train/val images with it")
    p.add_argument(
        "--shortcut-test", choices=("shuffled", "absent"), default="shuffled",
        help="test images: a random class's shortcut, or none",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, help="epochs per trial")
    p.add_argument("--images", type=int, help="images of each twin")
    p.add_argument("--study-name", help="name (default evidence-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default sqlite:///<project>/mlflow.db)"
    )
    p.add_argument("--storage-path", help="Tune storage (default <project>/ray_results)")
    p.add_argument("--data-dir", help="where the twins and caches are written")
    p.add_argument("--address", help="Ray cluster to join (default: local Ray)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
        help="any config field, as for gaze-study (e.g. trial.rrr_lambda=1; repeatable)",
    )  # fmt: skip
    return p


def build_config(args: argparse.Namespace) -> EvidenceConfig:
    from study.presets import apply_settings, with_overrides

    study = get_preset("evidence-quick" if args.quick else "evidence")
    study = with_overrides(
        study,
        data={"synthetic_images": args.images, "data_dir": args.data_dir},
        trial={"epochs": args.epochs},
        study_name=args.study_name,
        tracking_uri=args.tracking_uri,
        storage_path=args.storage_path,
        address=args.address,
        resume=args.resume or None,
    )
    study = apply_settings(study, args.settings)
    n_seeds = args.seeds or (3 if args.quick else 5)
    arms = tuple(a.strip() for a in (args.arms or "").split(",") if a.strip())
    arms = arms or (QUICK_ARMS if args.quick else DEFAULT_ARMS)
    return EvidenceConfig(
        study=study,
        arms=arms,
        seeds=tuple(range(n_seeds)),
        shortcut=args.shortcut,
        shortcut_fraction=args.shortcut_fraction,
        shortcut_test=args.shortcut_test,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = run_evidence(build_config(args))
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
