"""Heatmap panels as PNG: input, gaze map, generator map, decoder map, side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trainables.config import CLASSES


def write_panels(arrays: dict[str, np.ndarray], generator: str, out_dir: Path) -> list[Path]:
    """One PNG per panel image in ``arrays`` (the ``heatmaps/maps.npz`` layout); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, key in enumerate(arrays.get("keys", [])):
        image = arrays["image"][i]
        # "generator": the arm's own map (maps.npz also keeps gbp / deconv / gradcam of every arm)
        columns = [("input", None), ("gaze", "gaze map"), ("generator", f"{generator} map"),
                   ("decoder", "decoder map")]
        fig, axes = plt.subplots(1, len(columns), figsize=(3 * len(columns), 3.3))
        for ax, (name, title) in zip(axes, columns, strict=True):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if name != "input":
                m = arrays[name][i]
                if np.isfinite(m).all():
                    ax.imshow(m, cmap="jet", alpha=0.45, vmin=0, vmax=1)
                else:
                    ax.text(0.5, 0.5, "n/a", color="w", ha="center", transform=ax.transAxes)
            ax.set_title(title or f"{CLASSES[int(arrays['labels'][i])]}", fontsize=9)
            ax.axis("off")
        probs = arrays["probs"][i]
        fig.suptitle(f"{key}  p=" + " ".join(f"{c}:{p:.2f}" for c, p in zip(CLASSES, probs, strict=True)),
                     fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
