"""DOCTOR: which test predictions to trust, from each arm's class probabilities.

``python -m analysis.doctor --tracking-uri URI --experiment NAME [--out DIR] [--parent RUN_ID]``

Granese et al., "DOCTOR: A Simple Method for Detecting Misclassification Errors" (NeurIPS 2021)
reject a prediction when an estimate of its error probability is high. From the soft-predictions
P(y|x) alone (the paper's totally black-box setting):

- D_alpha(x) = (1 - g(x)) / g(x), with g(x) = sum_y P(y|x)^2 (one minus the Gini impurity);
- D_beta(x) = P_e(x) / (1 - P_e(x)), with P_e(x) = 1 - max_y P(y|x);

and a prediction is rejected when D(x) > gamma. We use temperature 1 and no input perturbation:
the record holds probabilities, not logits or images, and no held-out split to tune them on.

Per arm (its best run, chosen on validation as for the tables), from ``predictions/test.csv``: the
AUROC of separating wrong from right predictions by D (with a percentile-bootstrap CI over the
test images), and the risk-coverage curve: accepting the predictions with D <= gamma, the error
rate of the accepted ones against the fraction accepted, for every gamma; AURC is the area under
it. Writes ``doctor.md``, ``doctor.csv`` and ``doctor.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.cli import run_cli, write_and_log
from analysis.formats import format_auc, markdown_table
from analysis.paper import ARM_LABELS, report_arms
from trainables.metrics import bootstrap_indices, percentile_summary, rank_auc
from trainables.panels import DPI, FONT_PT, save
from trainables.record.files import labels_and_probs
from trainables.record.reader import Record, Study
from trainables.record.trial import Trial
from trainables.task import Task

log = logging.getLogger(__name__)


def _check(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must be (N, classes >= 2), got shape {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probability rows must sum to 1 (softmax outputs, not logits)")
    return probs


def d_alpha(probs: np.ndarray) -> np.ndarray:
    """DOCTOR's D_alpha per row: (1 - g) / g with g = sum of the squared probabilities.

    g >= 1/K for a probability vector over K classes, so D_alpha is finite, from 0 (one class
    certain) to K - 1 (uniform).
    """
    g = np.square(_check(probs)).sum(axis=1)
    return (1.0 - g) / g


def d_beta(probs: np.ndarray) -> np.ndarray:
    """DOCTOR's D_beta per row: P_e / (1 - P_e) with P_e = 1 - the largest probability.

    1 - P_e = max probability >= 1/K, so D_beta is finite, from 0 to K - 1.
    """
    pe = 1.0 - _check(probs).max(axis=1)
    return pe / (1.0 - pe)


DETECTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"d_alpha": d_alpha, "d_beta": d_beta}
DETECTOR_LABELS = {"d_alpha": "D_α", "d_beta": "D_β"}


def misclassified(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Whether the predicted class (argmax; ties to the lower class id) is not the label."""
    return np.argmax(_check(probs), axis=1) != np.asarray(labels)


@dataclass(frozen=True)
class RiskCoverage:
    """Selective risk at each threshold: accept a prediction iff its score <= ``thresholds[k]``.

    Predictions with equal scores are accepted together, so a curve has one point per distinct
    score; the last point accepts everything (coverage 1, risk = the error rate).
    """

    thresholds: np.ndarray
    coverage: np.ndarray  # fraction accepted, increasing to 1
    risk: np.ndarray  # error rate of the accepted predictions

    @property
    def aurc(self) -> float:
        """Area under the risk-coverage curve (risk as a step function of coverage from 0):
        the mean, over k = 1..N accepted predictions, of the risk (lower is better)."""
        widths = np.diff(self.coverage, prepend=0.0)
        return float((self.risk * widths).sum())


def risk_coverage(scores: np.ndarray, errors: np.ndarray) -> RiskCoverage:
    """The risk-coverage curve of rejecting high ``scores``.

    Args:
        scores: (N,) detector values; larger = more likely wrong.
        errors: (N,) booleans, True where the prediction is wrong.
    """
    scores = np.asarray(scores, dtype=np.float64)
    errors = np.asarray(errors, dtype=bool)
    if scores.ndim != 1 or scores.shape != errors.shape or scores.size == 0:
        raise ValueError(f"scores {scores.shape} and errors {errors.shape}: need equal (N,), N > 0")
    order = np.argsort(scores, kind="stable")
    s, e = scores[order], errors[order]
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last index of each tie group
    accepted = ends + 1
    return RiskCoverage(
        thresholds=s[ends],
        coverage=accepted / s.size,
        risk=np.cumsum(e)[ends] / accepted,
    )


