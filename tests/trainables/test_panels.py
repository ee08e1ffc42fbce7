"""The one panel renderer: class names and the predicted class, a colour bar, readable text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from tests.tiny import egd_task
from trainables.panels import (
    DPI,
    MAX_WIDTH_PX,
    MIN_FONT_PX,
    PanelRow,
    PanelStyle,
    layout_problems,
    ordered_columns,
    panel_figure,
    prediction_lines,
    save,
    write_panels,
)

CLASSES = egd_task().classes
PROJECT_DIR = Path(__file__).resolve().parents[2]


def _texts(fig: Figure) -> list[str]:
    fig.draw_without_rendering()
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def _rows(n: int, size: int = 16) -> list[PanelRow]:
    rng = np.random.default_rng(0)
    maps = {k: rng.random((size, size)) for k in ("gbp", "deconv", "gaze")}
    maps["decoder"] = np.full((size, size), np.nan)  # an arm that trains no decoder
    probs = [(0.1, 0.7, 0.2), (0.5, 0.3, 0.2), (0.2, 0.2, 0.6)]
    return [
        PanelRow(f"arm {i}", rng.random((size, size)), maps, probs[i % 3], 1, CLASSES)
        for i in range(n)
    ]


def test_prediction_lines_name_every_class_and_the_predicted_one():
    assert prediction_lines([0.1, 0.7, 0.2], CLASSES, true_label=1) == [
        "predicted: CHF", "correct", "p(Normal) 0.10", "p(CHF) 0.70", "p(pneumonia) 0.20",
    ]  # fmt: skip
    assert prediction_lines([0.45, 0.45, 0.1], CLASSES, true_label=2)[:2] == [
        "predicted: Normal",
        "wrong",
    ]
    assert prediction_lines([0.2, 0.2, 0.6], CLASSES) == [
        "predicted: pneumonia", "p(Normal) 0.20", "p(CHF) 0.20", "p(pneumonia) 0.60",
    ]  # fmt: skip


def test_panel_has_headings_predictions_na_and_one_colour_bar():
    columns = ("image", "gbp", "deconv", "gaze", "decoder")
    fig = panel_figure(_rows(3), columns, "Test image k, true class CHF")
    texts = _texts(fig)
    for heading in ("Input", "GBP map", "deconvNet map", "Gaze map", "Decoder (stretched)"):
        assert texts.count(heading) == 1  # once, over the first row
    labels = [t for t in texts if t.startswith("arm ")]
    assert labels[0].splitlines()[:3] == ["arm 0", "predicted: CHF", "correct"]
    assert labels[1].splitlines()[:3] == ["arm 1", "predicted: Normal", "wrong"]
    assert texts.count("n/a") == 3  # the decoder column of every row
    assert len(fig.axes) == 3 * len(columns) + 1  # the grid and one colour bar
    assert "map value (0 low, 1 high)" in texts
    assert layout_problems(fig) == []


def test_one_column_order_for_every_panel():
    """Trial panels, the report and predict draw their columns in one order."""
    assert ordered_columns(("decoder", "gbp", "image", "gaze")) == (
        "image",
        "gaze",
        "gbp",
        "decoder",
    )
    assert ordered_columns(("image", "decoder", "deconv", "gbp", "gaze")) == (
        "image", "gaze", "gbp", "deconv", "decoder",
    )  # fmt: skip
    assert ordered_columns(("image", "decoder", "gradcam")) == ("image", "gradcam", "decoder")


def test_the_decoder_is_stretched_to_its_own_range_and_the_own_map_framed():
    """A decoder map spanning 0.48-0.52 would be a flat wash on the 0-1 scale: it is drawn
    stretched, with its range printed; the row's own generator map has a coloured frame."""
    rng = np.random.default_rng(0)
    flat = 0.48 + 0.04 * rng.random((16, 16))
    row = PanelRow("set1-gbp", rng.random((16, 16)), {"gbp": rng.random((16, 16)), "decoder": flat},
                   (0.2, 0.5, 0.3), classes=CLASSES, own="gbp")  # fmt: skip
    fig = panel_figure([row], ("image", "gbp", "decoder"), "t")
    texts = _texts(fig)
    assert f"{flat.min():.2f}–{flat.max():.2f}" in texts
    assert any("own map: GBP map" in t for t in texts)
    image, gbp, decoder = fig.axes[:3]
    shown = decoder.get_images()[1].get_array()
    assert float(shown.min()) == pytest.approx(0.0) and float(shown.max()) == pytest.approx(1.0)
    assert gbp.spines["left"].get_linewidth() == 3 and image.spines["left"].get_linewidth() < 3
    plain = panel_figure([row], ("image", "decoder"), "t", style=PanelStyle(stretch=frozenset()))
    assert float(plain.axes[1].get_images()[1].get_array().max()) < 0.53  # unstretched


def test_save_records_small_cut_off_or_too_wide_text(tmp_path, caplog):
    small = Figure(figsize=(4, 3), dpi=DPI)
    small.text(0.5, 0.5, "tiny", fontsize=6)
    cut = Figure(figsize=(4, 3), dpi=DPI)
    cut.text(0.98, 0.5, "a label running off the right edge", fontsize=10)
    wide = Figure(figsize=(MAX_WIDTH_PX / DPI + 1, 3), dpi=DPI)
    wide.text(0.5, 0.5, "fine", fontsize=10)
    expected = {
        "small": "text 'tiny' is 8.3 px (< 10.0)",
        "cut": "text 'a label running off the right edge' is cut off at the figure's edge",
        "wide": f"figure is {MAX_WIDTH_PX + DPI} px wide (> {MAX_WIDTH_PX})",
    }
    for name, fig in (("small", small), ("cut", cut), ("wide", wide)):
        png = Image.open(save(fig, tmp_path / f"{name}.png"))
        assert png.text["layout_problems"] == expected[name]
        assert f"{name}.png: {expected[name]}" in caplog.text  # logged, not raised
    assert Image.open(tmp_path / "small.png").text["min_font_px"] == "8.3"


def test_write_panels_one_png_per_image_with_its_font_size(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"keys": np.array(["a", "b"]), "labels": np.array([0, 2]),
              "probs": np.array([[0.8, 0.1, 0.1], [0.3, 0.3, 0.4]])}  # fmt: skip
    for name in ("image", "gaze", "gbp", "deconv", "gradcam", "decoder"):
        arrays[name] = rng.random((2, 32, 32)).astype(np.float32)
    paths = write_panels(arrays, "gbp", tmp_path, CLASSES)
    assert [p.name for p in paths] == ["a.png", "b.png"]
    for p in paths:
        png = Image.open(p)
        assert float(png.text["min_font_px"]) >= MIN_FONT_PX and png.size[0] <= MAX_WIDTH_PX
        assert png.text["layout_problems"] == ""


def test_the_renderer_imports_without_mlflow_or_torch():
    probe = "import sys, trainables.panels; print(sorted({'mlflow', 'torch'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_DIR, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"
