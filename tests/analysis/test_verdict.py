"""The verdict: Holm against statsmodels, the paired differences against an independent
bootstrap (scikit-learn AUCs), and the sentence of two planted studies (one arm truly better, none
better) read back from a real MLflow store."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from analysis import verdict as V
from analysis.formats import format_p
from analysis.stats import holm, paired_bootstrap
from tests.tiny import egd_task
from trainables.record.reader import Record

EGD = egd_task()
CLASSES = EGD.classes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N_PER_CLASS, RESAMPLES, SEED = 20, 200, 5
LABELS = np.repeat(np.arange(len(CLASSES)), N_PER_CLASS)


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    cases = [rng.random(k) ** 3 for k in (1, 2, 5, 7, 28)]
    cases += [np.array([0.01, 0.01, 0.04, 0.5]), np.array([0.002, 0.002, 0.002]), np.ones(4)]
    for p in cases:
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    # A test that could not be made (nan) is not counted in the family.
    np.testing.assert_allclose(holm([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02])


def _probs(rng, strength: float, noise: float = 1.0) -> np.ndarray:
    k = len(CLASSES)
    logits = strength * np.eye(k)[LABELS] + noise * rng.normal(size=(len(LABELS), k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _mean_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in range(probs.shape[1])]))


def oracle(pairs, resamples: int, seed: int) -> tuple[float, float, float, float]:
    """The mean-AUC difference (arm - baseline), its 2.5th/97.5th percentile and the two-sided
    bootstrap p, written out with scikit-learn from the documented definitions: image resamples
    ``default_rng(seed).integers(0, N, (B, N))``, seeds drawn from ``default_rng([seed, 1])``
    with replacement (none for one seed), a resample lacking a class left out."""
    n, k = len(LABELS), len(pairs)
    images = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    seeds = (
        np.zeros((resamples, 1), int)
        if k == 1
        else np.random.default_rng([seed, 1]).integers(0, k, size=(resamples, k))
    )
    point = np.mean([_mean_auc(LABELS, a) - _mean_auc(LABELS, b) for a, b in pairs])
    diffs = []
    for b in range(resamples):
        labels = LABELS[images[b]]
        if len(np.unique(labels)) < len(CLASSES):
            continue
        per_seed = [
            _mean_auc(labels, pairs[s][0][images[b]]) - _mean_auc(labels, pairs[s][1][images[b]])
            for s in seeds[b]
        ]
        diffs.append(np.mean(per_seed))
    d = np.array(diffs)
    low, high = np.percentile(d, [2.5, 97.5])
    p = min(1.0, 2 * (min((d <= 0).sum(), (d >= 0).sum()) + 1) / (len(d) + 1))
    return float(point), float(low), float(high), float(p)


# -- the pure computation ------------------------------------------------------------------------
def test_one_seed_is_exactly_the_tables_paired_difference():
    rng = np.random.default_rng(1)
    arm, base = _probs(rng, 2.0), _probs(rng, 1.0)
    (d,) = V.differences(LABELS, {"unet": {"0": base}, "x": {"0": arm}}, "unet", EGD,
                         resamples=RESAMPLES, seed=SEED)  # fmt: skip
    _, _, tables = paired_bootstrap(LABELS, arm, base, EGD, resamples=RESAMPLES, seed=SEED)
    for k in ("auc_mean", "auc_normal"):
        assert (d.interval[k].low, d.interval[k].high) == (
            tables[k].estimate.low,
            tables[k].estimate.high,
        )
        assert d.p[k] == tables[k].p_value


def test_with_several_seeds_the_difference_is_taken_over_seeds_too():
    rng = np.random.default_rng(2)
    arm = {s: _probs(rng, 1.6) for s in ("0", "1", "2")}
    base = {s: _probs(rng, 1.0) for s in ("0", "1", "2", "9")}  # seed 9: the arm lacks it
    (d,) = V.differences(
        LABELS, {"unet": base, "x": arm}, "unet", EGD, resamples=RESAMPLES, seed=SEED
    )
    assert d.seeds == 3
    point, low, high, p = oracle([(arm[s], base[s]) for s in ("0", "1", "2")], RESAMPLES, SEED)
    assert d.point["auc_mean"] == pytest.approx(point, abs=1e-12)
    assert (d.interval["auc_mean"].low, d.interval["auc_mean"].high) == pytest.approx(
        (low, high), abs=1e-12
    )
    assert d.p["auc_mean"] == pytest.approx(p)


# -- planted studies in a real store -------------------------------------------------------------
@dataclass(frozen=True)
class Where:
    """A study's experiment, parent run and staging folder."""

    client: MlflowClient
    exp: str
    parent: str
    root: Path