THRESHOLD_DETECTOR = "d_alpha"  # the detector whose threshold predict applies
THRESHOLD_COVERAGE = 0.8  # the threshold keeps (at least) this share of the test predictions


@dataclass(frozen=True)
class Threshold:
    """The rejection threshold DOCTOR's analysis chose for one arm: a prediction whose score is
    above ``gamma`` is flagged as low confidence."""

    gamma: float
    coverage: float  # share of the test predictions it accepts
    risk: float  # error rate of the accepted ones


def choose_threshold(curve: RiskCoverage, coverage: float = THRESHOLD_COVERAGE) -> Threshold:
    """The smallest threshold that accepts at least ``coverage`` of the predictions (the test
    set's, the only predictions the record holds: the accepted risk is measured on the images
    the threshold was chosen on)."""
    k = int(np.flatnonzero(curve.coverage >= coverage - 1e-12)[0])
    return Threshold(float(curve.thresholds[k]), float(curve.coverage[k]), float(curve.risk[k]))


def detection_auroc(scores: np.ndarray, errors: np.ndarray) -> float:
    """AUROC of telling wrong (positive) from right predictions by ``scores`` (ties count one
    half); nan when every prediction is right or every one is wrong."""
    return float(rank_auc(np.asarray(errors, dtype=bool), np.asarray(scores, dtype=np.float64)))


def bootstrap_auroc(
    scores: np.ndarray, errors: np.ndarray, *, resamples: int, seed: int, alpha: float = 0.05
) -> tuple[float, float, int]:
    """Percentile-bootstrap (low, high) of :func:`detection_auroc` over resampled images, and how
    many resamples had no wrong or no right prediction (left out)."""
    idx = bootstrap_indices(len(scores), resamples=resamples, seed=seed)
    aucs = rank_auc(np.asarray(errors, dtype=bool)[idx], np.asarray(scores, dtype=np.float64)[idx])
    _, low, high = percentile_summary(aucs, alpha)
    return low, high, int((~np.isfinite(aucs)).sum())


@dataclass(frozen=True)
class ArmDoctor:
    """DOCTOR on one arm's test predictions."""

    arm: str
    run_id: str
    errors: np.ndarray
    scores: dict[str, np.ndarray]  # detector -> (N,)
    curves: dict[str, RiskCoverage]


def arm_doctor(arm: str, trial: Trial, frame: pd.DataFrame, task: Task) -> ArmDoctor:
    labels, probs = labels_and_probs(frame, task)
    errors = misclassified(labels, probs)
    scores = {name: fn(probs) for name, fn in DETECTORS.items()}
    curves = {name: risk_coverage(s, errors) for name, s in scores.items()}
    return ArmDoctor(arm, trial.run_id, errors, scores, curves)


def doctor_frame(results: Sequence[ArmDoctor], *, resamples: int, seed: int) -> pd.DataFrame:
    """One row per arm: ``arm, run_id, n, errors, error_rate``, the chosen threshold
    (``threshold`` on ``THRESHOLD_DETECTOR``, its ``threshold_coverage`` and ``threshold_risk``)
    and per detector ``<d>_auroc``, ``<d>_auroc_low``, ``<d>_auroc_high``, ``<d>_aurc``,
    ``<d>_skipped`` (resamples left out)."""
    rows = []
    for r in results:
        row = {"arm": r.arm, "run_id": r.run_id, "n": int(r.errors.size)}
        row |= {"errors": int(r.errors.sum()), "error_rate": float(r.errors.mean())}
        chosen = choose_threshold(r.curves[THRESHOLD_DETECTOR])
        row |= {"threshold_detector": THRESHOLD_DETECTOR, "threshold": chosen.gamma,
                "threshold_coverage": chosen.coverage, "threshold_risk": chosen.risk}  # fmt: skip
        for name, scores in r.scores.items():
            low, high, skipped = bootstrap_auroc(scores, r.errors, resamples=resamples, seed=seed)
            row |= {
                f"{name}_auroc": detection_auroc(scores, r.errors),
                f"{name}_auroc_low": low,
                f"{name}_auroc_high": high,
                f"{name}_aurc": r.curves[name].aurc,
                f"{name}_skipped": skipped,
            }
        rows.append(row)
    columns = ["arm", "run_id", "n", "errors", "error_rate", "threshold_detector", "threshold",
               "threshold_coverage", "threshold_risk"]  # fmt: skip
    columns += [f"{d}_{c}" for d in DETECTORS for c in ("auroc", "auroc_low", "auroc_high",
                                                         "aurc", "skipped")]  # fmt: skip
    return pd.DataFrame.from_records(rows, columns=columns)


