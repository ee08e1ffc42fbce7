"""The low-confidence flag of ``gaze-study predict``: DOCTOR's score of a new prediction against
the threshold the study's DOCTOR analysis chose for that model.

DOCTOR (``analysis.doctor``) scores a prediction by D_alpha = (1 - g) / g with g = sum p^2 (0:
one class certain, K - 1: uniform) and, per arm, chooses a threshold on its best run's test
predictions (``doctor.csv``'s ``threshold``: the smallest that keeps 80% of them). The report
logs ``doctor.csv`` to the study's parent run under ``analysis/``; a model named by the run id of
an arm's best trial finds its threshold there. A model file, a run of another trial, or a study
whose report was not logged has none: the score is given, and the JSON says why there is no
threshold instead of guessing one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DOCTOR_CSV = "analysis/doctor.csv"
DETECTOR = "d_alpha"


@dataclass(frozen=True)
class StudyThreshold:
    """The threshold for one model, or None with the reason there is none."""

    gamma: float | None
    source: str  # where the threshold comes from, or why there is none


def d_alpha(probs: np.ndarray) -> float:
    """DOCTOR's D_alpha of one probability vector (``analysis.doctor.d_alpha``)."""
    from analysis.doctor import d_alpha as score

    return float(score(np.asarray(probs, dtype=np.float64)[None])[0])


def study_threshold(model: str, tracking_uri: str | None, is_run: bool) -> StudyThreshold:
    """The D_alpha threshold the study's DOCTOR analysis chose for the run ``model``.

    Args:
        model: ``--model`` as given (a run id when ``is_run``).
        tracking_uri: the store of the run (None: the default store).
        is_run: whether ``model`` named an MLflow run (else a file: no study to ask).
    """
    if not is_run:
        return StudyThreshold(None, "the model was given as a file; pass the run id of an arm's "
                              "best trial to use its study's DOCTOR threshold")  # fmt: skip
    import pandas as pd

    from trainables.record import TAG_PARENT
    from trainables.record.store import resolve_tracking_uri, store

    s = store(resolve_tracking_uri(tracking_uri))
    parent = s.run(model).data.tags.get(TAG_PARENT)
    if not parent:
        return StudyThreshold(None, f"run {model} is not a trial of a study")
    if not s.has_artifact(parent, DOCTOR_CSV):
        return StudyThreshold(
            None, f"study run {parent} has no {DOCTOR_CSV} (its report was not logged)"
        )
    with tempfile.TemporaryDirectory(prefix="doctor-") as tmp:
        frame = pd.read_csv(s.download(parent, DOCTOR_CSV, Path(tmp)))
    row = frame[frame["run_id"] == model] if "threshold" in frame else frame.iloc[0:0]
    if row.empty:
        return StudyThreshold(
            None, f"the study's DOCTOR analysis ({DOCTOR_CSV} of run {parent}) chose thresholds "
            f"for each arm's best run only, not for run {model}",
        )  # fmt: skip
    r = row.iloc[0]
    return StudyThreshold(
        float(r["threshold"]),
        f"{DOCTOR_CSV} of study run {parent}: arm {r['arm']}'s best run, the smallest D_alpha "
        f"threshold keeping {float(r['threshold_coverage']):.0%} of its test predictions",
    )


def doctor_flag(probs: np.ndarray, threshold: StudyThreshold) -> dict[str, Any]:
    """The ``doctor`` block of predict's JSON: the score, the threshold and whether the
    prediction is low confidence (None without a threshold)."""
    score = d_alpha(probs)
    low = None if threshold.gamma is None else bool(score > threshold.gamma)
    return {
        "detector": DETECTOR,
        "score": score,
        "threshold": threshold.gamma,
        "low_confidence": low,
        "threshold_source": threshold.source,
    }


def multi_label_flag() -> dict[str, Any]:
    """The ``doctor`` block of a multi-label model: DOCTOR scores a softmax over exclusive
    classes, so there is no score (and no flag) to give."""
    return {
        "detector": None,
        "score": None,
        "threshold": None,
        "low_confidence": None,
        "threshold_source": (
            "none: DOCTOR applies to one class per image; this model's findings are multi-label"
        ),
    }


def flag_text(flag: dict[str, Any]) -> str | None:
    """``low confidence: DOCTOR D_alpha 1.95 > 0.62 ...`` when flagged, else None."""
    if not flag["low_confidence"]:
        return None
    return (
        f"low confidence: DOCTOR D_alpha {flag['score']:.3f} > {flag['threshold']:.3f}, the "
        "threshold the study's DOCTOR analysis chose: this prediction is more likely wrong"
    )
