"""A narrower space around the baseline, for the few-trial CPU demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces.registry import FloatRange, SearchSpace, register_space, space_for_arm

if TYPE_CHECKING:
    from trainables.model_sets import Arm

RANGES = {
    "lr": FloatRange(3e-4, 3e-3, log=True),
    "gamma": FloatRange(0.25, 0.75),
    "seg_ratio": FloatRange(0.25, 0.75),
}


@register_space("demo")
def demo(arm: Arm) -> SearchSpace:
    """Two or three trials land somewhere sensible: ranges stay near the baseline values."""
    return space_for_arm(arm, RANGES)
