"""The schema of the study's MLflow record, in one place: metric names, tags, artifact paths, CSV
columns, and the one rule that picks an arm's best trial.

Writers (``trainables.fit``, ``trainables.tracking``, ``study/``) and readers (``analysis/``) import
these names instead of spelling strings, so the record cannot drift between the two sides.
Torch-free and MLflow-free: the CLI and analysis import it cheaply.

Layout (see the README, "Reading the results"): one experiment per study name; one parent run per
study (tag ``role=study``); one child run per Tune trial (``role=trial``) tagged with the arm, its
model set and generator, the stage, Tune's trial id and a status. Per epoch (step = epoch):
``train/*`` and ``val/*``. Once, at the end: ``best/*`` and ``test/*`` (with ``_ci_low`` /
``_ci_high``) and ``test/explain/<map>_<metric>``. Artifacts: the folders in ``ARTIFACT_DIRS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

from trainables.config import CLASSES

T = TypeVar("T")

# -- metrics -----------------------------------------------------------------------------------
AUC_KEYS: tuple[str, ...] = tuple(f"auc_{c.lower()}" for c in CLASSES) + ("auc_mean",)
"""Per-class one-vs-rest AUC keys (class-id order), then their mean."""
AUC_COLUMNS: tuple[str, ...] = ("auc_mean", *AUC_KEYS[:-1])
"""The same keys in the paper's table order: the mean first, then Normal, CHF, pneumonia."""
SALIENCY_KEYS: tuple[str, ...] = ("cc", "kl", "nss", "auc_judd")
"""Map-vs-gaze agreement metrics (``trainables.metrics.saliency_metrics``)."""

EPOCH = "epoch"
SEARCH_METRIC = "val/auc_mean"  # per epoch: what Optuna and ASHA optimise
SEARCH_MODE = "max"
SELECTION_METRIC = "best/val_auc_mean"  # per trial: the best epoch's validation mean AUC
BEST_EPOCH = "best/epoch"
TRAIN_LOSS = "train/loss"
# Per epoch: classes whose validation AUC is undefined (absent from the split, or all of it). Their
# val/auc_* values are missing, never a stand-in 0.5; with all undefined, so is val/auc_mean.
VAL_AUC_UNDEFINED = "val/auc_undefined_classes"
EPOCH_PREFIXES: tuple[str, ...] = ("train/", "val/")  # logged every epoch with step = epoch
FINAL_PREFIXES: tuple[str, ...] = ("best/", "test/")  # logged once, when a trial finished
# Flags in fit's reports (not logged to MLflow): the last report of a trial carries DONE.
DONE, DIVERGED = "done", "diverged"


def val_metric(key: str) -> str:
    """``val/<key>`` for an AUC key."""
    return f"val/{key}"


def test_metric(key: str, bound: str | None = None) -> str:
    """``test/<key>``, or its CI bound ``test/<key>_ci_low`` / ``_ci_high`` (bound "low"/"high")."""
    if bound is None:
        return f"test/{key}"
    if bound not in ("low", "high"):
        raise ValueError(f"unknown CI bound {bound!r}; valid: low, high")
    return f"test/{key}_ci_{bound}"


def explain_metric(map_kind: str, metric: str) -> str:
    """``test/explain/<map>_<metric>``: a map-vs-gaze mean over the test images."""
    return f"test/explain/{map_kind}_{metric}"


# -- tags --------------------------------------------------------------------------------------
TAG_ROLE = "role"
ROLE_STUDY, ROLE_TRIAL = "study", "trial"
TAG_STUDY_NAME, TAG_PRESET = "study_name", "preset"
TAG_ARM, TAG_MODEL_SET, TAG_GENERATOR = "arm", "model_set", "generator"
TAG_STAGE, TAG_TRIAL_ID = "stage", "trial_id"
TAG_STATUS, TAG_ERROR = "status", "error"
TAG_PARENT = "mlflow.parentRunId"

STAGES: tuple[str, ...] = ("search", "seeds")


def trial_tags(arm: str, stage: str, model_set: str | None = None, generator: str | None = None):
    """The tags that say what a trial run is (model set / generator left out when unknown)."""
    tags = {TAG_ARM: arm, TAG_STAGE: stage}
    if model_set is not None:
        tags[TAG_MODEL_SET] = model_set
    if generator is not None:
        tags[TAG_GENERATOR] = generator
    return tags


TRIAL_STATUSES: tuple[str, ...] = ("running", "ok", "diverged", "failed", "stopped", "orphaned")
STATUS_OK = "ok"
# A run whose Tune trial the study lost (the driver died before Tune saved the trial): not one of
# the study's trials, not counted; its data stay. ``orphaned_from`` keeps the status it had, and a
# new trial of the same configuration may adopt an orphan that had finished ("ok") instead of
# training it again; the adopting trial's run says which trial it came from.
STATUS_ORPHANED = "orphaned"
TAG_ORPHANED_FROM, TAG_ADOPTED_FROM = "orphaned_from", "adopted_from_trial"

# -- artifacts ---------------------------------------------------------------------------------
ARTIFACT_DIRS: tuple[str, ...] = ("predictions", "explain", "heatmaps", "model")  # fit's out_dir
PREDICTIONS = "predictions/test.csv"
EXPLAIN = "explain/test.csv"
MAPS = "heatmaps/maps.npz"
MODEL = "model/model.pt"
STUDY_CONFIG = "study/config.json"
ANALYSIS_DIR = "analysis"  # artifact folder of the parent run that analysis outputs go to

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{c.lower()}" for c in CLASSES)
PREDICTION_COLUMNS: tuple[str, ...] = ("key", "split", "label", "label_name", *PROB_COLUMNS)
EXPLAIN_COLUMNS: tuple[str, ...] = ("key", "label", "map", "generator", *SALIENCY_KEYS)
MAP_KINDS: tuple[str, ...] = ("generator", "decoder")  # values of the explain CSV's "map" column
PANEL_MAPS: tuple[str, ...] = ("gbp", "deconv", "gradcam")  # generator maps drawn in the panels
MAP_ARRAYS: tuple[str, ...] = ("keys", "labels", "probs", "image", "gaze", *PANEL_MAPS, "decoder")


# -- selection ---------------------------------------------------------------------------------
def selection_score(metrics: dict[str, float]) -> float:
    """The selection metric of a trial's final metrics, ``nan`` when it has none."""
    value = metrics.get(SELECTION_METRIC)
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return value


def select_best(
    candidates: Iterable[T],
    metrics: Callable[[T], dict[str, float]],
    tiebreak: Callable[[T], object] = lambda _: 0,
) -> T | None:
    """THE rule for an arm's best trial: highest validation mean AUC of its best epoch.

    Test metrics never take part. Candidates without a finite selection metric are left out;
    ties go to the smallest ``tiebreak`` (e.g. the earliest start), then to the first given.

    Args:
        candidates: the finished trials of one arm (any type).
        metrics: how to read a candidate's final metrics.
        tiebreak: orders equal scores.

    Returns:
        The best candidate, or None when none has a finite score.
    """
    best, best_key = None, None
    for c in candidates:
        score = selection_score(metrics(c))
        if not math.isfinite(score):
            continue
        key = (-score, tiebreak(c))
        if best_key is None or key < best_key:
            best, best_key = c, key
    return best
