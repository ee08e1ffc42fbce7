"""DOCTOR: the detectors by hand, the AUROC against scikit-learn, risk-coverage on a hand-made
case, and the per-arm table and figure from the hand-made record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from analysis import doctor

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_d_alpha_and_d_beta_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.1, 0.8]])
    # g = 0.25 + 0.09 + 0.04 = 0.38 -> 0.62 / 0.38; certain -> 0; uniform: g = 1/3 -> 2;
    # g = 0.01 + 0.01 + 0.64 = 0.66 -> 0.34 / 0.66.
    np.testing.assert_allclose(doctor.d_alpha(probs), [0.62 / 0.38, 0.0, 2.0, 0.34 / 0.66])
    # P_e = 1 - max: 0.5 -> 1; 0 -> 0; 2/3 -> 2; 0.2 -> 0.25.
    np.testing.assert_allclose(doctor.d_beta(probs), [1.0, 0.0, 2.0, 0.25])
    np.testing.assert_array_equal(doctor.misclassified([0, 0, 2, 1], probs), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="sum to 1"):
        doctor.d_alpha(np.array([[2.0, 1.0, 0.5]]))
    with pytest.raises(ValueError, match="shape"):
        doctor.d_beta(np.array([0.5, 0.5]))


def test_detection_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        errors = rng.random(40) < 0.3
        scores = np.round(rng.random(40) + 0.5 * errors, 1)  # rounding makes ties
        assert doctor.detection_auroc(scores, errors) == pytest.approx(
            roc_auc_score(errors, scores)
        )
    assert np.isnan(doctor.detection_auroc(np.arange(5.0), np.zeros(5, bool)))  # no errors


def test_risk_coverage_by_hand():
    scores = np.array([0.5, 0.2, 0.9, 0.1, 0.2])
    errors = np.array([0, 1, 1, 0, 0], dtype=bool)
    rc = doctor.risk_coverage(scores, errors)
    # Accept D <= 0.1: one right; <= 0.2: adds a tie of one wrong, one right; <= 0.5: one right
    # more; <= 0.9: all five, two wrong.
    np.testing.assert_allclose(rc.thresholds, [0.1, 0.2, 0.5, 0.9])
    np.testing.assert_allclose(rc.coverage, [0.2, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(rc.risk, [0.0, 1 / 3, 0.25, 0.4])
    # Step area: 0.2 * 0 + 0.4 * 1/3 + 0.2 * 0.25 + 0.2 * 0.4.
    assert rc.aurc == pytest.approx(0.4 / 3 + 0.05 + 0.08)
    with pytest.raises(ValueError, match="need equal"):
        doctor.risk_coverage(scores, errors[:3])


def test_threshold_keeps_the_chosen_share_of_predictions():
    scores = np.array([0.5, 0.2, 0.9, 0.1, 0.2])
    errors = np.array([0, 1, 1, 0, 0], dtype=bool)
    rc = doctor.risk_coverage(scores, errors)
    # Coverage 0.2, 0.6, 0.8, 1.0: the first to keep >= 80% accepts D <= 0.5, one wrong of four.
    t = doctor.choose_threshold(rc, 0.8)
    assert (t.gamma, t.coverage, t.risk) == (0.5, 0.8, 0.25)
    assert doctor.choose_threshold(rc, 0.5).gamma == 0.2
    assert doctor.choose_threshold(rc, 1.0).gamma == 0.9


@pytest.fixture(scope="module")
def written(hand_made_record, tmp_path_factory):
    out = tmp_path_factory.mktemp("doctor")
    return doctor.write_doctor(hand_made_record.tracking_uri, "gaze-unet", out), out


def test_doctor_table_from_the_hand_made_record(written, hand_made_record):
    result, out = written
    frame = pd.read_csv(out / "doctor.csv").set_index("arm")
    assert frame.loc["set1-gbp", "run_id"] == hand_made_record.runs["set1_best"]
    # rotated: half the images confidently wrong, every row (0.8, 0.1, 0.1): D cannot tell.
    assert frame.loc["unet", ["n", "errors"]].tolist() == [12, 6]
    assert frame.loc["unet", "d_alpha_auroc"] == pytest.approx(0.5)
    assert frame.loc["unet", "d_beta_aurc"] == pytest.approx(0.5)  # one tie group: risk 0.5
    # pneumonia_half: the two wrong images are the only unsure ones: found first by both.
    assert frame.loc["set1-gbp", "errors"] == 2
    assert frame.loc["set1-gbp", ["d_alpha_auroc", "d_beta_auroc"]].tolist() == [1.0, 1.0]
    assert frame.loc["set1-gbp", "d_beta_aurc"] == pytest.approx(2 / 12 * 1 / 6)
    # perfect: no wrong prediction, no AUROC.
    assert frame.loc["no-seg", "errors"] == 0 and np.isnan(frame.loc["no-seg", "d_alpha_auroc"])
    assert "n/a (no wrong or no right prediction)" in result.markdown
    assert "set1-deconv" not in frame.index  # no finished trial
    # set1-gbp: ten confident right (D_alpha 0.515), two unsure wrong (D_alpha 1.410): keeping
    # >= 80% accepts the ten (83%), none wrong; predict flags a new prediction above 0.515.
    assert frame.loc["set1-gbp", "threshold"] == pytest.approx(0.34 / 0.66)
    assert frame.loc[
        "set1-gbp", ["threshold_coverage", "threshold_risk"]
    ].tolist() == pytest.approx([10 / 12, 0.0])
    png = Image.open(result.figure)
    assert float(png.text["min_font_px"]) >= 10 and png.text["layout_problems"] == ""


def test_doctor_cli(hand_made_record, tmp_path, capsys):
    argv = ["--tracking-uri", hand_made_record.tracking_uri, "--out", str(tmp_path)]
    assert doctor.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## DOCTOR" in printed and "| U-Net (baseline) | 12 | 6 (50.0%) | 0.500" in printed
    assert (tmp_path / "doctor.png").is_file()
