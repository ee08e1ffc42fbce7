"""bounding_boxes.csv: 17 anatomical boxes per image from each phantom's geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.data.egd import BOX_NAMES
from trainables.data.synthetic.cases import Case, heart_ellipse


def bounding_boxes(cases: list[Case]) -> pd.DataFrame:
    """17 anatomical boxes per image (native pixels) from each phantom's geometry."""
    boxes = {  # name -> (x1, x2, y1, y2) in chest units, before heart scaling
        "right lung": (-0.35, -0.05, -0.35, 0.29),
        "left lung": (0.07, 0.35, -0.32, 0.30),
        "right upper lung zone": (-0.35, -0.05, -0.35, -0.14),
        "right mid lung zone": (-0.35, -0.05, -0.14, 0.08),
        "right lower lung zone": (-0.35, -0.05, 0.08, 0.29),
        "left upper lung zone": (0.07, 0.35, -0.32, -0.11),
        "left mid lung zone": (0.07, 0.35, -0.11, 0.09),
        "left lower lung zone": (0.07, 0.35, 0.09, 0.30),
        "right costophrenic angle": (-0.36, -0.27, 0.2, 0.3),
        "left costophrenic angle": (0.27, 0.36, 0.2, 0.31),
        "right hilar structures": (-0.18, -0.05, -0.1, 0.08),
        "left hilar structures": (0.05, 0.18, -0.1, 0.08),
        "right clavicle": (-0.35, -0.03, -0.45, -0.33),
        "left clavicle": (0.03, 0.35, -0.45, -0.33),
        "trachea": (-0.025, 0.025, -0.55, -0.22),
        "upper mediastinum": (-0.08, 0.08, -0.45, -0.08),
    }
    rows = []
    for c in cases:
        hx, hy, ax, ay = heart_ellipse(c)
        named = dict(boxes, **{"cardiac silhouette": (hx - ax, hx + ax, hy - ay, hy + ay)})
        for name in BOX_NAMES:
            x1, x2, y1, y2 = named[name]
            (px1, px2), (py1, py2) = c.to_px(np.array([x1, x2]), np.array([y1, y2]))
            rows.append(
                (
                    c.key,
                    name,
                    *np.round(np.clip([px1, px2], 0, c.width - 1)),
                    *np.round(np.clip([py1, py2], 0, c.height - 1)),
                )
            )
    return pd.DataFrame(rows, columns=["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"])
