"""A whole study's schedule on a local Ray cluster of simulated GPUs, run by the real driver.

    python -m benchmarks.cluster_sim                          # 1, 4, 8, 16 GPUs; steps timed here
    python -m benchmarks.cluster_sim --step-times steps.json  # steps from `benchmarks.step --json`
    python -m benchmarks.cluster_sim --gpus 8 --epoch-wall 0.5

For each GPU count it starts a ``ray.cluster_utils.Cluster`` whose worker nodes carry simulated GPUs
(``num_gpus`` resources; torch sees none, Ray schedules them all the same) and runs
``study.driver.run_study`` -- the real Tuner, OptunaSearch, ASHA and MLflow sqlite store -- twice:
with the design before issue 13 (arms one after another, at most ``--in-turn-max-concurrent``
trials of an arm at once: the paper preset's 4) and with the arms side by side (the default now,
trials at once from the cluster). Trials are simulated (``benchmarks.sim_trial``, injected through
``run_study(trainable=...)``): each epoch sleeps the arm's epoch time divided by the speed-up and
reports a validation AUC from a seeded model of learning curves, so ASHA stops some trials.

Printed per run: the makespan of the search (first epoch start to last epoch end of each Tune
experiment, added up -- the driver's time between the in-turn design's experiments is left out, in
its favour -- and scaled back by the speed-up), GPU-slot utilisation (busy slot-seconds / (slots x
makespan); gaps between epochs and between trials, Tune's overhead included, count as idle), the
share of trial time spent between epochs (Tune's fixed cost per report, which the speed-up
magnifies), trials that ran every epoch / were stopped by ASHA, and the projected paper-scale study
time (8 arms x 20 trials x 35 epochs, 1,017 images): the makespan times the ratio of the paper
study's work to the simulated one's, both counted with the ASHA-expected epochs per trial -- the
makespan itself when the simulated study is paper-scale (the default).

Epoch times (``benchmarks.study_work``) come from ``benchmarks.step`` run here (this machine's CPU
or GPU, said in the output) or from a JSON file it wrote on another machine (``--step-times``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.sim_trial import END, START, SimModel, sim_trial
from benchmarks.study_work import (
    asha_expected_epochs,
    measure_step_times,
    read_step_times,
    search_work_s,
)

PROJECT_DIR = Path(__file__).resolve().parents[1]
PAPER_ARMS, PAPER_TRIALS, PAPER_EPOCHS, PAPER_GRACE, PAPER_ETA = 8, 20, 35, 5, 3
PAPER_IMAGES = 1017


@dataclass(frozen=True)
class RunStats:
    """What one simulated study did, in full-scale seconds."""

    slots: int
    makespan_s: float  # first epoch start to last epoch end, scaled back
    busy_s: float  # slot-seconds spent in epochs, scaled back
    in_trial_s: float  # slot-seconds from each trial's first epoch start to its last epoch end
    full: int  # trials that ran every epoch
    stopped: int  # trials ASHA stopped early
    errors: int
    wall_s: float  # the driver's wall time, unscaled (setup included)

    @property
    def utilisation(self) -> float:
        return self.busy_s / (self.slots * self.makespan_s) if self.makespan_s > 0 else 0.0

    @property
    def gaps(self) -> float:
        """Share of a trial's time between its epochs: Tune's cost per report, magnified by the
        speed-up (a real epoch is that much longer than this fixed cost)."""
        return 1 - self.busy_s / self.in_trial_s if self.in_trial_s > 0 else 0.0


def run_stats(summary, slots: int, epochs: int, speedup: float, gpus_per_trial: float) -> RunStats:
    """Slot use of the search stage from the trials' own reports (``sim/start``, ``sim/end``).

    The makespan adds up each search experiment's span (its first epoch start to its last epoch
    end): the driver's time between experiments (in turn: one per arm) is left out, which favours
    the in-turn design.
    """
    makespan, busy, in_trial, full, stopped, errors = 0.0, 0.0, 0.0, 0, 0, 0
    for name, outcome in summary.outcomes.items():
        if name.endswith("seeds"):
            continue
        starts, ends = [], []
        for result in outcome.results:
            errors += result.error is not None
            df = result.metrics_dataframe
            if df is None or START not in df:
                continue
            starts.append(df[START].min())
            ends.append(df[END].max())
            busy += float((df[END] - df[START]).sum()) * gpus_per_trial
            in_trial += float(df[END].max() - df[START].min()) * gpus_per_trial
            if len(df) >= epochs:
                full += 1
            else:
                stopped += 1
        makespan += max(ends) - min(starts) if starts else 0.0
    return RunStats(
        slots,
        makespan * speedup,
        busy * speedup,
        in_trial * speedup,
        full,
        stopped,
        errors,
        summary.wall_s,
    )


def sim_factory(model: SimModel):
    """A ``study.tuner.TrainableFactory`` of simulated trials (the data is not used)."""
    from ray import tune

    from study.resources import trial_resources

    def make(cfg, data, study):
        return tune.with_resources(
            tune.with_parameters(sim_trial, model=model), trial_resources(cfg)
        )

    return make


@contextlib.contextmanager
def _output_to(log):
    """Prints and the log handlers that write to the terminal (Ray's hold its stream) go to
    ``log``."""
    terminal = {id(sys.stdout), id(sys.stderr), id(sys.__stdout__), id(sys.__stderr__)}
    handlers = {
        id(h): h
        for name in ("ray", "ray.tune", "")
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.StreamHandler) and id(h.stream) in terminal
    }.values()
    streams = [(h, h.setStream(log)) for h in handlers]
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for h, stream in streams:
            h.setStream(stream)


@contextlib.contextmanager
def sim_cluster(gpus: int, gpus_per_node: int, cpus_per_gpu: float, log):
    """A local Ray cluster: a GPU-less head and ceil(gpus / gpus_per_node) nodes of simulated GPUs
    (Ray's start-up messages go to ``log``)."""
    import ray
    from ray.cluster_utils import Cluster

    store = 80 * 1024**2  # the simulation moves almost nothing through the object store
    with _output_to(log):
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "num_gpus": 0,
                "include_dashboard": False,
                "object_store_memory": store,
            },
        )
    try:
        with _output_to(log):
            left = gpus
            while left > 0:
                n = min(gpus_per_node, left)
                cluster.add_node(num_cpus=cpus_per_gpu * n, num_gpus=n, object_store_memory=store)
                left -= n
            path = os.pathsep.join(p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p)
            ray.init(
                address=cluster.address,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
                log_to_driver=False,
            )
        yield cluster
    finally:
        with _output_to(log):
            ray.shutdown()
            cluster.shutdown()


