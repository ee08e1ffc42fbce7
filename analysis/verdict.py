"""The verdict: which arm the selection rule picks, and whether any arm differs from the baseline.

Read at the top of every report and, in the same words, in the study parent run's description
(``study.results``). From the record only:

- the selected arm: the one selection rule (``trainables.record.selection``) applied across the
  arms' best trials, with any validation tie named and the rule that broke it;
- for every other arm, the paired difference in test AUC against ``unet`` (mean and per class),
  whole test set, with the 2.5th-97.5th percentile of the difference over the study's own
  bootstrap resamples (``Study.bootstrap``) and a two-sided bootstrap p-value, Holm-adjusted over
  the arms compared (per metric). With several seeds of each arm's best configuration (the seeds
  stage), runs are paired by seed and each resample also draws the seeds (with replacement), so
  the interval covers seed-to-seed variation as well as the test images;
- one sentence generated from those numbers (:func:`verdict_sentence`).

``python -m analysis.verdict --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``
prints it and writes ``verdict.md`` and ``differences.csv`` (to the parent run with ``--log``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.cli import run_cli, write_and_log
from analysis.formats import format_p
from analysis.paper import BASELINE, METRIC_LABELS, metric_labels
from analysis.stats import (
    Estimate,
    align_arms,
    holm,
    seed_draws,
    seeded_difference,
)
from analysis.verdict_text import (  # noqa: F401 (re-exported: the verdict's text and tables)
    ALPHA,
    PRIMARY,
    difference_header,
    differences_display,
    differences_frame,
    differences_note,
    format_difference,
    markdown_report,
    selection_text,
    verdict_sentence,
)
from trainables.metrics import bootstrap_indices
from trainables.record.reader import Record, Study
from trainables.record.selection import best_of_bests, seed_group, tied_arms, ties
from trainables.record.trial import Trial
from trainables.task import Task


@dataclass(frozen=True)
class ArmDifference:
    """One arm against the baseline: per AUC key, the difference and its Holm-adjusted p."""

    arm: str
    seeds: int  # seeds paired with the baseline's
    point: dict[str, float]  # whole test set, mean over the paired seeds
    interval: dict[str, Estimate]  # percentile interval of the resampled difference
    p: dict[str, float]  # two-sided bootstrap p, unadjusted
    p_adjusted: dict[str, float]  # Holm over the arms compared, per key


@dataclass(frozen=True)
class Verdict:
    """What the verdict says, and the numbers it says it from."""

    baseline: str
    selected: Trial | None
    tied: tuple[Trial, ...]  # other arms' best trials with the selected one's validation score
    arm_ties: tuple[Trial, ...]  # trials of the selected arm with its score (rule broke them too)
    differences: tuple[ArmDifference, ...]
    n_test: int
    resamples: int
    seed: int
    missing: str = ""  # why no arm could be compared, when none could
    seeds_note: str = ""  # how seeds entered, when several did
    labels: dict[str, str] = field(default_factory=lambda: dict(METRIC_LABELS))  # key -> label
    exclusive: bool = True  # one class per image (one-vs-rest AUCs) or findings (per finding)

    @property
    def selection(self) -> str:
        return selection_text(self)

    @property
    def sentence(self) -> str:
        return verdict_sentence(self)

    def markdown(self) -> str:
        """The verdict as Markdown (the parent run's description): the same words as the report."""
        lines = [f"**Verdict.** {self.selection} {self.sentence}"]
        if self.differences:
            lines += ["", f"| arm | {difference_header(self)} | adjusted p |", "|---|---|---|"]
            lines += [
                f"| `{d.arm}` | {format_difference(d, PRIMARY)} | {format_p(d.p_adjusted[PRIMARY])} |"
                for d in self.differences
            ]
        return "\n".join(lines)


def differences(
    labels: np.ndarray,
    runs: Mapping[str, Mapping[str, np.ndarray]],
    baseline: str,
    task: Task,
    *,
    resamples: int,
    seed: int,
) -> list[ArmDifference]:
    """Each arm against ``baseline``, paired by seed, Holm-adjusted over the arms per key.

    Args:
        labels: test labels (class ids, or (N, K) 0/1), in the order of every probability array.
        runs: arm -> seed -> (N, K) test probabilities of that seed's run.
        baseline: the arm the others are compared with (a key of ``runs``).
        task: the study's classes.
        resamples, seed: the study's bootstrap (``Study.bootstrap``).

    Returns:
        One entry per arm other than the baseline that shares a seed with it, in ``runs`` order.
    """
    indices = bootstrap_indices(len(labels), resamples=resamples, seed=seed)
    base = runs[baseline]
    raw = []
    for arm, by_seed in runs.items():
        common = [s for s in by_seed if s in base]
        if arm == baseline or not common:
            continue
        pairs = [(by_seed[s], base[s]) for s in common]
        draws = seed_draws(len(pairs), resamples=resamples, seed=seed)
        point, diff = seeded_difference(labels, pairs, indices, draws, task)
        raw.append((arm, len(pairs), point, diff))
    adjusted = {k: holm([diff[k].p_value for *_, diff in raw]) for k in (raw[0][3] if raw else ())}
    return [
        ArmDifference(
            arm=arm,
            seeds=n,
            point={k: point[k] for k in task.auc_columns},
            interval={k: diff[k].estimate for k in task.auc_columns},
            p={k: diff[k].p_value for k in task.auc_columns},
            p_adjusted={k: float(adjusted[k][i]) for k in task.auc_columns},
        )
        for i, (arm, n, point, diff) in enumerate(raw)
    ]


def _by_seed(group: Sequence[Trial]) -> dict[str, Trial]:
    """One run per seed (the earliest, as the group comes oldest first)."""
    out: dict[str, Trial] = {}
    for t in group:
        out.setdefault(t.params.get("seed", "?"), t)
    return out


def study_verdict(record: Record, study: Study, baseline: str = BASELINE) -> Verdict:
    """The verdict of a study (see the module docstring).

    Raises:
        ValueError: the arms' test keys or labels differ (``stats.align_arms``).
    """
    best = study.best_of(study.arms)
    chosen = best_of_bests(best)
    boot, task = study.bootstrap, study.task
    common = {
        "labels": metric_labels(task),
        "exclusive": task.exclusive,
        "baseline": baseline,
        "selected": chosen,
        "tied": tuple(tied_arms(best, chosen)) if chosen else (),
        "arm_ties": tuple(ties(study.trials, chosen)) if chosen else (),
        "resamples": boot.resamples,
        "seed": boot.seed,
    }
    if best.get(baseline) is None:
        why = (
            f"the study has no {baseline} arm"
            if baseline not in best
            else "it has no finished trial"
        )
        return Verdict(differences=(), n_test=0, missing=why, **common)
    groups = {
        arm: _by_seed(seed_group(study.trials, t)) for arm, t in best.items() if t is not None
    }
    frames = {(arm, s): record.predictions(t.run_id, task) for arm, g in groups.items() for s, t in g.items()}  # fmt: skip
    _, labels, probs = align_arms(frames, task)
    runs = {arm: {s: probs[(arm, s)] for s in g} for arm, g in groups.items()}
    diffs = differences(labels, runs, baseline, task, resamples=boot.resamples, seed=boot.seed)
    seeds = sorted({d.seeds for d in diffs})
    note = ""
    if seeds and seeds[-1] > 1:
        counts = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
        note = f"{counts} seeds per arm, paired with {baseline}'s"
    missing = "" if diffs else "no other arm has a finished trial"
    return Verdict(
        differences=tuple(diffs),
        n_test=len(labels),
        missing=missing,
        seeds_note=note,
        **common,
    )


@dataclass(frozen=True)
class VerdictOutput:
    """What write_verdict built and wrote."""

    verdict: Verdict
    markdown: str
    files: list[Path]


def write_verdict_from(record: Record, study: Study, out_dir: Path) -> VerdictOutput:
    """Write ``verdict.md`` and ``differences.csv`` for the study."""
    v = study_verdict(record, study)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "verdict.md", out_dir / "differences.csv"]
    markdown = markdown_report(v)
    files[0].write_text(markdown)
    differences_frame(v).to_csv(files[1], index=False)
    return VerdictOutput(v, markdown, files)


def write_verdict(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> VerdictOutput:
    """The verdict of the study (latest, or ``parent``), written to ``out_dir`` (and, with
    ``log_to_mlflow``, to the parent run)."""
    return write_and_log(write_verdict_from, tracking_uri, experiment, out_dir, parent=parent, log_to_mlflow=log_to_mlflow)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the verdict and the written files."""
    return run_cli(
        "gaze-study verdict",
        "Which arm the selection rule picks, and whether any arm differs from the baseline.",
        write_verdict,
        lambda out: out.markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
