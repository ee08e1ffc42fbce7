"""Issue 20, item 2: heatmap panels of keys that are paths or mathtext neither escape their folder
nor stop the trial; titles are drawn as text."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from trainables.panels import PanelRow, panel_figure, save, write_panels


def _arrays(keys: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = len(keys)
    arrays = {"keys": np.array(keys), "labels": np.arange(n) % 3,
              "probs": np.full((n, 3), 1 / 3, dtype=np.float32)}  # fmt: skip
    for name in ("image", "gaze", "gbp", "decoder"):
        arrays[name] = rng.random((n, 16, 16)).astype(np.float32)
    return arrays


def test_write_panels_skips_keys_that_are_paths_and_draws_mathtext_as_text(tmp_path, caplog):
    out = tmp_path / "trial" / "fit" / "heatmaps"
    keys = ["../../escaped_1", "a/b", "$\\x$", "ok-1"]
    with caplog.at_level(logging.WARNING, logger="trainables.panels"):
        paths = write_panels(_arrays(keys), "gbp", out, ("Normal", "CHF", "pneumonia"))
    assert [p.name for p in paths] == ["$\\x$.png", "ok-1.png"]
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["$\\x$.png", "ok-1.png"]
    assert not (tmp_path / "trial" / "escaped_1.png").exists()
    assert caplog.text.count("heatmap panel skipped") == 2
    assert Image.open(out / "$\\x$.png").text["layout_problems"] == ""


def test_a_title_with_dollars_and_backslashes_renders(tmp_path):
    row = PanelRow(
        r"$\alpha$ arm",
        np.zeros((8, 8)),
        {"gbp": np.ones((8, 8))},
        (0.2, 0.5, 0.3),
        classes=("a", "b", "c"),
    )
    fig = panel_figure([row], ("image", "gbp"), r"math$\nosuchcmd$.dcm (model: $\x$)")
    png = save(fig, tmp_path / "p.png")  # mathtext would raise ParseFatalException here
    assert png.is_file()
    texts = [t.get_text() for t in fig.texts]
    assert r"math$\nosuchcmd$.dcm (model: $\x$)" in texts
