"""The schema of the study's MLflow record: metric names, tags, statuses, stages, artifact paths,
CSV columns and the data summary. Torch-free and MLflow-free: the CLI and analysis import it
cheaply.

Layout (README, "Reading the results"): one experiment per study name; one parent run per study
(tag ``role=study``, ``kind`` = the plan that ran); one child run per Tune trial (``role=trial``)
tagged with the arm, its model set and generator, the stage, Tune's trial id and a ``Status``.
Per epoch (step = epoch): ``train/*`` and ``val/*``. Once, at the end: ``best/*`` and ``test/*``
(with ``_ci_low`` / ``_ci_high``) and ``test/explain/<map>_<metric>``. Artifacts: the folders in
``ARTIFACT_DIRS``; on the parent run ``study/config.json`` and ``study/data.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np

from trainables.config import SPLITS


# -- statuses and stages -----------------------------------------------------------------------
class Status(StrEnum):
    """How a trial run stands (its ``status`` tag); ``RUN_STATUS`` maps it to MLflow's."""

    RUNNING = "running"
    OK = "ok"  # finished: its final record and artifacts are logged
    STOPPED = "stopped"  # ASHA stopped it early: a normal end, not a failure
    DIVERGED = "diverged"  # a non-finite training loss
    FAILED = "failed"  # an error (the ``error`` tag says which)
    # A run whose Tune trial the study lost (the driver died before Tune saved the trial): not one
    # of the study's trials, not counted; ``orphaned_from`` keeps the status it had, and a new
    # trial of the same configuration may adopt an orphan that had finished.
    ORPHANED = "orphaned"


FAILED_STATUSES: tuple[Status, ...] = (Status.FAILED, Status.DIVERGED)
# MLflow's run lifecycle for each status: ASHA's early stop is a normal end (the UI draws KILLED
# as a failure); an orphan is KILLED; "running" keeps the run open.
RUN_STATUS: dict[Status, str] = {
    Status.RUNNING: "RUNNING",
    Status.OK: "FINISHED",
    Status.STOPPED: "FINISHED",
    Status.DIVERGED: "FAILED",
    Status.FAILED: "FAILED",
    Status.ORPHANED: "KILLED",
}


class Stage(StrEnum):
    """Which part of a plan a trial belongs to (its ``stage`` tag, and its Tune experiment)."""

    SEARCH = "search"  # Optuna search of each arm's hyperparameters
    SEEDS = "seeds"  # each arm's best configuration again with further seeds
    EVIDENCE = "evidence"  # a fixed grid (the evidence plans: no search, no early stopping)


class Kind(StrEnum):
    """The plan a study parent run ran (its ``kind`` tag)."""

    STUDY = "study"  # search (+ seeds): the paper's study
    EVIDENCE = "evidence"  # clean vs shortcut twins, arms x seeds


# -- metrics -----------------------------------------------------------------------------------
# The AUC keys and the predictions' columns are the task's (``trainables.task.Task``: its
# ``auc_keys``, ``auc_columns``, ``prob_columns``, ``prediction_columns``): a dataset's classes.
AUC_MEAN = "auc_mean"
SALIENCY_KEYS: tuple[str, ...] = ("cc", "kl", "nss", "auc_judd")
"""Map-vs-gaze agreement metrics (``trainables.metrics.saliency_metrics``)."""

EPOCH = "epoch"
SEARCH_METRIC = "val/auc_mean"  # per epoch: what Optuna and ASHA optimise
SEARCH_MODE = "max"
# Per epoch, with ``TrialConfig.selection_signals``: validation readings that see a shortcut
# outside the gaze without reading test labels (``trainables.blind_selection``); higher is better.
BLIND_SIGNALS: tuple[str, ...] = (
    "val/masked_auc_mean",
    "val/gaze_agreement",
    "val/selection_score",
)
SEARCH_METRICS: tuple[str, ...] = (SEARCH_METRIC, *BLIND_SIGNALS)  # what a study may search on
SELECTION_METRIC = "best/val_auc_mean"  # per trial: the best epoch's validation mean AUC
BEST_EPOCH = "best/epoch"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
# Per epoch: classes whose validation AUC is undefined (absent from the split, or all of it). Their
# val/auc_* values are missing, never a stand-in 0.5; with all undefined, so is val/auc_mean.
VAL_AUC_UNDEFINED = "val/auc_undefined_classes"
EPOCH_PREFIXES: tuple[str, ...] = ("train/", "val/")  # logged every epoch with step = epoch
FINAL_PREFIXES: tuple[str, ...] = ("best/", "test/")  # logged once, when a trial finished
CI_BOUNDS: tuple[str, str] = ("low", "high")


