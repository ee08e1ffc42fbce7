"""MLflow entities from Python values, within MLflow's limits: params and tags cut to its
maximum lengths, metrics only when finite numbers (an undefined AUC is left out, never logged as a
made-up value)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunTag

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
MAX_TAG_CHARS = 5000


def params(values: Mapping[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in values.items()]


def tags(values: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in values.items()]


def now_ms() -> int:
    return int(time.time() * 1000)


def finite_metrics(metrics: Mapping[str, Any], prefixes: Iterable[str], step: int) -> list[Metric]:
    """The finite numbers of ``metrics`` whose key starts with one of ``prefixes``, at ``step``."""
    now = now_ms()
    return [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if k.startswith(tuple(prefixes))
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    ]