def doctor_display(frame: pd.DataFrame) -> pd.DataFrame:
    """The DOCTOR table as display strings."""
    data = {}
    for _, r in frame.iterrows():
        cells = [str(r["n"]), f"{r['errors']} ({r['error_rate']:.1%})"]
        for d in DETECTORS:
            auc = r[f"{d}_auroc"]
            cells.append(
                "n/a (no wrong or no right prediction)"
                if not np.isfinite(auc)
                else f"{format_auc(auc)} ({format_auc(r[f'{d}_auroc_low'])}, "
                f"{format_auc(r[f'{d}_auroc_high'])})"
            )
        cells += [format_auc(r[f"{d}_aurc"]) for d in DETECTORS]
        kept = f"keeps {r['threshold_coverage']:.0%}, {r['threshold_risk']:.1%} wrong"
        cells.append(f"{r['threshold']:.3f} ({kept})")
        data[ARM_LABELS.get(r["arm"], r["arm"])] = cells
    columns = ["Test images", "Wrong (rate)"]
    columns += [f"{DETECTOR_LABELS[d]} AUROC" for d in DETECTORS]
    columns += [f"{DETECTOR_LABELS[d]} AURC ↓" for d in DETECTORS]
    columns += [f"Threshold γ on {DETECTOR_LABELS[THRESHOLD_DETECTOR]}"]
    out = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    out.index.name = "Arm"
    return out


def doctor_note(frame: pd.DataFrame, resamples: int, seed: int) -> str:
    skipped = int(frame[[f"{d}_skipped" for d in DETECTORS]].to_numpy().max()) if len(frame) else 0
    return (
        "DOCTOR (Granese et al., NeurIPS 2021), from the softmax probabilities of each arm's best "
        "run (totally black-box: temperature 1, no input perturbation). D_α = (1 - g)/g with g = "
        "Σ p²; D_β = P_e/(1 - P_e) with P_e = 1 - max p; a prediction is rejected when D > γ. "
        "AUROC: how well D separates wrong from right predictions (0.5 = not at all; predicted "
        f"class = argmax), with the 2.5th-97.5th percentile over {resamples} bootstrap resamples "
        f"of the test images (seed {seed}; up to {skipped} resamples without both a wrong and a "
        "right prediction left out). AURC: area under the risk-coverage curve (error rate of the "
        "accepted predictions vs the fraction accepted, over all γ); lower is better, and at "
        "full coverage the risk is the error rate. Threshold γ: the smallest γ on "
        f"{DETECTOR_LABELS[THRESHOLD_DETECTOR]} that keeps at least {THRESHOLD_COVERAGE:.0%} of "
        "the test predictions, chosen on the test predictions themselves (the record holds no "
        "others), so the error rate it keeps is optimistic; `gaze-study predict` flags a new "
        "prediction above it as low confidence."
    )


_DOC_W, _DOC_H, _DOC_COLUMNS = 2.3, 1.75, 4


