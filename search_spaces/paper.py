"""The paper's search: learning rate, and for arms with a segmentation loss gamma and the ratio r."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces.registry import FloatRange, SearchSpace, register_space, space_for_arm

if TYPE_CHECKING:
    from trainables.model_sets import Arm

RANGES = {
    "lr": FloatRange(1e-5, 1e-2, log=True),
    "gamma": FloatRange(0.05, 0.95),  # weight of classification vs segmentation loss
    "seg_ratio": FloatRange(0.0, 1.0),  # set 3 only: r * L(decoder, gaze) + (1 - r) * L(map, gaze)
}


@register_space("paper")
def paper(arm: Arm) -> SearchSpace:
    """Full ranges, for the GPU study (``--preset paper``)."""
    return space_for_arm(arm, RANGES)
