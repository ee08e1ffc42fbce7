"""The HTML report: written from the hand-made record and rendered in headless Chromium."""

from __future__ import annotations

import base64
import dataclasses
import html as html_module
import io
import re
import shutil
import subprocess
import unicodedata
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
from tests.tiny import egd_task
from trainables.panels import MAX_WIDTH_PX, MIN_FONT_PX
from trainables.record.reader import Record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N_TABLES = 1 + 1 + 1 + 3 + 4 + 1 + 1 + 1 + 1 + 2  # differences, best, trials, data (3), 1-4,
# ours vs the paper, seeds (unet has two seeds), DOCTOR, explain, what ran + params
N_IMAGES = 1 + 1 + 1 + 3  # ROC, learning curves, DOCTOR, three panels (the arms that train a map)
ANCHORS = ("verdict", "best", "trials", "data", "tables", "paper", "seeds", "roc", "curves",
           "doctor", "explain", "panels", "config")  # fmt: skip


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
    for anchor in ANCHORS:
        assert f'id="{anchor}"' in text and f'<a href="#{anchor}">' in text  # the contents link it


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
    # The hyperparameters an arm's loss never reads are blank: seg_ratio outside set 3, gamma and
    # seg_ratio for no-seg (its run logged 0.41731 and 0.5: they would read as used).
    assert results.loc["set2-gbp", ["lr", "gamma"]].tolist() == [0.002, 0.41731]
    assert results.loc[["set2-gbp", "no-seg"], "seg_ratio"].isna().all()
    assert pd.isna(results.loc["no-seg", "gamma"]) and results.loc["set3-gbp", "seg_ratio"] == 0.5
    html = tables_of(report.read_text())
    html_row = row(html, "best", "Set 2, guided backpropagation")
    assert html_row[1:6] == [runs["set2_early"][:8], "lr, gamma", "0.002", "0.417", ""]
    assert html_row[7] == "0.700"  # validation mean AUC
    assert row(html, "best", "Without segmentation component")[3:6] == ["0.001", "", ""]


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
    assert auc_resolution(np.repeat(np.arange(3), 8), egd_task()) == dict.fromkeys(
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
    # Counts in one unit add up; images and gaze-file rows never do.
    assert row(tables, "exclusions", "calibration_screen") == ["calibration_screen", "5", "images"]
    assert row(tables, "exclusions", "calibration_rows") == ["calibration_rows", "40", "rows"]
    assert row(tables, "exclusions", "total (images)") == ["total (images)", "7", "images"]
    assert row(tables, "exclusions", "total (rows)") == ["total (rows)", "40", "rows"]
    assert not [r for r in tables["exclusions"] if r[0] == "total"]
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
    summary = from_predictions(record, {"unet": study.trials[0]}, egd_task())
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
    tables = tables_of(text)
    assert row(tables, "config", "space/set1-gbp")[1] == "lr:1e-05-0.01 log,gamma:0.1-0.9"
    assert row(tables, "what-ran", "test bootstrap")[1] == "1000 resamples, seed 0"


def test_an_empty_arms_list_shows_the_arms_that_ran(built):
    """study/config.json keeps ``arms`` as given ([] = the default) and the resolved list in its
    settings block: the report shows the resolved one."""
    ctx, _ = built
    config = {"arms": [], "settings": {"arms": ["unet", "no-seg"], "trial": {"lr": 0.001}},
              "trial": {"lr": 0.001}}  # fmt: skip
    shown, varied = what_ran(config, ctx.study)
    assert shown["arms"] == ["unet", "no-seg"] and varied == ["lr"]
    assert shown["settings"]["trial"]["lr"] == PER_TRIAL


def test_run_ids_are_short_and_link_to_the_mlflow_ui(built, hand_made_record):
    ctx, _ = built
    exp = ctx.study.experiment_id
    served = dataclasses.replace(
        ctx, link=Linker("http://mlflow.example:5000/", exp, ctx.link.run_ids)
    )
    text = render_html(served)
    for run in (hand_made_record.runs["set1_best"], hand_made_record.parent):
        url = f"http://mlflow.example:5000/#/experiments/{exp}/runs/{run}"
        assert f'<a class="run" href="{url}" title="run {run}">{run[:8]}</a>' in text
        assert f">{run}<" not in text  # never the 32 characters as a cell's text
    # A local store links to where `mlflow ui` serves it, and says how to start it.
    local = render_html(ctx)
    assert run_url("sqlite:///x.db", exp, "a" * 32) == f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{'a' * 32}"  # fmt: skip
    assert "mlflow ui --backend-store-uri sqlite:" in local
    assert f'title="run {hand_made_record.runs["set1_best"]}"' in local


def test_the_verdict_opens_the_report(built, report):
    """The verdict comes first (before the contents), in the words of verdict.md, with the
    difference table."""
    ctx, _ = built
    text = report.read_text()
    v = ctx.verdict.verdict
    assert text.index('id="verdict"') < text.index('class="toc"') < text.index('id="best"')
    paragraph = re.search(r'<p class="verdict">(.*?)</p>', text, re.DOTALL).group(1)
    plain = html_module.unescape(re.sub(r"<[^>]+>", "", paragraph))
    assert plain == f"{v.selection} {v.sentence}"
    assert plain in (report.parent / "verdict.md").read_text()
    assert v.selected.arm == "set1-gbp"  # highest validation among the arms' best trials
    diffs = tables_of(text)["differences"]
    assert [r[0] for r in diffs[1:]] == [
        "Without segmentation component", "Set 1, guided backpropagation",
        "Set 2, guided backpropagation", "Set 3, guided backpropagation",
    ]  # fmt: skip
    assert diffs[0][1:3] == ["Mean AUC − unet [95% CI]", "Mean AUC: p (Holm)"]


def test_tables_have_a_p_column_and_the_paper_once_with_its_caption(report):
    text = report.read_text()
    tables = tables_of(text)
    header = tables["auc"][0]
    assert header[1:3] == ["Mean AUC (95% CI)", "Mean AUC: p"] and len(header) == 9
    unet = row(tables, "auc", "U-Net (baseline)")
    assert unet[1].startswith("0.625 (") and unet[2] == "reference"
    noseg = row(tables, "auc", "Without segmentation component")
    assert ";" not in noseg[1] and noseg[2] not in ("", "reference")
    paper = tables["paper"]
    assert [r[0] for r in paper].count("U-Net (baseline)") == 1  # once, not once per table
    assert row(tables, "paper", "Without segmentation component")[1:4] == [
        "1.000",
        "0.873",
        "0.128",
    ]
    caption = re.search(r'id="paper".*?<p class="caption">(.*?)</p>', text, re.DOTALL).group(1)
    assert "12 test images" in caption and "EGD-CXR, 1,017" in caption and "224 px" in caption


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


def _chromium(tmp_path) -> list[str]:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [*_chromium(tmp_path), "--window-size=1280,900"]
    text = report.read_text(encoding="utf-8")
    measured = tmp_path / "measured.html"
    measured.write_text(text.replace("</body>", _MEASURE), encoding="utf-8")
    dom = subprocess.run(
        [*cmd, "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert dom.count("<table") == N_TABLES
    assert dom.count("data:image/png;base64,") == N_IMAGES
    for heading in ("Verdict", "Contents", "Best trial of each arm", "Trials and wall time per arm",
                    "Data", "Learning curves", "Which predictions to trust: DOCTOR",
                    "Table 4. Experiment set 3", "Ours vs the paper", "Heatmap panels",
                    "Study configuration (what ran)"):  # fmt: skip
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


_OVERFLOW = """<script>
window.addEventListener("load", () => {
  const wraps = [...document.querySelectorAll(".table-wrap")].map(
    (w) => w.firstElementChild.className + " " + w.scrollWidth + " " + w.clientWidth);
  const doc = document.documentElement;
  const pre = document.createElement("pre");
  pre.id = "overflow";
  pre.textContent = [doc.scrollWidth + " " + window.innerWidth, ...wraps].join(";");
  document.body.appendChild(pre);
});
</script></body>"""


def _overflowing(cmd: list[str], page, tmp_path) -> tuple[list[str], int]:
    """The tables that would scroll sideways in a 1280-px window, and how many were measured
    (the page itself counts as one, named "page")."""
    measured = tmp_path / f"overflow-{page.stem}.html"
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", _OVERFLOW))
    dom = subprocess.run(
        [*cmd, "--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom",
         measured.as_uri()], capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    page_w, *tables = re.search(r'<pre id="overflow">([^<]*)</pre>', dom).group(1).split(";")
    wide = ["page"] if int(page_w.split()[0]) > int(page_w.split()[1]) else []
    for t in tables:
        name, scroll, client = t.rsplit(" ", 2)
        wide += [name] if int(scroll) > int(client) else []
    return wide, 1 + len(tables)


def _pdf_text_runs(pdf) -> tuple[list[tuple[str, float]], float]:
    """Every text run of the printed pages with its x position, and the page width."""
    from pypdf import PdfReader

    reader = PdfReader(pdf)
    runs: list[tuple[str, float]] = []

    def visit(text, cm, tm, _font, _size):
        if text.strip():
            runs.append(
                (unicodedata.normalize("NFKC", text), cm[0] * tm[4] + cm[2] * tm[5] + cm[4])
            )

    for page in reader.pages:
        page.extract_text(visitor_text=visit)
    return runs, float(reader.pages[0].mediabox.width)


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", html_module.unescape(text)))


def _printed_columns_missing(cmd: list[str], page, tmp_path) -> list[str]:
    """Column headers of the page's tables that the print PDF lacks or prints off the page."""
    pdf = tmp_path / f"{page.stem}.pdf"
    subprocess.run([*cmd, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    runs, width = _pdf_text_runs(pdf)
    printed = _squeezed("".join(t for t, x in runs if 0 <= x < width))
    headers = [h for t in tables_of(page.read_text(encoding="utf-8")).values() for h in t[0]]
    return [h for h in headers if _squeezed(h) not in printed]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_no_table_scrolls_at_1280_px_and_print_keeps_every_column(report, tmp_path):
    """At 1,280 px no table (nor the page) needs a horizontal scroll bar, and the print PDF
    (A4 landscape, the report's print style) has every column header of every table on the
    page. A page whose table cannot fit fails both checks (the checks can fail)."""
    cmd = _chromium(tmp_path)
    wide, measured = _overflowing(cmd, report, tmp_path)
    assert wide == [] and measured == N_TABLES + 1
    assert _printed_columns_missing(cmd, report, tmp_path) == []
    # The control: a table of 16 unbreakable 40-character cells, without the report's style.
    cells = "".join(f"<th>{'W' * 39}{i:x}</th>" for i in range(16))
    bad = tmp_path / "too-wide.html"
    bad.write_text(f'<html><body><div class="table-wrap" style="overflow-x:auto">'
                   f'<table class="wide"><tr>{cells}</tr></table></div></body></html>')  # fmt: skip
    assert _overflowing(cmd, bad, tmp_path)[0] == ["wide"]
    assert f"{'W' * 39}f" in _printed_columns_missing(cmd, bad, tmp_path)