def doctor_figure(results: Sequence[ArmDoctor], out_dir: Path) -> Path | None:
    """``doctor.png``: risk-coverage curves as small multiples, one panel per arm with its two
    detectors, its error rate (the risk at full coverage) and the chosen threshold."""
    if not results:
        return None
    n_rows = -(-len(results) // _DOC_COLUMNS)
    n_cols = min(len(results), _DOC_COLUMNS)
    width = 0.8 + n_cols * (_DOC_W + 0.35) + 0.1
    height = 0.6 + n_rows * (_DOC_H + 0.75) + 0.1
    fig = Figure(figsize=(width, height), dpi=DPI)
    ymax = max(float(c.risk.max()) for r in results for c in r.curves.values())
    styles = {d: {"color": f"C{j}", "ls": ("-", "--")[j % 2], "lw": 1.4} for j, d in enumerate(DETECTORS)}  # fmt: skip
    for i, r in enumerate(results):
        row, col = divmod(i, _DOC_COLUMNS)
        left = 0.8 + col * (_DOC_W + 0.35)
        bottom = height - 0.6 - (row + 1) * (_DOC_H + 0.75) + 0.55
        ax = fig.add_axes((left / width, bottom / height, _DOC_W / width, _DOC_H / height))
        for d in DETECTORS:
            c = r.curves[d]
            # Steps: the risk holds from the previous coverage up to each point (the AURC's area).
            ax.plot(np.r_[0.0, c.coverage], np.r_[c.risk[0], c.risk], drawstyle="steps-pre", **styles[d])  # fmt: skip
        ax.axhline(float(r.errors.mean()), color="0.6", lw=0.8, ls=":")
        t = choose_threshold(r.curves[THRESHOLD_DETECTOR])
        ax.plot([t.coverage], [t.risk], marker="o", ms=5, color="k", ls="")
        ax.set_title(ARM_LABELS.get(r.arm, r.arm), fontsize=FONT_PT, loc="left")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(-0.02, max(0.1, ymax * 1.08))
        ax.tick_params(labelsize=FONT_PT)
        if row == n_rows - 1 or i + _DOC_COLUMNS >= len(results):
            ax.set_xlabel("coverage (share accepted)", fontsize=FONT_PT)
        if col == 0:
            ax.set_ylabel("risk (error rate)", fontsize=FONT_PT)
    handles = [Line2D([], [], **styles[d]) for d in DETECTORS]
    handles += [Line2D([], [], color="0.6", lw=0.8, ls=":"),
                Line2D([], [], marker="o", ms=5, color="k", ls="")]  # fmt: skip
    labels = [f"rejecting by {DETECTOR_LABELS[d]}" for d in DETECTORS]
    labels += ["error rate (all accepted)", f"threshold γ ({THRESHOLD_COVERAGE:.0%} kept)"]
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=FONT_PT, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.05 / height))  # fmt: skip
    return save(fig, out_dir / "doctor.png")


@dataclass(frozen=True)
class DoctorOutput:
    """What write_doctor built and wrote."""

    arms: list[ArmDoctor]
    frame: pd.DataFrame
    markdown: str
    figure: Path | None
    files: list[Path]
    reason: str = ""  # why there is no DOCTOR table, when there is none


MULTI_LABEL = (
    "DOCTOR detects misclassified images of a task with one class per image (its score is a "
    "function of the softmax); this study's findings are multi-label, so it does not apply."
)


def doctor_from_best(
    record: Record, best: Mapping[str, Trial | None], task: Task, *, resamples: int, seed: int
) -> tuple[list[ArmDoctor], pd.DataFrame]:
    arms = [
        arm_doctor(arm, t, record.predictions(t.run_id, task), task)
        for arm, t in best.items()
        if t is not None
    ]
    return arms, doctor_frame(arms, resamples=resamples, seed=seed)


def write_doctor_from(record: Record, study: Study, out_dir: Path) -> DoctorOutput:
    """Write ``doctor.md``, ``doctor.csv`` and ``doctor.png`` for the study's best runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    resamples, seed = study.bootstrap.resamples, study.bootstrap.seed
    if not study.task.exclusive:
        (out_dir / "doctor.md").write_text(f"## DOCTOR\n\n{MULTI_LABEL}\n")
        return DoctorOutput([], pd.DataFrame(), MULTI_LABEL, None, [out_dir / "doctor.md"], MULTI_LABEL)  # fmt: skip
    best = study.best_of(report_arms(study.dataset, study.arms))
    arms, frame = doctor_from_best(record, best, study.task, resamples=resamples, seed=seed)
    markdown = (
        "## DOCTOR: detecting misclassified test images\n\n"
        + markdown_table(doctor_display(frame))
        + "\n\n"
        + doctor_note(frame, resamples, seed)
        + "\n"
    )
    (out_dir / "doctor.md").write_text(markdown)
    frame.to_csv(out_dir / "doctor.csv", index=False)
    figure = doctor_figure(arms, out_dir)
    files = [out_dir / "doctor.md", out_dir / "doctor.csv", *([figure] if figure else [])]
    return DoctorOutput(arms, frame, markdown, figure, files)


def write_doctor(
    tracking_uri: str | None,
    experiment: str,
    out_dir: Path,
    *,
    parent: str | None = None,
    log_to_mlflow: bool = False,
) -> DoctorOutput:
    """DOCTOR of the study (latest, or ``parent``), written to ``out_dir`` (and the parent run)."""
    return write_and_log(write_doctor_from, tracking_uri, experiment, out_dir, parent=parent, log_to_mlflow=log_to_mlflow)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the DOCTOR table and the written files."""
    return run_cli(
        "gaze-study doctor",
        "DOCTOR misclassification detection: AUROC and risk-coverage per arm.",
        write_doctor,
        lambda out: out.markdown + "\nwrote " + ", ".join(str(f) for f in out.files),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