def metric_key(split: str, key: str, bound: str | None = None) -> str:
    """``<split>/<key>`` (e.g. ``test/auc_mean``), or a CI bound ``test/<key>_ci_low`` /
    ``_ci_high`` (bound "low" / "high")."""
    if bound is None:
        return f"{split}/{key}"
    if bound not in CI_BOUNDS:
        raise ValueError(f"unknown CI bound {bound!r}; valid: low, high")
    return f"{split}/{key}_ci_{bound}"


def explain_metric(map_kind: str, metric: str, generator: str | None = None) -> str:
    """``test/explain/<map>_<metric>``: a map-vs-gaze mean over the test images; for probe maps
    ``test/explain/probe_<generator>_<metric>``."""
    if map_kind == "probe":
        return f"test/explain/probe_{generator}_{metric}"
    return f"test/explain/{map_kind}_{metric}"


def readers_metric(map_kind: str, metric: str) -> str:
    """``test/readers/<map>_<metric>``: a map's mean agreement with the readers (cc, kl, nss,
    auc_judd, sauc) or its localization of the ellipses (pointing, energy, area)."""
    return f"test/readers/{map_kind}_{metric}"


# -- tags --------------------------------------------------------------------------------------
TAG_ROLE = "role"
ROLE_STUDY, ROLE_TRIAL = "study", "trial"
TAG_STUDY_NAME, TAG_PRESET, TAG_KIND = "study_name", "preset", "kind"
TAG_ARM, TAG_MODEL_SET, TAG_GENERATOR = "arm", "model_set", "generator"
TAG_STAGE, TAG_TRIAL_ID = "stage", "trial_id"
TAG_STATUS, TAG_ERROR = "status", "error"
TAG_PARENT = "mlflow.parentRunId"
TAG_TWIN = "twin"  # evidence plans: the dataset a trial trained on ("clean", "shortcut", ...)
# Evidence plans beyond the first (issue 19): the twins' scanning share, the training images a
# data-efficiency trial used, and the grid point a selection or border trial stands for.
TAG_SCANNING, TAG_TRAIN_IMAGES, TAG_VARIANT = "scanning", "train_images", "variant"
PARAM_PLAN = "plan"  # parent param of an evidence-kind study: its plan's registry name
TAG_ORPHANED_FROM, TAG_ADOPTED_FROM = "orphaned_from", "adopted_from_trial"
TAG_NOTE = "mlflow.note.content"  # a run's description (markdown) in the MLflow UI
TAG_GIT_COMMIT = "mlflow.source.git.commit"  # the UI shows it as the run's source version
TAG_GIT_DIRTY = "git_dirty"  # "true" when the checkout had uncommitted changes
TAG_DATA_FINGERPRINT = "data_fingerprint"  # content digest of the data the study trained on
# "true" on each arm's best search trial (``selection.best_of_arm``), "false" on its others.
TAG_BEST_OF_ARM = "best_of_arm"
DATA_PARAM_PREFIX = "data/"  # parent params: data/images, data/train, data/val, data/test, ...
# Experiment tags: the UI's "model training" view, and saved runs-table views (link key = suffix).
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."


def trial_tags(arm: str, stage: str, model_set: str | None = None, generator: str | None = None):
    """The tags that say what a trial run is (model set / generator left out when unknown)."""
    tags = {TAG_ARM: arm, TAG_STAGE: str(stage)}
    if model_set is not None:
        tags[TAG_MODEL_SET] = model_set
    if generator is not None:
        tags[TAG_GENERATOR] = generator
    return tags


# -- the arms compared on the parent run --------------------------------------------------------
SELECTION_SUMMARY = "best_val_auc_mean"
ARM_COUNT_KEYS: tuple[str, ...] = ("trials_ok", "trials_stopped", "trials_failed")


def arm_metric(arm: str, key: str, bound: str | None = None) -> str:
    """A parent-run metric comparing arms: ``<arm>/best_val_auc_mean``, ``<arm>/test_auc_mean``
    (any ``test_<task AUC key>``), ``<arm>/test_auc_mean_ci_low`` (``bound`` "low"/"high"),
    ``<arm>/trials_ok``, ...

    The ``test_*`` values are those of the arm's best trial (chosen on validation).
    """
    if key not in (SELECTION_SUMMARY, *ARM_COUNT_KEYS) and not key.startswith("test_auc_"):
        raise ValueError(f"unknown arm summary key {key!r}; valid: {SELECTION_SUMMARY}, test_auc_<class or mean>, {', '.join(ARM_COUNT_KEYS)}")  # fmt: skip
    if bound is None:
        return f"{arm}/{key}"
    if bound not in CI_BOUNDS or not key.startswith("test_"):
        raise ValueError(f"no CI bound {bound!r} for {key!r}; test_* keys have 'low' and 'high'")
    return f"{arm}/{key}_ci_{bound}"


