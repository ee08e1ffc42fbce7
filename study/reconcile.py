"""Make the MLflow record agree with what Tune did: every ended trial gets one run with a final
status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables import tracking
from trainables.model_sets import get_arm
from trainables.record import trial_tags


def _arm_tags(config: dict[str, Any], stage: str) -> dict[str, str]:
    name = str(config.get("arm", ""))
    try:
        arm = get_arm(name)
    except KeyError:  # the trial may have failed precisely because of its arm
        return trial_tags(name, stage)
    return trial_tags(arm.name, stage, arm.model_set, arm.generator)


def close_open_trials(ctx: tracking.TrackingContext, outcome: Any, stage: str) -> None:
    """Give every ended trial of a Tuner a final status in MLflow.

    Runs still "running" after their Tuner returned were stopped by ASHA ("stopped") or errored in a
    way the trial could not record itself (e.g. a node lost after the last retry: "failed"). A trial
    that errored before it opened its run gets a failed run, so every trial has exactly one.
    """
    records = {r.trial_id: r for r in tracking.trial_records(ctx)}
    for result in outcome.results:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        error = f"{type(result.error).__name__}: {result.error}" if result.error else None
        record = records.get(trial_id)
        if record is None:
            if error is None:
                continue
            run_id = tracking.trial_run(
                ctx,
                trial_id,
                run_id=None,
                tags=_arm_tags(result.config, stage),
                params=result.config,
            )
            tracking.set_status(ctx, run_id, "failed", error)
        elif record.status == "running":
            tracking.set_status(ctx, record.run_id, "failed" if error else "stopped", error)
