"""Learning rate only; gamma and the segmentation ratio stay at the baseline values."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search_spaces.registry import FloatRange, SearchSpace, register_space, space_for_arm

if TYPE_CHECKING:
    from trainables.model_sets import Arm


@register_space("lr-only")
def lr_only(arm: Arm) -> SearchSpace:
    """Compare arms at their own best learning rate with the loss weights held fixed."""
    return space_for_arm(arm, {"lr": FloatRange(1e-5, 1e-2, log=True)})
