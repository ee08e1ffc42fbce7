"""The evidence table: intervals over seeds, pairing by seed, recovery share and the verdict, on
hand-made trials whose numbers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.evidence import Interval, evidence_table, verdict
from trainables.record import explain_metric, metric_key
from trainables.record.trial import Trial

AUC, GEN_CC = metric_key("test", "auc_mean"), explain_metric("generator", "cc")
SEEDS = (0, 1, 2, 3)


def _trial(arm: str, twin: str, seed: int, auc: float, cc: float, gen: str, probe=None) -> Trial:
    metrics = {AUC: auc, GEN_CC: cc}
    for name, value in (probe or {}).items():
        metrics[explain_metric("probe", "cc", name)] = value
    return Trial(
        run_id=f"{arm}-{twin}-{seed}",
        trial_id=f"{arm}-{twin}-{seed}",
        arm=arm,
        stage="evidence",
        status="ok",
        start_time=seed,
        params={"seed": str(seed)},
        metrics=metrics,
        tags={"twin": twin, "generator": gen},
    )


@pytest.fixture
def trials() -> list[Trial]:
    out = []
    for s in SEEDS:
        noise = 0.01 * s
        out += [
            _trial("unet", "clean", s, 0.80 + noise, 0.2, "none"),
            _trial("unet", "shortcut", s, 0.60 + noise, 0.0, "none"),
            _trial("no-seg", "clean", s, 0.81, 0.2, "none", {"gbp": 0.2, "logprob-gradient": 0.1}),
            _trial(
                "no-seg",
                "shortcut",
                s,
                0.61 + noise,
                -0.1,
                "none",
                {"gbp": -0.1, "logprob-gradient": 0.05 + noise},
            ),
            _trial("rrr", "clean", s, 0.78, 0.3, "logprob-gradient"),
            _trial(
                "rrr",
                "shortcut",
                s,
                0.75 + noise + 0.005 * (s % 2),
                0.3 + noise,
                "logprob-gradient",
            ),
        ]
    return out


def test_interval_is_the_t_interval_over_seeds():
    values = [0.7, 0.74, 0.69, 0.8, 0.77]
    iv = Interval.of(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, np.mean(values), stats.sem(values))
    assert iv.n == 5 and math.isclose(iv.mean, np.mean(values))
    assert math.isclose(iv.low, lo) and math.isclose(iv.high, hi)
    assert Interval.of([0.5]).n == 1 and math.isnan(Interval.of([0.5]).low)
    assert not Interval.of([0.5]).excludes_zero()
    assert Interval.of([0.1, 0.12, 0.11]).excludes_zero()


def test_table_pairs_by_seed_and_recovers_unets_loss(trials):
    table = evidence_table(trials, ["unet", "no-seg", "rrr"])
    f = table.frame.set_index("arm")
    assert f.loc["unet", "AUC lost"] == pytest.approx(0.20)  # paired: the seed noise cancels
    assert f.loc["unet", "AUC lost low"] == pytest.approx(0.20)
    expected = np.mean([0.15 + 0.005 * (s % 2) for s in SEEDS])
    assert f.loc["rrr", "vs unet (shortcut)"] == pytest.approx(expected)
    assert f.loc["rrr", "unet loss recovered"] == pytest.approx(expected / 0.20)
    # Maps compared like for like: rrr's own input-gradient map vs no-seg's same map.
    diffs = [(0.3 + 0.01 * s) - (0.05 + 0.01 * s) for s in SEEDS]
    assert f.loc["rrr", "gen CC vs no-seg"] == pytest.approx(np.mean(diffs))
    assert f.loc["rrr", "generator"] == "logprob-gradient" and f.loc["unet", "generator"] == "gbp"
    assert f.loc["rrr", "seeds"] == len(SEEDS)
    lines = " ".join(verdict(table))
    assert "rrr (7" in lines  # ~76% of unet's loss recovered, CI above zero
    assert "at least half of what unet loses: rrr" in lines
    assert "better than the same map of no-seg (paired CI > 0): unet, rrr." in lines


def test_missing_seeds_and_failed_runs_are_left_out(trials):
    kept = [t for t in trials if not (t.arm == "rrr" and t.tags["twin"] == "shortcut" and
                                      t.params["seed"] == "3")]  # fmt: skip
    failed = Trial(
        "x", "rrr", "evidence", "failed", 0, {"seed": "3"}, {AUC: 0.1}, {"twin": "shortcut"}
    )
    table = evidence_table([*kept, failed], ["unet", "rrr"])
    row = table.frame.set_index("arm").loc["rrr"]
    assert row["seeds"] == 3 and table.intervals[("rrr", "AUC lost")].n == 3
