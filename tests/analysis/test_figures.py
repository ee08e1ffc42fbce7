"""Explainability table, heatmap panels and ROC curves from the hand-made record."""

from __future__ import annotations

import matplotlib.image
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow import MlflowClient

from analysis import figures
from analysis.paper import table_arms
from tests.analysis.hand_made_record import PANEL_KEYS
from trainables.record.reader import Record

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
    # Three arms with maps -> three panel rows: taller than wide per column of 5.
    height, width = matplotlib.image.imread(result.panels[0]).shape[:2]
    assert height > 0.5 * width
    roc_h, roc_w = matplotlib.image.imread(result.roc).shape[:2]
    assert roc_w > 2 * roc_h  # one panel per class, side by side


def test_figures_logged_to_parent(written, hand_made_record):
    client = MlflowClient(tracking_uri=hand_made_record.tracking_uri)
    logged = {f.path for f in client.list_artifacts(hand_made_record.parent, "analysis")}
    assert {
        "analysis/roc.png",
        "analysis/explain.csv",
        f"analysis/panel_{PANEL_KEYS[0]}.png",
    } <= logged


def test_roc_has_one_legend_below_the_curves(hand_made_record):
    record = Record(hand_made_record.tracking_uri)
    best = record.study("gaze-unet").best_of(table_arms())
    fig, shown = figures.draw_roc(
        {arm: record.predictions(t.run_id) for arm, t in best.items() if t is not None}
    )
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    legend = fig.legends[0].get_window_extent(renderer)
    assert all(legend.y1 < ax.get_window_extent(renderer).y0 for ax in fig.axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[0] == "U-Net (baseline): Normal 0.625, CHF 0.625, pneumonia 0.625"
    assert shown["set1-gbp"]["auc_pneumonia"] == pytest.approx(0.75)
