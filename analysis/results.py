"""The per-arm results: best trial's hyperparameters, validation and test AUCs, trials and time.

``results.csv`` (beside the report) has one row per arm: its best trial by validation (run id,
hyperparameters, best epoch, validation mean AUC), the whole-test-set AUCs with the 2.5th-97.5th
percentile bootstrap interval (the same resamples and numbers as Tables 1-4), and the arm's trial
counts by status and wall time. A hyperparameter the arm's loss never reads
(``trainables.model_sets.unused_hyperparams``: no-seg's gamma and seg_ratio, ...) is blank. The
report shows the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.formats import format_auc
from analysis.paper import ARM_LABELS, METRIC_LABELS, METRICS
from analysis.tables import Cell, Table
from search_spaces import SEARCHABLE
from trainables.model_sets import uses_hyperparam
from trainables.record import BEST_EPOCH, Status
from trainables.record.reader import Study
from trainables.record.trial import Trial
from trainables.task import Task

TRIAL_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
HYPERPARAMS: tuple[str, ...] = SEARCHABLE  # blank for an arm whose loss never reads one
STATUS_LABELS = {Status.OK: "finished", Status.STOPPED: "stopped early", Status.DIVERGED: "diverged",
                 Status.FAILED: "failed", Status.RUNNING: "running"}  # fmt: skip
SPACE_PARAM = "space/{arm}"  # parent-run param: the arm's search space, "lr:1e-05-0.01 log,..."
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class ArmSummary:
    """One arm of the study: its trials, its best one, and what was searched."""

    arm: str
    best: Trial | None
    trials: tuple[Trial, ...]
    searched: tuple[str, ...] | None  # None: the parent run did not record the space

    def counts(self) -> dict[str, int]:
        """Trials per status (``TRIAL_STATUSES``; anything else under "other")."""
        out = dict.fromkeys(TRIAL_STATUSES, 0) | {"other": 0}
        for t in self.trials:
            out[t.status if t.status in TRIAL_STATUSES else "other"] += 1
        return out

    def trial_seconds(self) -> float:
        """Summed wall time of the arm's closed trial runs."""
        return float(sum(s for t in self.trials if (s := t.seconds) is not None))

    def span_seconds(self) -> float:
        """From the first trial's start to the last trial's end (closed runs)."""
        closed = [t for t in self.trials if t.seconds is not None]
        if not closed:
            return 0.0
        return (max(t.end_time for t in closed) - min(t.start_time for t in closed)) / 1000.0


def searched_params(study: Study, arm: str) -> tuple[str, ...] | None:
    """The hyperparameters the arm's search varied, from the parent run's ``space/<arm>``."""
    space = study.params.get(SPACE_PARAM.format(arm=arm))
    if space is None:
        return None
    return tuple(part.split(":", 1)[0].strip() for part in space.split(",") if part.strip())


def arm_summaries(
    study: Study, best: Mapping[str, Trial | None], arms: Sequence[str]
) -> list[ArmSummary]:
    """One summary per arm in ``arms`` (plus any other arm the study ran, at the end)."""
    order = list(dict.fromkeys([*arms, *(t.arm for t in study.trials)]))
    return [
        ArmSummary(
            arm=arm,
            best=best.get(arm),
            trials=tuple(t for t in study.trials if t.arm == arm),
            searched=searched_params(study, arm),
        )
        for arm in order
    ]


def arm_cells(tables: Sequence[Table]) -> dict[str, dict[str, Cell]]:
    """``arm -> metric -> Cell`` from Tables 1-4 (the baseline row is the same in each)."""
    out: dict[str, dict[str, Cell]] = {}
    for t in tables:
        for row in t.rows:
            if row.cells and row.arm not in out:
                out[row.arm] = row.cells
    return out


def _float(value: str | float | None) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def results_columns(metrics: Sequence[str] = METRICS) -> tuple[str, ...]:
    """The columns of ``results.csv`` for a task's AUC keys (table order)."""
    return (
        "arm", "run_id", "stage", "searched", *HYPERPARAMS, "seed", "best_epoch", "val_auc_mean",
        *(f"test_{m}{s}" for m in metrics for s in ("", "_low", "_high")),
        "n_test", "trials", *TRIAL_STATUSES, "other", "trial_seconds", "span_seconds",
    )  # fmt: skip


RESULTS_COLUMNS: tuple[str, ...] = results_columns()  # an EGD-CXR study's


def results_frame(summaries: Sequence[ArmSummary], tables: Sequence[Table]) -> pd.DataFrame:
    """``results.csv``: one row per arm (see the module docstring)."""
    cells = arm_cells(tables)
    n_test = tables[0].n_test if tables else 0
    metrics = tables[0].metrics if tables else METRICS
    rows = []
    for s in summaries:
        b = s.best
        row: dict[str, object] = {
            "arm": s.arm,
            "run_id": b.run_id if b else None,
            "stage": b.stage if b else None,
            "searched": ",".join(s.searched) if s.searched is not None else None,
        }
        # blank (nan) where the arm's loss never reads it: a value there would read as used
        row |= {
            h: _float(b.params.get(h)) if b and uses_hyperparam(s.arm, h) else math.nan
            for h in HYPERPARAMS
        }
        row["seed"] = b.params.get("seed") if b else None
        row["best_epoch"] = b.metrics.get(BEST_EPOCH, math.nan) if b else math.nan
        row["val_auc_mean"] = b.val_auc if b else math.nan
        for m in metrics:
            c = cells.get(s.arm, {}).get(m)
            row |= {
                f"test_{m}": c.point if c else math.nan,
                f"test_{m}_low": c.estimate.low if c else math.nan,
                f"test_{m}_high": c.estimate.high if c else math.nan,
            }
        row["n_test"] = n_test if s.arm in cells else 0
        row["trials"] = len(s.trials)
        row |= s.counts()
        row["trial_seconds"] = s.trial_seconds()
        row["span_seconds"] = s.span_seconds()
        rows.append(row)
    return pd.DataFrame.from_records(rows, columns=results_columns(metrics))


