"""The one trial type: a child run of a study as the record holds it (writer and reader alike)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trainables.record.schema import SELECTION_METRIC, Stage, Status

# Params that may differ between runs of one configuration: its seed and where it ran.
SEED_INDEPENDENT_PARAMS = frozenset({"seed", "device", "num_threads"})


@dataclass(frozen=True)
class Trial:
    """One child run: its tags, params and latest metric values.

    ``has_predictions`` says whether the run logged ``predictions/test.csv`` (None when the reader
    did not look: ``Store.trials(..., artifacts=False)``); a run marked ok without it is an
    incomplete record and is never anyone's best trial.
    """

    run_id: str
    trial_id: str
    arm: str
    stage: str
    status: str
    error: str = ""
    start_time: int = 0  # ms
    end_time: int | None = None  # ms; None while the run is open
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    has_predictions: bool | None = None

    @property
    def seconds(self) -> float | None:
        """Wall time of the run, None while it is open."""
        if not self.end_time or self.end_time < self.start_time:
            return None
        return (self.end_time - self.start_time) / 1000.0

    @property
    def val_auc(self) -> float:
        """The selection metric (best epoch's validation mean AUC), ``nan`` when missing."""
        return selection_score(self.metrics)

    @property
    def is_search(self) -> bool:
        return self.stage == Stage.SEARCH

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def hyperparams(self) -> dict[str, str]:
        """Params that define the configuration: all but the seed and placement."""
        return {k: v for k, v in self.params.items() if k not in SEED_INDEPENDENT_PARAMS}


def selection_score(metrics: dict[str, float]) -> float:
    """The selection metric of a trial's final metrics, ``nan`` when it has none."""
    value = metrics.get(SELECTION_METRIC)
    try:
        value = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return value
