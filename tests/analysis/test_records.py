"""Reading the hand-made MLflow record through the one reader (``trainables.record``): study choice,
trial filtering, THE best-trial rule, artifact validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.analysis.hand_made_record import KEYS, perfect, predictions_frame
from tests.tiny import egd_task
from trainables.record.files import read_maps, read_predictions
from trainables.record.reader import Record
from trainables.record.selection import best_of_arm, is_candidate, seed_group

EGD = egd_task()

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # sqlalchemy, inside mlflow


@pytest.fixture(scope="module")
def record(hand_made_record):
    return Record(hand_made_record.tracking_uri)


def test_latest_study_is_the_default(record, hand_made_record):
    study = record.study("gaze-unet")
    assert study.parent_run_id == hand_made_record.parent
    assert study.name == "hand-made" and study.params["preset"] == "demo"
    assert {t.run_id for t in study.trials} == set(hand_made_record.runs.values())
    old = record.study("gaze-unet", parent=hand_made_record.old_parent)
    assert old.trials == ()


def test_unknown_experiment_lists_existing_names(record):
    with pytest.raises(KeyError, match="gaze-unet"):
        record.study("no-such-study")


def test_parent_must_be_a_study_run(record, hand_made_record):
    with pytest.raises(KeyError, match="not a study run"):
        record.study("gaze-unet", parent=hand_made_record.runs["unet"])


def test_candidates_are_ok_search_runs_with_predictions(record, hand_made_record):
    study = record.study("gaze-unet")
    kept = {t.run_id for t in study.trials if is_candidate(t)}
    runs = hand_made_record.runs
    for name in ("set1_deconv_failed", "set3_stopped", "set3_ok_no_predictions", "unet_seed1"):
        assert runs[name] not in kept
    assert runs["set3_ok"] in kept
    no_predictions = next(t for t in study.trials if t.run_id == runs["set3_ok_no_predictions"])
    assert no_predictions.ok and no_predictions.has_predictions is False


def test_best_trial_uses_validation_ties_earliest_and_skips_seed_reruns(record, hand_made_record):
    trials = record.study("gaze-unet").trials
    runs = hand_made_record.runs
    assert best_of_arm(trials, "set1-gbp").run_id == runs["set1_best"]  # not the test-better decoy
    assert best_of_arm(trials, "set2-gbp").run_id == runs["set2_early"]
    assert best_of_arm(trials, "unet").run_id == runs["unet"]  # not the higher-val seeds re-run
    # not the stopped one, nor the ok one whose record lacks its predictions (val 0.98)
    assert best_of_arm(trials, "set3-gbp").run_id == runs["set3_ok"]
    assert best_of_arm(trials, "set1-deconv") is None
    group = seed_group(trials, best_of_arm(trials, "unet"))
    assert [t.run_id for t in group] == [runs["unet"], runs["unet_seed1"]]
    assert seed_group(trials, best_of_arm(trials, "set1-gbp"))[0].run_id == runs["set1_best"]
    assert len(seed_group(trials, best_of_arm(trials, "set1-gbp"))) == 1  # decoy: other lr


def test_predictions_are_read_sorted_and_checked(record, hand_made_record, tmp_path):
    frame = record.predictions(hand_made_record.runs["unet"], EGD)
    assert frame["key"].tolist() == sorted(KEYS)
    good = predictions_frame(perfect())
    bad = good.drop(columns="label_name")
    bad.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match=r"a\.csv: columns"):
        read_predictions(tmp_path / "a.csv", EGD)
    pd.concat([good, good.iloc[:1]]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match="1 duplicated keys"):
        read_predictions(tmp_path / "b.csv", EGD)
    logits = good.assign(prob_normal=3.0)
    logits.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="sum to 1"):
        read_predictions(tmp_path / "c.csv", EGD)
    mixed = pd.concat([good, good.assign(key=[k + "v" for k in KEYS], split="val")])
    mixed.to_csv(tmp_path / "d.csv", index=False)
    assert len(read_predictions(tmp_path / "d.csv", EGD)) == len(KEYS)


def test_maps_refuse_pickled_keys(tmp_path):
    arrays = {n: np.zeros((1, 4, 4), np.float32) for n in ("image", "gaze", "gbp", "deconv",
                                                            "gradcam", "decoder")}  # fmt: skip
    arrays |= {"labels": np.zeros(1), "probs": np.zeros((1, 3))}
    np.savez(tmp_path / "ok.npz", keys=np.array(["k"]), **arrays)
    assert read_maps(tmp_path / "ok.npz")["keys"].tolist() == ["k"]
    np.savez(tmp_path / "obj.npz", keys=np.array(["k"], dtype=object), **arrays)
    with pytest.raises(ValueError, match="obj.npz.*str array"):
        read_maps(tmp_path / "obj.npz")
    np.savez(tmp_path / "short.npz", keys=np.array(["k"]), **(arrays | {"gaze": np.zeros((2, 4))}))
    with pytest.raises(ValueError, match="gaze has shape"):
        read_maps(tmp_path / "short.npz")