# -- artifacts ---------------------------------------------------------------------------------
ARTIFACT_DIRS: tuple[str, ...] = ("predictions", "explain", "heatmaps", "model")  # a trial's
PREDICTIONS = "predictions/test.csv"
EXPLAIN = "explain/test.csv"
READERS = "explain/readers.csv"  # multi-reader datasets: maps vs each reader and the ellipses
CEILING = "study/ceiling.csv"  # parent run: the human ceiling of the test images (per image)
MAPS = "heatmaps/maps.npz"
MODEL = "model/model.pt"
STUDY_CONFIG = "study/config.json"
STUDY_DATA = "study/data.json"  # parent run: what the study trained on (see data_summary)
ANALYSIS_DIR = "analysis"  # artifact folder of the parent run that analysis outputs go to

EXPLAIN_COLUMNS: tuple[str, ...] = ("key", "label", "map", "generator", *SALIENCY_KEYS)
# Values of the explain CSV's "map" column: the arm's own generator map, its decoder map, and the
# "probe" maps (every probe generator on every model, to compare arms map for map).
MAP_KINDS: tuple[str, ...] = ("generator", "decoder", "probe")
# heatmaps/maps.npz: these arrays, plus one per panel generator (``generators.panel_generators``)
MAP_ARRAYS: tuple[str, ...] = ("keys", "labels", "probs", "image", "gaze", "decoder")


# -- the data summary (``study/data.json``) ---------------------------------------------------
DATA_IMAGES, DATA_SPLITS, DATA_EXCLUSIONS = "images", "splits", "exclusions"
DATA_CLASSES = "classes"


# What an exclusion count counts, read off the reason's words: rows of a table
# (``calibration_rows``), ids (``calibration_ids``, ``listed_id_not_found``), readings, files,
# fixations (``off_image_fixations``); any other reason counts images (``no_fixations``: images
# without a fixation). Counts of different units are never added up.
IMAGES = "images"
_UNIT_WORDS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"rows", "row"}), "rows"), (frozenset({"ids", "id"}), "ids"),
    (frozenset({"readings", "reading"}), "readings"), (frozenset({"files"}), "files"),
)  # fmt: skip


def exclusion_unit(reason: str) -> str:
    """What the count of an exclusion reason counts: ``images``, or ``rows`` / ``ids`` /
    ``readings`` / ``files`` / ``fixations`` of the dataset's tables."""
    words = set(reason.split("_"))
    for names, unit in _UNIT_WORDS:
        if words & names:
            return unit
    if reason.endswith("fixations") and not reason.startswith("no_"):
        return "fixations"
    return IMAGES


def excluded_images(exclusions: Mapping[str, int]) -> int:
    """How many images the exclusions left out (the counts in other units are not images)."""
    return sum(int(n) for r, n in exclusions.items() if exclusion_unit(r) == IMAGES)


def data_summary(
    labels: Any,
    split_ids: Any,
    exclusions: Mapping[str, int],
    classes: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    """The ``study/data.json`` layout: split sizes, class balance per split, exclusion counts.

    ``{"images": N, "splits": {"train": {"images": n, "classes": {"Normal": a, ...}}, ...},
    "exclusions": {reason: count}, **extra}`` (extra: e.g. ``image_size``, ``fingerprint``).
    Counts only: no keys or patient ids, so it is safe to log.

    Args:
        labels: class id per kept image (N,), or 0/1 per image and class (N, K) for a
            multi-label task (a class then counts the images where it is present).
        split_ids: split id per kept image (index into ``SPLITS``).
        exclusions: reason -> number of images or rows left out.
        classes: the task's class names.
    """
    labels = np.asarray(labels)
    split_ids = np.asarray(split_ids)
    if len(labels) != len(split_ids):
        raise ValueError(f"{len(labels)} labels but {len(split_ids)} split ids")
    hot = np.eye(len(classes), dtype=np.int64)[labels.astype(np.int64)] if labels.ndim == 1 else labels  # fmt: skip
    splits = {}
    for s, name in enumerate(SPLITS):
        rows = split_ids.astype(np.int64) == s
        counts = hot[rows].sum(0) if rows.any() else np.zeros(len(classes), np.int64)
        splits[name] = {DATA_IMAGES: int(rows.sum()), DATA_CLASSES: dict(zip(classes, map(int, counts), strict=True))}  # fmt: skip
    return {
        DATA_IMAGES: len(labels),
        DATA_SPLITS: splits,
        DATA_EXCLUSIONS: {str(k): int(v) for k, v in sorted(exclusions.items())},
        **extra,
    }
