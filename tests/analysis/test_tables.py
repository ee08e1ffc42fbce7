"""Tables 1-4 from the hand-made record: exact AUCs, best-by-validation, missing arms, outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from analysis import tables
from analysis.formats import format_p
from analysis.paper import METRICS
from analysis.table_render import one_seed, seeds_note
from tests.analysis.hand_made_record import add_trial, perfect, predictions_frame
from trainables.record.reader import Record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def written(hand_made_record, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    result = tables.write_tables(
        hand_made_record.tracking_uri, "gaze-unet", out, log_to_mlflow=True
    )
    return result, out


def _cells(long: pd.DataFrame, table: int, arm: str) -> dict[str, float]:
    part = long[(long["table"] == table) & (long["arm"] == arm)]
    return dict(zip(part["metric"], part["auc"]))


def test_exact_aucs_from_hand_made_predictions(written, hand_made_record):
    _, out = written
    long = pd.read_csv(out / "tables.csv")
    assert _cells(long, 1, "unet") == pytest.approx(
        {"auc_mean": 0.625, "auc_normal": 0.625, "auc_chf": 0.625, "auc_pneumonia": 0.625}
    )
    assert _cells(long, 1, "no-seg") == pytest.approx(dict.fromkeys(_cells(long, 1, "no-seg"), 1.0))
    # set1-gbp: the validation-best run (pneumonia 0.75), not the decoy with perfect test AUCs.
    assert _cells(long, 2, "set1-gbp") == pytest.approx(
        {"auc_mean": 2.75 / 3, "auc_normal": 1.0, "auc_chf": 1.0, "auc_pneumonia": 0.75}
    )
    # set2-gbp: a validation tie goes to the earlier run (pneumonia 0.75, not the perfect one).
    assert _cells(long, 3, "set2-gbp")["auc_pneumonia"] == pytest.approx(0.75)
    rows = long[(long["table"] == 2) & (long["arm"] == "set1-gbp")]
    assert set(rows["run_id"]) == {hand_made_record.runs["set1_best"]}
    # A perfectly separable arm is perfect in every resample: its interval collapses to 1.
    noseg = long[(long["table"] == 1) & (long["arm"] == "no-seg")]
    assert (noseg[["median", "low", "high"]] == 1.0).all().all()
    assert set(long["n_test"]) == {12}


def test_p_values_methods_and_baseline_row(written):
    _, out = written
    long = pd.read_csv(out / "tables.csv")
    base = long[long["arm"] == "unet"]
    assert base["p_value"].isna().all() and len(base) == 4 * 4  # baseline row in all four tables
    noseg = long[(long["table"] == 1) & (long["arm"] == "no-seg")].set_index("metric")
    assert noseg.loc["auc_mean", "p_method"] == "bootstrap"
    assert (noseg.loc[["auc_normal", "auc_chf", "auc_pneumonia"], "p_method"] == "DeLong").all()
    # Perfect vs 0.625 on 12 images: the paired bootstrap difference never crosses zero.
    assert noseg.loc["auc_mean", "p_value"] == pytest.approx(2 / (1000 - _skipped(out) + 1))
    assert (noseg["diff_low"] > 0).all()
    assert noseg.loc["auc_mean", "paper_median"] == 0.873
    assert noseg.loc["auc_mean", "vs_paper"] == pytest.approx(1.0 - 0.873)


def _skipped(out) -> int:
    text = (out / "tables.md").read_text()
    return int(text.split("seed 0; ")[1].split(" resamples")[0])


def test_markdown_missing_arms_and_paper_comparison(written):
    result, out = written
    md = result.markdown
    assert md == (out / "tables.md").read_text()
    for n in (1, 2, 3, 4):
        assert f"## Table {n}." in md
    # The paper's format with a labelled p column: AUC (CI) | p per metric.
    assert "| Arm | Mean AUC (95% CI) | Mean AUC: p | Normal AUC (95% CI) | Normal AUC: p |" in md
    line = next(x for x in md.splitlines() if x.startswith("| Set 1, deconvNet |"))
    assert "no finished trial" in line  # only a failed run
    assert "| Set 2, deconvNet | no finished trial |" in md
    assert "| U-Net (baseline) | 0.625 (" in md and "| reference |" in md
    assert "DeLong" in md and "paired" in md
    assert "| 1.000 (1.000, 1.000) | " in md and "1.000 (1.000, 1.000); " not in md
    # Ours vs the paper: one table, the baseline once, the paper's p, and a caption naming both.
    paper = md.split("## Ours vs the paper")[1].split("## Seeds")[0]
    assert paper.count("| U-Net (baseline) |") == 1
    assert "| Set 3, guided backpropagation | 1.000 | 0.913 | 1.281×10⁻⁶ |" in paper
    assert "12 test images" in paper and "The paper's: EGD-CXR, 1,017" in paper
    tex = (out / "tables.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 4 and "no finished trial" in tex


def test_one_seed_per_arm_is_a_note_not_a_table():
    rows = [tables.SeedRow("unet", ("r1",), ("0",), {m: np.array([0.7]) for m in METRICS})]
    assert one_seed(rows)
    note = seeds_note(rows)
    assert note.startswith("One seed per arm (seed 0)") and "--seeds N" in note


def test_seeds_table(written, hand_made_record):
    result, out = written
    seeds = pd.read_csv(out / "seeds.csv", dtype={"seed": str})
    unet = seeds[seeds["arm"] == "unet"]
    assert set(unet["run_id"]) == {
        hand_made_record.runs["unet"],
        hand_made_record.runs["unet_seed1"],
    }
    assert unet["auc_mean"].mean() == pytest.approx((0.625 + 1.0) / 2)
    line = next(x for x in result.markdown.splitlines() if x.startswith("| U-Net (baseline) | 2 |"))
    assert "0.812 ± 0.265 [0.625, 1.000]" in line  # sd of (0.625, 1.0), ddof 1


def test_outputs_logged_to_parent_run(written, hand_made_record):
    client = MlflowClient(tracking_uri=hand_made_record.tracking_uri)
    logged = {f.path for f in client.list_artifacts(hand_made_record.parent, "analysis")}
    assert {"analysis/tables.md", "analysis/tables.csv", "analysis/seeds.csv"} <= logged


def test_key_mismatch_between_arms_is_an_error(hand_made_record):
    # A second study in the same store whose no-seg run predicted one test image fewer.
    client = MlflowClient(tracking_uri=hand_made_record.tracking_uri)
    root = hand_made_record.root / "mismatch"
    exp = client.create_experiment("mismatch", artifact_location=(root / "art").as_uri())
    parent = client.create_run(exp, tags={"role": "study"}).info.run_id
    add_trial(client, exp, parent, root, "a", "unet", start=1, val=0.5, probs=perfect())
    short = predictions_frame(perfect()).iloc[1:]
    add_trial(client, exp, parent, root, "b", "no-seg", start=2, val=0.5, predictions=short)
    record = Record(hand_made_record.tracking_uri)
    with pytest.raises(ValueError, match="differ in 1 images"):
        tables.build_tables(record, record.study("mismatch"))


def test_cli_prints_markdown(hand_made_record, tmp_path, capsys):
    argv = ["--tracking-uri", hand_made_record.tracking_uri, "--experiment", "gaze-unet",
            "--out", str(tmp_path)]  # fmt: skip
    assert tables.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Table 4." in printed and str(tmp_path / "tables.csv") in printed
    argv[3] = "no-such-study"
    assert tables.main(argv) == 2
    assert "error: no MLflow experiment 'no-such-study'" in capsys.readouterr().err


def test_format_p_like_the_paper():
    assert format_p(0.128) == "0.128"
    assert format_p(4.774e-3) == "4.774×10⁻³"
    assert format_p(1.981e-16) == "1.981×10⁻¹⁶"
    assert format_p(5.144e-79, latex=True) == r"$5.144\times10^{-79}$"
    assert format_p(None) == ""