def format_param(value: float) -> str:
    """``3e-04``-style; blank for a hyperparameter the arm does not use (or did not record)."""
    return "" if not math.isfinite(value) else f"{value:.3g}"


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


BEST_CLASSES = 4  # more AUC columns than this (REFLACX's findings): the mean only here


def best_display(results: pd.DataFrame, labels: Mapping[str, str] = METRIC_LABELS) -> pd.DataFrame:
    """The best trial of each arm: run, hyperparameters, validation and test AUCs (``labels``:
    AUC key -> column label; of many classes the mean only, per class in the AUC table)."""
    if len(labels) > BEST_CLASSES:
        labels = {"auc_mean": labels["auc_mean"]}
    metrics = tuple(labels)
    data = {}
    for _, r in results.iterrows():
        label = ARM_LABELS.get(r["arm"], r["arm"])
        if pd.isna(r["run_id"]):
            data[label] = ["no finished trial"] + ["—"] * (6 + len(metrics))
            continue
        searched = r["searched"] if isinstance(r["searched"], str) else NOT_RECORDED
        cells = [r["run_id"], searched.replace(",", ", ") or "none"]
        cells += [format_param(r[h]) for h in HYPERPARAMS]
        cells += [f"{int(r['best_epoch'])}" if math.isfinite(r["best_epoch"]) else "—"]
        cells += [format_auc(r["val_auc_mean"])]
        cells += [
            f"{format_auc(r[f'test_{m}'])} ({format_auc(r[f'test_{m}_low'])}, "
            f"{format_auc(r[f'test_{m}_high'])})"
            for m in metrics
        ]
        data[label] = cells
    columns = ["Best run", "Searched", "lr", "gamma", "seg_ratio", "Best epoch", "Val mean AUC"]
    columns += [f"Test {labels[m]}" for m in metrics]
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm"
    return frame


def trials_display(results: pd.DataFrame) -> pd.DataFrame:
    """Trials per arm by status, and wall time."""
    data = {}
    for _, r in results.iterrows():
        cells = [str(r["trials"])] + [str(r[s]) for s in STATUS_LABELS]
        cells += [format_duration(r["trial_seconds"]), format_duration(r["span_seconds"])]
        data[ARM_LABELS.get(r["arm"], r["arm"])] = cells
    columns = [
        "Trials",
        *STATUS_LABELS.values(),
        "Trial time (sum)",
        "Wall time (first start to last end)",
    ]
    frame = pd.DataFrame.from_dict(data, orient="index", columns=columns)
    frame.index.name = "Arm"
    return frame


def identical_groups(probs: Mapping[str, np.ndarray]) -> list[tuple[str, ...]]:
    """Groups (of two or more arms) whose test probabilities are exactly equal, in arm order."""
    groups: list[list[str]] = []
    for arm, p in probs.items():
        for g in groups:
            if np.array_equal(probs[g[0]], p):
                g.append(arm)
                break
        else:
            groups.append([arm])
    return [tuple(g) for g in groups if len(g) > 1]


def auc_resolution(labels: np.ndarray, task: Task) -> dict[str, tuple[int, int]]:
    """Per class, ``(n_pos, n_neg)`` of the one-vs-rest (or per-finding) test labels: its AUC
    moves in steps of 1 / (n_pos * n_neg) (ties aside, which give half steps)."""
    hot = task.multi_hot(labels)
    pos = hot.sum(0)
    return {c: (int(pos[i]), int(len(hot) - pos[i])) for i, c in enumerate(task.classes)}


def resolution_note(labels: np.ndarray, groups: Sequence[tuple[str, ...]], task: Task) -> str:
    """What the test set can resolve, and which arms predicted exactly alike."""
    parts = []
    for c, (pos, neg) in auc_resolution(labels, task).items():
        steps = pos * neg
        parts.append(f"{c} 1/{steps} ({1 / steps:.4f})" if steps else f"{c}: no AUC")
    text = (
        f"AUC resolution of the {len(labels)}-image test set: a per-class AUC moves in steps of "
        f"1/(positives x negatives): {'; '.join(parts)}. Differences between arms smaller than a "
        "few steps are within what this test set can tell apart."
    )
    for g in groups:
        names = ", ".join(ARM_LABELS.get(a, a) for a in g)
        text += (
            f" {names} gave identical test predictions (every probability equal), so their AUCs "
            "and curves coincide: the comparison cannot separate them."
        )
    return text
