"""The HTML report: written from the hand-made record and rendered in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from analysis import report as report_module
from analysis.data_summary import NOT_RECORDED, from_predictions
from analysis.html import Linker, run_url
from analysis.paper import METRICS
from analysis.report import PER_TRIAL, build_context, render_html, what_ran, write_report
from analysis.results import auc_resolution, identical_groups
from tests.analysis.hand_made_record import add_trial, perfect
from trainables.panels import MAX_WIDTH_PX, MIN_FONT_PX
from trainables.record.reader import Record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N_TABLES = 1 + 1 + 3 + 4 * 2 + 1 + 1 + 1 + 1  # best, trials, data (3), 1-4 + paper, seeds,
# DOCTOR, explain, params
N_IMAGES = 1 + 1 + 1 + 3  # ROC, learning curves, DOCTOR, three panels


@pytest.fixture(scope="module")
def built(hand_made_record, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    record = Record(hand_made_record.tracking_uri)
    study = record.study("gaze-unet")
    ctx = build_context(record, study, "gaze-unet", out)
    path = out / "report.html"
    path.write_text(render_html(ctx), encoding="utf-8")
    return ctx, path


@pytest.fixture(scope="module")
def report(built):
    return built[1]


class _Tables(HTMLParser):
    """Each <table> as rows of cell texts, keyed by its last CSS class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._rows: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._rows = self.tables.setdefault(dict(attrs)["class"].split()[-1], [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables_of(text: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def row(tables, name: str, first: str) -> list[str]:
    return next(r for r in tables[name] if r and r[0] == first)


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    assert text.count("<table") == N_TABLES
    assert text.count('src="data:image/png;base64,') == N_IMAGES
    assert not re.search(r'src="(?!data:)', text)  # no external resources
    assert "no finished trial" in text
    for anchor in ("best", "trials", "data", "tables", "roc", "curves", "doctor", "explain"):
        assert f'id="{anchor}"' in text


def test_best_trial_hyperparameters_and_test_aucs(built, hand_made_record):
    ctx, report = built
    results = pd.read_csv(ctx.results_path).set_index("arm")
    runs = hand_made_record.runs
    assert results.loc["set1-gbp", "run_id"] == runs["set1_best"]
    assert results.loc["set2-gbp", ["run_id", "lr"]].tolist() == [runs["set2_early"], 0.002]
    assert results.loc["set2-gbp", "searched"] == "lr,gamma"
    assert results.loc["no-seg", "searched"] == "lr"
    assert results.loc["set1-gbp", ["val_auc_mean", "test_auc_pneumonia"]].tolist() == [0.85, 0.75]
    assert pd.isna(results.loc["set1-deconv", "run_id"])
    # The CIs are the tables' own cells (same resamples), the point the whole-test-set AUC.
    long = pd.read_csv(ctx.results_path.parent / "tables.csv")
    cell = long[(long["table"] == 2) & (long["arm"] == "set1-gbp") & (long["metric"] == "auc_mean")]
    assert results.loc["set1-gbp", ["test_auc_mean", "test_auc_mean_low", "test_auc_mean_high"]
                       ].tolist() == pytest.approx(cell[["auc", "low", "high"]].iloc[0].tolist())  # fmt: skip
    html_row = row(tables_of(report.read_text()), "best", "Set 2, guided backpropagation")
    assert html_row[1:6] == [runs["set2_early"], "lr,gamma", "0.002", "0.417", "0.5"]
    assert html_row[7] == "0.700"  # validation mean AUC


def test_trials_and_wall_time_per_arm(built):
    ctx, report = built
    results = ctx.results.set_index("arm")
    assert results.loc["set3-gbp", ["trials", "ok", "stopped"]].tolist() == [3, 2, 1]
    assert results.loc["set1-deconv", ["trials", "failed"]].tolist() == [1, 1]
    # unet: a 90 s search trial from t=3 s and a 60 s seeds trial from t=3.1 s.
    assert results.loc["unet", ["trial_seconds", "span_seconds"]].tolist() == [150.0, 90.0]
    tables = tables_of(report.read_text())
    assert row(tables, "trials", "U-Net (baseline)") == [
        "U-Net (baseline)", "2", "2", "0", "0", "0", "0", "2 min 30 s", "1 min 30 s",
    ]  # fmt: skip
    assert row(tables, "trials", "Set 3, guided backpropagation")[1:4] == ["3", "2", "1"]


def test_same_auc_in_the_roc_legend_the_tables_and_results(built):
    ctx, _ = built
    results = ctx.results.set_index("arm")
    cells = {r.arm: r.cells for t in ctx.tables.tables for r in t.rows if r.cells}
    assert ctx.figures.roc_aucs  # every finished arm has a legend entry
    for arm, shown in ctx.figures.roc_aucs.items():
        for m in METRICS:
            assert shown[m] == pytest.approx(cells[arm][m].point)
            assert shown[m] == pytest.approx(results.loc[arm, f"test_{m}"])
    # ... and the tables print that same number (not the bootstrap median) in front of the CI.
    # (U-Net's mean: whole test set 0.625, bootstrap median 0.629 at 1,000 resamples, seed 0.)
    unet = row(tables_of(built[1].read_text()), "auc", "U-Net (baseline)")
    median = cells["unet"]["auc_mean"].estimate.median
    assert unet[1].startswith("0.625 (") and abs(median - 0.625) > 0.002


def test_identical_predictions_and_the_auc_resolution(built):
    ctx, report = built
    assert ctx.identical == [("no-seg", "set3-gbp"), ("set1-gbp", "set2-gbp")]
    text = report.read_text()
    assert "Without segmentation component, Set 3, guided backpropagation gave identical" in text
    assert "Set 1, guided backpropagation, Set 2, guided backpropagation gave identical" in text
    assert "Normal 1/32 (0.0312)" in text  # 12 images, 4 per class: 4 x 8 pairs
    # The example: 24 images, 8 per class -> steps of 1/128.
    assert auc_resolution(np.repeat(np.arange(3), 8)) == dict.fromkeys(
        ("Normal", "CHF", "pneumonia"), (8, 16)
    )
    a, b = perfect(), perfect()
    b[0, 0] += 1e-9
    assert identical_groups({"x": a, "y": perfect(), "z": b}) == [("x", "y")]


def test_data_section_from_the_recorded_summary(report):
    tables = tables_of(report.read_text())
    assert row(tables, "splits", "train") == ["train", "40", "30", "10", "0"]
    assert row(tables, "splits", "val") == ["val", "44", "0", "18", "26"]
    assert row(tables, "splits", "test") == ["test", "12", "4", "4", "4"]
    assert row(tables, "exclusions", "calibration_screen") == ["calibration_screen", "5"]
    assert row(tables, "exclusions", "total") == ["total", "7"]
    assert row(tables, "data-other", "image_size") == ["image_size", "16"]
    assert "From the study run&#x27;s study/data.json." in report.read_text()


def test_data_section_without_a_recorded_summary(hand_made_record):
    client = MlflowClient(tracking_uri=hand_made_record.tracking_uri)
    root = hand_made_record.root / "no-data-json"
    exp = client.create_experiment("no-data-json", artifact_location=(root / "art").as_uri())
    parent = client.create_run(exp, tags={"role": "study"}).info.run_id
    add_trial(client, exp, parent, root, "a", "unet", start=1, val=0.5, probs=perfect())
    record = Record(hand_made_record.tracking_uri)
    study = record.study("no-data-json")
    assert record.study_data(study.parent_run_id) is None
    summary = from_predictions(record, {"unet": study.trials[0]})
    assert summary.splits.loc["test"].tolist() == ["12", "4", "4", "4"]
    assert summary.splits.loc["train"].tolist() == [NOT_RECORDED] * 4
    assert summary.exclusions is None and "not recorded" in summary.source


def test_learning_curves_from_metric_histories(built, hand_made_record):
    ctx, _ = built
    record = Record(hand_made_record.tracking_uri)
    steps, values = record.metric_history(hand_made_record.runs["unet"], "train/loss")
    assert steps.tolist() == [1, 2] and values.tolist() == [1.0, 0.5]
    assert ctx.curves is not None and ctx.curves.name == "curves.png"
    png = Image.open(ctx.curves)
    assert float(png.text["min_font_px"]) >= MIN_FONT_PX and png.text["layout_problems"] == ""


def test_configuration_shows_what_ran(built, report):
    ctx, _ = built
    config = ctx.record.study_config(ctx.study.parent_run_id)
    shown, varied = what_ran(config, ctx.study)
    assert sorted(varied) == ["arm", "lr", "seed"]  # set per trial; epochs 3 everywhere
    assert shown["trial"]["epochs"] == 3 and shown["trial"]["lr"] == PER_TRIAL
    text = report.read_text()
    assert "&quot;epochs&quot;: 3" in text and "&quot;arm&quot;: &quot;per trial" in text
    assert row(tables_of(text), "config", "space/set1-gbp")[1] == "lr:1e-05-0.01 log,gamma:0.1-0.9"


def test_run_ids_link_to_an_http_tracking_server(built, hand_made_record):
    ctx, _ = built
    exp = ctx.study.experiment_id
    assert run_url("sqlite:///x.db", exp, "a" * 32) is None
    served = dataclasses.replace(
        ctx, link=Linker("http://mlflow.example:5000/", exp, ctx.link.run_ids)
    )
    text = render_html(served)
    for run in (hand_made_record.runs["set1_best"], hand_made_record.parent):
        url = f"http://mlflow.example:5000/#/experiments/{exp}/runs/{run}"
        assert f'<a href="{url}">{run}</a>' in text
    assert '<a href="http' not in render_html(ctx)  # a sqlite store has no UI address


def test_write_report_logs_every_output(hand_made_record, tmp_path, capsys):
    argv = ["--tracking-uri", hand_made_record.tracking_uri, "--out", str(tmp_path), "--log"]
    assert report_module.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")
    client = MlflowClient(tracking_uri=hand_made_record.tracking_uri)
    logged = {f.path for f in client.list_artifacts(hand_made_record.parent, "analysis")}
    for name in ("report.html", "results.csv", "doctor.csv", "doctor.png", "curves.png"):
        assert f"analysis/{name}" in logged
    assert write_report is report_module.write_report  # what the study driver calls


def _embedded_pngs(text: str) -> list[Image.Image]:
    data = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    return [Image.open(io.BytesIO(base64.b64decode(d))) for d in data]


_MEASURE = """<script>
window.addEventListener("load", () => {
  const out = [...document.images].map(
    (i) => i.getAttribute("width") + " " + i.clientWidth);  // content box, no border
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = out.join(";");
  document.body.appendChild(pre);
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"]  # fmt: skip
    text = report.read_text(encoding="utf-8")
    measured = tmp_path / "measured.html"
    measured.write_text(text.replace("</body>", _MEASURE), encoding="utf-8")
    dom = subprocess.run(
        [*cmd, "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert dom.count("<table") == N_TABLES
    assert dom.count("data:image/png;base64,") == N_IMAGES
    for heading in ("Best trial of each arm", "Trials and wall time per arm", "Data",
                    "Learning curves", "Which predictions to trust: DOCTOR",
                    "Table 4. Experiment set 3", "Study configuration (what ran)"):  # fmt: skip
        assert heading in dom
    # Every figure is shown at its own pixel size in a 1280-px window, and its smallest text
    # (recorded when it was drawn, with any text cut off) is readable at that size.
    sizes = re.search(r'<pre id="measured">([^<]*)</pre>', dom).group(1).split(";")
    assert len(sizes) == N_IMAGES
    for size, png in zip(sizes, _embedded_pngs(text), strict=True):
        attr, shown = size.split()
        assert int(attr) == png.size[0] <= MAX_WIDTH_PX and float(shown) == pytest.approx(int(attr))
        assert float(png.text["min_font_px"]) >= MIN_FONT_PX and png.text["layout_problems"] == ""
    subprocess.run(
        [*cmd, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=60, check=True
    )
    assert shot.stat().st_size > 10_000