def study_config(args: argparse.Namespace, root: Path, name: str, *, in_turn: bool):
    """The paper preset at the simulated size, every output under ``root``."""
    from study.presets import get_preset
    from trainables.config import DataConfig

    paper = get_preset("paper")
    return dataclasses.replace(
        paper,
        study_name=name,
        arms=tuple(args.arms.split(",")),
        trials_per_arm=args.trials_per_arm,
        seeds=0,
        grace_period=args.grace,
        reduction_factor=args.eta,
        sequential_arms=in_turn,
        max_concurrent=args.in_turn_max_concurrent if in_turn else None,
        gpus_per_trial=None,
        cpus_per_trial=args.cpus_per_trial,
        max_failures=0,
        project_dir=str(root),
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        storage_path=str(root / "ray_results"),
        experiment="cluster-sim",
        report=False,
        # the driver prepares the data once; simulated trials never read it
        data=DataConfig(data_dir=str(root / "data"), synthetic_images=48, image_size=32),
        trial=dataclasses.replace(paper.trial, epochs=args.epochs, seed=args.seed),
    )


def simulate(args, root: Path, gpus: int, in_turn: bool, model: SimModel, log) -> RunStats:
    """One simulated study on the connected cluster; the driver's output goes to ``log``."""
    from study.driver import run_study

    name = f"sim-{gpus}gpu-{'in-turn' if in_turn else 'side-by-side'}"
    cfg = study_config(args, root, name, in_turn=in_turn)
    with _output_to(log):
        summary = run_study(cfg, trainable=sim_factory(model))
    if summary.interrupted:
        raise KeyboardInterrupt
    return run_stats(summary, gpus, args.epochs, model.speedup, 1.0)


