"""The HTML report: written from the hand-made record and rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from analysis.report import write_report

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(hand_made_record, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report(hand_made_record.tracking_uri, "gaze-unet", out, resamples=300)


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.html" and report.is_absolute()
    assert text.count("<table") == 4 * 2 + 1 + 1 + 1  # tables + vs paper, seeds, explain, params
    assert text.count('src="data:image/png;base64,') == 1 + 3  # ROC + three panels
    assert not re.search(r'src="(?!data:)', text)  # no external resources
    assert "study/config.json" in text and "&quot;epochs&quot;: 3" in text
    assert "no finished trial" in text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [*cmd, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert dom.count("<table") == 11
    assert dom.count("data:image/png;base64,") == 4
    assert "Table 4. Experiment set 3" in dom
    subprocess.run(
        [*cmd, f"--screenshot={shot}", "--window-size=1200,900", report.as_uri()],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 10_000
