"""THE rule for an arm's best trial, which every consumer calls: the console table, the
``best_of_arm`` tag, the parent run's comparison metrics, the seeds stage, ``results.csv``, the
tables, the figures, DOCTOR and the verdict."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

from trainables.record.schema import FAILED_STATUSES, Status
from trainables.record.trial import Trial

log = logging.getLogger(__name__)


def is_candidate(trial: Trial) -> bool:
    """A search-stage trial of status ok with a finite selection metric and a complete record.

    Test metrics never take part. Seed re-runs (``stage=seeds``) describe the spread of the chosen
    configuration and evidence-grid trials have no search, so neither is a candidate.
    """
    return (
        trial.ok
        and trial.is_search
        and math.isfinite(trial.val_auc)
        and trial.has_predictions is not False
    )


def best_of_arm(trials: Iterable[Trial], arm: str) -> Trial | None:
    """The arm's best trial: the highest validation mean AUC of its best epoch among the
    candidates (``is_candidate``); ties go to the earliest start, then the smaller run id
    (``TIE_RULE``).

    Returns:
        The best trial, or None when the arm has no candidate.
    """
    best: Trial | None = None
    for t in trials:
        if t.arm != arm or not is_candidate(t):
            if t.arm == arm and t.ok and t.is_search and t.has_predictions is False:
                log.warning("run %s (%s) is ok but has no predictions: left out", t.run_id, arm)
            continue
        if best is None or _rank(t) < _rank(best):
            best = t
    return best


def _rank(t: Trial) -> tuple:
    return (-t.val_auc, t.start_time, t.run_id)


def best_of_arms(trials: Sequence[Trial], arms: Iterable[str]) -> dict[str, Trial | None]:
    """``arm -> best_of_arm`` for each of ``arms``."""
    return {arm: best_of_arm(trials, arm) for arm in arms}


def best_of_bests(best: Mapping[str, Trial | None]) -> Trial | None:
    """The selected arm's trial: the same rule applied across the arms' best trials (highest
    validation mean AUC; ties to the earliest start, then the smaller run id). None when no arm
    has a best trial."""
    chosen = [t for t in best.values() if t is not None]
    return min(chosen, key=_rank) if chosen else None


def tied_arms(best: Mapping[str, Trial | None], chosen: Trial) -> list[Trial]:
    """The other arms' best trials with exactly ``chosen``'s selection score (the tie the rule
    broke), in rank order."""
    return sorted(
        (
            t
            for t in best.values()
            if t is not None and t.run_id != chosen.run_id and t.val_auc == chosen.val_auc
        ),
        key=_rank,
    )


TIE_RULE = "ties go to the trial that started first, then to the smaller run id"


def ties(trials: Sequence[Trial], best: Trial) -> list[Trial]:
    """The other candidates of ``best``'s arm with exactly its selection score (the tie that
    the earliest-start rule broke), in rank order."""
    return sorted(
        (
            t
            for t in trials
            if t.arm == best.arm
            and t.run_id != best.run_id
            and is_candidate(t)
            and t.val_auc == best.val_auc
        ),
        key=_rank,
    )


def seed_group(trials: Sequence[Trial], best: Trial) -> list[Trial]:
    """The best trial and every ok run of its arm with the same hyperparameters (any seed)."""
    return [
        t
        for t in trials
        if t.arm == best.arm
        and t.ok
        and t.has_predictions is not False
        and t.hyperparams() == best.hyperparams()
    ]


def failed_arms(trials: Sequence[Trial], arms: Sequence[str]) -> dict[str, str]:
    """Arms without one successful trial, with why (their trials' statuses and last error): the
    driver's exit code and the parent's error, and the reports' note, say the same."""
    out = {}
    for arm in arms:
        mine = [t for t in trials if t.arm == arm]
        if any(t.status == Status.OK for t in mine):
            continue
        errors = [t.error for t in mine if t.status in FAILED_STATUSES and t.error]
        counts = ", ".join(f"{sum(t.status == s for t in mine)} {s}" for s in sorted({t.status for t in mine}))  # fmt: skip
        out[arm] = f"{counts or 'no trial'}" + (
            f"; last error: {errors[-1][:300]}" if errors else ""
        )
    return out


def failed_arms_note(trials: Sequence[Trial], arms: Sequence[str]) -> str:
    """One sentence naming the arms without a successful trial and why; empty when none."""
    failed = failed_arms(trials, arms)
    if not failed:
        return ""
    return "No successful trial for " + "; ".join(f"{arm} ({why})" for arm, why in failed.items()) + "."  # fmt: skip