ORDERS = {True: "in turn (old)", False: "side by side"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpus", default="1,4,8,16", help="simulated GPU counts, comma-separated")
    p.add_argument("--gpus-per-node", type=int, default=4, help="simulated GPUs per Ray node")
    p.add_argument("--arms", default=None, help="comma-separated arms (default: all)")
    p.add_argument("--trials-per-arm", type=int, default=PAPER_TRIALS)
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    p.add_argument("--grace", type=int, default=PAPER_GRACE, help="ASHA grace period (epochs)")
    p.add_argument("--eta", type=int, default=PAPER_ETA, help="ASHA reduction factor")
    p.add_argument("--images", type=int, default=PAPER_IMAGES, help="images per epoch (80%% train)")
    p.add_argument("--cpus-per-trial", type=float, default=4.0, help="as the paper preset")
    p.add_argument(
        "--in-turn-max-concurrent",
        type=int,
        default=4,
        help="trials of one arm at once in today's in-turn design (the paper preset's value)",
    )
    p.add_argument("--seed", type=int, default=0, help="study seed (TPE and learning curves)")
    p.add_argument(
        "--epoch-wall",
        type=float,
        default=0.25,
        help="wall seconds of the mean simulated epoch; sets the speed-up (shorter epochs make "
        "Tune's fixed costs per trial and per report weigh more)",
    )
    p.add_argument("--step-times", help="JSON of step times from `benchmarks.step --json`")
    g = p.add_argument_group("measuring step times here (without --step-times)")
    g.add_argument("--batch", type=int, default=8)
    g.add_argument("--size", type=int, default=128)
    g.add_argument("--encoder", default="efficientnet-b0")
    g.add_argument("--decoder-channels", default="256,128,64,32,16")
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", help="folder for the runs' stores and driver log (default: a temp dir)")
    args = p.parse_args(argv)

    from trainables.model_sets import list_arms

    args.arms = args.arms or ",".join(list_arms())
    arms = args.arms.split(",")
    steps = read_step_times(args.step_times) if args.step_times else measure_step_times(args, arms)
    epoch_s = {a: s for a, s in steps.epoch_s(args.images).items() if a in arms}
    speedup = (sum(epoch_s.values()) / len(epoch_s)) / args.epoch_wall
    model = SimModel(epoch_s, speedup, args.seed)
    root = Path(args.out or tempfile.mkdtemp(prefix="cluster-sim-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    paper_s = search_work_s(epoch_s, PAPER_ARMS, PAPER_TRIALS, PAPER_EPOCHS, PAPER_GRACE, PAPER_ETA)
    sim_s = search_work_s(
        epoch_s, len(arms), args.trials_per_arm, args.epochs, args.grace, args.eta
    )

    print(f"# benchmarks.cluster_sim, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# epoch times from {steps.source}")
    print(
        "# per-arm epoch s ("
        + f"{args.images} images): "
        + ", ".join(f"{a} {s:.0f}" for a, s in epoch_s.items())
    )
    print(
        f"# simulated study: {len(arms)} arms x {args.trials_per_arm} trials x {args.epochs} "
        f"epochs, ASHA grace {args.grace} eta {args.eta}, 1 GPU + {args.cpus_per_trial:g} CPUs "
        f"per trial; speed-up {speedup:.0f}x (mean epoch {args.epoch_wall:g} s of wall)"
    )
    print(
        f"# paper-scale h = makespan x paper work / simulated work, both from the ASHA model "
        f"({PAPER_ARMS} arms x {PAPER_TRIALS} trials x "
        f"{asha_expected_epochs(PAPER_EPOCHS, PAPER_GRACE, PAPER_ETA):.2f} expected of "
        f"{PAPER_EPOCHS} epochs, {PAPER_IMAGES} images: {paper_s / 3600:.1f} slot-h; simulated: "
        f"{sim_s / 3600:.1f} slot-h); the makespan itself when the simulated study is paper-scale"
    )
    print(f"# driver output: {root / 'driver.log'}")
    columns = [
        ("gpus", 4),
        ("arms", 15),
        ("makespan h", 10),
        ("util %", 6),
        ("gaps %", 6),
        ("full/stopped", 12),
        ("paper-scale h", 13),
        ("x in turn", 9),
        ("wall s", 6),
    ]

    def line(cells: list[str]) -> str:  # the arm order left-aligned, numbers right-aligned
        return "  ".join(
            c.ljust(w) if i == 1 else c.rjust(w)
            for i, (c, (_, w)) in enumerate(zip(cells, columns, strict=True))
        )

    print(line([name for name, _ in columns]), flush=True)
    with open(root / "driver.log", "a") as log:
        for gpus in [int(g) for g in args.gpus.split(",")]:
            with sim_cluster(gpus, args.gpus_per_node, args.cpus_per_trial, log):
                base = None
                for in_turn in (True, False):
                    s = simulate(args, root, gpus, in_turn, model, log)
                    base = base or s.makespan_s
                    cells = [
                        str(gpus),
                        ORDERS[in_turn],
                        f"{s.makespan_s / 3600:.2f}",
                        f"{100 * s.utilisation:.1f}",
                        f"{100 * s.gaps:.1f}",
                        f"{s.full}/{s.stopped}",
                        f"{s.makespan_s * paper_s / sim_s / 3600:.2f}",
                        f"{s.makespan_s / base:.2f}",
                        f"{s.wall_s:.0f}",
                    ]
                    errors = f"  ({s.errors} trials failed)" if s.errors else ""
                    print(line(cells) + errors, flush=True)


if __name__ == "__main__":
    main()
