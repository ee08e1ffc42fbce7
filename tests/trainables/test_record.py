"""The record schema's data summary (``study/data.json``)."""

from __future__ import annotations

import json

import pytest

from trainables.record import data_summary


def test_data_summary_counts_splits_classes_and_exclusions():
    summary = data_summary(
        labels=[0, 1, 2, 2, 0, 1],
        split_ids=[0, 0, 0, 1, 2, 2],
        exclusions={"no_fixation_on_image": 2, "calibration_screen": 3},
        classes=("Normal", "CHF", "pneumonia"),
        image_size=64,
    )
    assert summary == {
        "images": 6,
        "splits": {
            "train": {"images": 3, "classes": {"Normal": 1, "CHF": 1, "pneumonia": 1}},
            "val": {"images": 1, "classes": {"Normal": 0, "CHF": 0, "pneumonia": 1}},
            "test": {"images": 2, "classes": {"Normal": 1, "CHF": 1, "pneumonia": 0}},
        },
        "exclusions": {"calibration_screen": 3, "no_fixation_on_image": 2},
        "image_size": 64,
    }
    assert json.loads(json.dumps(summary)) == summary  # plain JSON: loggable with log_dict
    with pytest.raises(ValueError, match="6 labels but 5 split ids"):
        data_summary([0] * 6, [0] * 5, {}, ("Normal", "CHF", "pneumonia"))