def _trial(where: Where, arm: str, start: int, val: float, probs, seed: int = 0) -> None:
    """One ok trial run (seed 0: the search stage's; another: the seeds stage's)."""
    client, exp, parent, root = where.client, where.exp, where.parent, where.root
    stage = "search" if seed == 0 else "seeds"
    tags = {"mlflow.parentRunId": parent, "role": "trial", "arm": arm, "stage": stage,
            "trial_id": f"{arm}-{seed}-{stage}", "status": "ok"}  # fmt: skip
    rid = client.create_run(exp, start_time=start, tags=tags, run_name=f"{arm}-{seed}").info.run_id
    params = {"arm": arm, "lr": "0.001", "seed": str(seed), "bootstrap_resamples": str(RESAMPLES),
              "bootstrap_seed": str(SEED)}  # fmt: skip
    metrics = [Metric("best/val_auc_mean", val, start, 0)]
    metrics += [Metric("test/auc_mean", _mean_auc(LABELS, probs), start, 0)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    frame = pd.DataFrame({"key": [f"k{i:03d}" for i in range(len(LABELS))], "split": "test",
                          "label": LABELS, "label_name": [CLASSES[c] for c in LABELS]})  # fmt: skip
    for c, name in enumerate(CLASSES):
        frame[f"prob_{name.lower()}"] = probs[:, c]
    folder = root / rid
    folder.mkdir(parents=True)
    frame.to_csv(folder / "test.csv", index=False)
    client.log_artifact(rid, str(folder / "test.csv"), "predictions")
    client.set_terminated(rid)


def _study(client, root: Path, name: str, arms: dict[str, tuple[float, np.ndarray]]) -> str:
    exp = client.create_experiment(name, artifact_location=(root / name).as_uri())
    parent = client.create_run(exp, tags={"role": "study", "study_name": name}).info.run_id
    client.log_param(parent, "arms", ",".join(arms))
    where = Where(client, exp, parent, root / name)
    for i, (arm, (val, probs)) in enumerate(arms.items()):
        _trial(where, arm, 1000 + i, val, probs)
    return name


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Two studies, same unet: in ``one-beats`` set3-gbp's predictions carry far more signal; in
    ``none-beats`` every arm is unet's signal with its own noise (and unet and set1-gbp tie on
    validation)."""
    root = tmp_path_factory.mktemp("verdict")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    rng = np.random.default_rng(3)
    unet = _probs(rng, 1.0)
    similar = {a: _probs(rng, 1.0) for a in ("no-seg", "set1-gbp", "set3-gbp")}
    one = {"unet": (0.80, unet), "no-seg": (0.70, similar["no-seg"]),
           "set1-gbp": (0.75, similar["set1-gbp"]), "set3-gbp": (0.90, _probs(rng, 3.0))}  # fmt: skip
    none = {"unet": (0.80, unet), "no-seg": (0.70, similar["no-seg"]),
            "set1-gbp": (0.80, similar["set1-gbp"]), "set3-gbp": (0.75, similar["set3-gbp"])}  # fmt: skip
    record = Record(uri)
    out = {}
    for name, arms in (("one-beats", one), ("none-beats", none)):
        _study(client, root, name, arms)
        v = V.study_verdict(record, record.study(name))
        out[name] = (v, arms)
    return out


def _expected(arms: dict[str, tuple[float, np.ndarray]]) -> dict[str, tuple[float, float, float, float]]:  # fmt: skip
    """Per arm: (difference, low, high, Holm-adjusted p, p), computed independently."""
    base = arms["unet"][1]
    raw = {a: oracle([(p, base)], RESAMPLES, SEED) for a, (_, p) in arms.items() if a != "unet"}
    adjusted = multipletests([r[3] for r in raw.values()], method="holm")[1]
    return {a: (*r[:3], float(q), r[3]) for (a, r), q in zip(raw.items(), adjusted, strict=True)}


def test_one_arm_truly_beats_unet(planted):
    v, arms = planted["one-beats"]
    expected = _expected(arms)
    for d in v.differences:
        point, low, high, p_holm, _ = expected[d.arm]
        e = d.interval["auc_mean"]
        assert (d.point["auc_mean"], e.low, e.high) == pytest.approx((point, low, high), abs=1e-12)
        assert d.p_adjusted["auc_mean"] == pytest.approx(p_holm)
    point, low, high, p_holm, _ = expected["set3-gbp"]
    others = [e[3] for a, e in expected.items() if a != "set3-gbp"]
    assert p_holm < 0.05 <= min(others)  # planted: only set3-gbp differs
    assert v.sentence == (
        f"set3-gbp beats unet by {point:.3f} [{low:.3f}, {high:.3f}], adjusted p = "
        f"{format_p(p_holm)}; no other arm differs from unet (Holm over 3 arms, mean AUC)."
    )
    assert v.selected.arm == "set3-gbp" and not v.tied
    assert v.selection.startswith("Selected by validation: set3-gbp (validation mean AUC 0.900")


def test_no_arm_beats_unet(planted):
    v, arms = planted["none-beats"]
    expected = _expected(arms)
    assert all(e[3] >= 0.05 for e in expected.values())
    half = np.median([(high - low) / 2 for _, low, high, *_ in expected.values()])
    closest = min(expected, key=lambda a: (expected[a][3], expected[a][4]))  # ties: raw p
    assert v.sentence == (
        f"No arm differs from unet at this test size ({len(LABELS)} test images: the 95% "
        f"intervals of the differences reach about ±{half:.2f}, so smaller differences cannot be "
        f"resolved; smallest adjusted p = {format_p(expected[closest][3])}, {closest})."
    )
    for d in v.differences:
        assert d.p_adjusted["auc_mean"] == pytest.approx(expected[d.arm][3])
    # unet and set1-gbp tie at 0.80 on validation: the earlier start (unet) wins, and it is said.
    assert v.selected.arm == "unet" and [t.arm for t in v.tied] == ["set1-gbp"]
    assert "Tied on validation with set1-gbp" in v.selection
    assert "ties go to the trial that started first, then to the smaller run id" in v.selection


def test_markdown_and_files(planted, tmp_path):
    v, _ = planted["one-beats"]
    md = v.markdown()
    assert md.startswith(f"**Verdict.** {v.selection} {v.sentence}")
    assert "| `set3-gbp` | +" in md
    frame = V.differences_frame(v).set_index("arm")
    assert list(frame.index) == ["no-seg", "set1-gbp", "set3-gbp"]
    d = next(d for d in v.differences if d.arm == "set3-gbp")
    assert frame.loc["set3-gbp", "auc_mean_p_holm"] == d.p_adjusted["auc_mean"]
    shown = V.differences_display(v)
    assert shown.columns[:2].tolist() == ["Mean AUC − unet [95% CI]", "Mean AUC: p (Holm)"]


def test_no_baseline_no_comparison():
    v = V.Verdict("unet", None, (), (), (), 0, 1000, 0, missing="the study has no unet arm")
    assert v.sentence == "No arm can be compared with unet: the study has no unet arm."
    assert v.selection == "No arm has a finished trial: nothing is selected."
    assert math.isnan(holm([np.nan])[0])


def test_a_seeds_stage_pairs_the_arms_runs_by_seed(tmp_path):
    """The seeds stage re-runs each arm's best configuration with more seeds: the verdict pairs
    unet's and the arm's runs by seed and says so."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("seeds", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"role": "study"}).info.run_id
    rng = np.random.default_rng(4)
    probs = {(arm, s): _probs(rng, strength) for arm, strength in (("unet", 1.0), ("set3-gbp", 1.4))
             for s in (0, 1)}  # fmt: skip
    where = Where(client, exp, parent, tmp_path)
    for i, ((arm, s), p) in enumerate(probs.items()):
        _trial(where, arm, 10 + i, 0.8, p, seed=s)
    record = Record(f"sqlite:///{tmp_path / 'mlflow.db'}")
    v = V.study_verdict(record, record.study("seeds"))
    (d,) = v.differences
    assert d.arm == "set3-gbp" and d.seeds == 2
    per_seed = [
        _mean_auc(LABELS, probs[("set3-gbp", s)]) - _mean_auc(LABELS, probs[("unet", s)])
        for s in (0, 1)
    ]
    assert d.point["auc_mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert v.seeds_note == "2 seeds per arm, paired with unet's"
    assert v.sentence.startswith(
        "No arm differs from unet at this test size (60 test images, 2 seeds per arm, paired "
        "with unet's: the 95% intervals"
    )
    assert V.differences_display(v).columns[0] == "Seeds"
