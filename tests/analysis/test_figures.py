"""Explainability table, heatmap panels and ROC curves from the hand-made record."""

from __future__ import annotations

import matplotlib.image
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow import MlflowClient
from PIL import Image

from analysis import figures
from analysis.paper import table_arms
from analysis.roc import draw_roc
from tests.analysis.hand_made_record import PANEL_KEYS
from tests.tiny import egd_task
from trainables.panels import MAX_WIDTH_PX
from trainables.record.reader import Record

EGD = egd_task()

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def written(hand_made_record, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    result = figures.write_figures(
        hand_made_record.tracking_uri, "gaze-unet", out, log_to_mlflow=True
    )
    return result, out


def test_explain_table_means_and_exclusions(written):
    result, out = written
    summary = pd.read_csv(out / "explain.csv").set_index(["arm", "map"])
    # Generator CC per image is cc + (-0.01, 0, 0.01) cycling over 12 images: mean exactly cc.
    assert summary.loc[("unet", "generator"), "cc"] == pytest.approx(0.40)
    assert summary.loc[("set1-gbp", "generator"), "cc"] == pytest.approx(0.60)
    assert summary.loc[("unet", "generator"), ["n", "excluded"]].tolist() == [12, 1]  # NaN row
    low, high = summary.loc[("unet", "generator"), ["cc_low", "cc_high"]]
    assert 0.39 <= low < 0.40 < high <= 0.41
    decoder = summary.loc[("unet", "decoder")]
    assert decoder[["cc", "cc_low", "cc_high", "kl", "nss", "auc_judd"]].tolist() == pytest.approx(
        [0.5, 0.5, 0.5, 0.7, 1.0, 0.75]
    )
    assert ("no-seg", "decoder") not in summary.index  # no decoder for no-seg
    assert ("no-seg", "generator") in summary.index
    assert "Set 1, guided backpropagation, generator (12 images)" in result.explain_markdown


def test_panels_and_roc_are_pngs(written):
    result, _ = written
    assert [p.name for p in result.panels] == [f"panel_{k}.png" for k in PANEL_KEYS]
    for path in [*result.panels, result.roc]:
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0.05
        png = Image.open(path)
        assert png.size[0] <= MAX_WIDTH_PX and png.text["layout_problems"] == ""
    # Two arms that train a map (unet's decoder, set 1's GBP; no-seg trains none) -> two rows.
    height, width = matplotlib.image.imread(result.panels[0]).shape[:2]
    assert 0.3 * width < height < 0.5 * width
    # Small multiples: a column per arm against the baseline (4), a row per class (3).
    roc_h, roc_w = matplotlib.image.imread(result.roc).shape[:2]
    assert roc_w > roc_h


def test_panel_caption_answers_the_four_questions(written):
    caption = written[0].panel_caption
    assert "Rows: the arms that train a map (unet, set1-gbp)" in caption
    assert "for the class each model predicted" in caption  # which class
    assert "divided by its own maximum" in caption and "stretched" in caption  # which scale
    assert "the first by key of each class in turn" in caption  # which images
    assert "framed cell is the map of the generator in the arm's loss" in caption  # whose map


def test_panel_rows_frame_the_arms_own_generator(hand_made_record, tmp_path):
    record = Record(hand_made_record.tracking_uri)
    best = record.study("gaze-unet").best_of(table_arms())
    _paths, arms = figures.panel_figures(record, best, tmp_path, EGD.classes, images=1)
    assert arms == ["unet", "set1-gbp"] and len(_paths) == 1
    assert figures.own_generator("set1-gbp") == "gbp" and figures.own_generator("unet") is None
    assert figures.panel_columns() == ("image", "gaze", "gbp", "deconv", "decoder")
    assert not figures.trains_a_map("no-seg") and figures.trains_a_map("set2-deconv")


def test_figures_logged_to_parent(written, hand_made_record):
    client = MlflowClient(tracking_uri=hand_made_record.tracking_uri)
    logged = {f.path for f in client.list_artifacts(hand_made_record.parent, "analysis")}
    assert {
        "analysis/roc.png",
        "analysis/explain.csv",
        f"analysis/panel_{PANEL_KEYS[0]}.png",
    } <= logged


def test_roc_small_multiples_each_arm_against_the_baseline(hand_made_record):
    record = Record(hand_made_record.tracking_uri)
    best = record.study("gaze-unet").best_of(table_arms())
    fig, shown = draw_roc(
        {arm: record.predictions(t.run_id, EGD) for arm, t in best.items() if t is not None}, EGD
    )
    arms = ["no-seg", "set1-gbp", "set2-gbp", "set3-gbp"]  # the baseline is in every panel
    assert len(fig.axes) == len(arms) * 3 and len(fig.legends) == 1
    assert [ax.get_title() for ax in fig.axes[::3]] == arms
    for ax in fig.axes:
        assert len(ax.lines) == 3  # chance diagonal, the baseline's curve, the arm's curve
    # Each panel prints the arm's AUC over the baseline's: the tables' whole-test-set AUCs.
    pneumonia_set1 = fig.axes[arms.index("set1-gbp") * 3 + 2]
    assert [t.get_text() for t in pneumonia_set1.texts] == ["0.750\n0.625"]
    assert shown["set1-gbp"]["auc_pneumonia"] == pytest.approx(0.75)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    legend = fig.legends[0].get_window_extent(renderer)
    assert all(legend.y0 > ax.get_window_extent(renderer).y1 for ax in fig.axes)  # above
