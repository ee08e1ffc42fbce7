"""The reports of the issue-19 plans on hand-made trials whose numbers are known: the scanning
sweep's recovered shares and its graceful-degradation call, data efficiency's pairing by size and
seed, the selection rules (validation only), and the border plan's candidates."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis import border, efficiency, scanning, selection
from analysis.evidence import evidence_table, goal_lines
from trainables.record import BLIND_SIGNALS, metric_key
from trainables.record.trial import Trial

AUC = metric_key("test", "auc_mean")
SEEDS = (0, 1, 2, 3)


def _trial(arm: str, seed: int, auc: float, tags: dict, metrics: dict | None = None) -> Trial:
    name = "-".join([arm, *map(str, tags.values()), str(seed)])
    return Trial(
        run_id=name, trial_id=name, arm=arm, stage="evidence", status="ok", start_time=seed,
        params={"seed": str(seed)}, metrics={AUC: auc, **(metrics or {})}, tags=tags,
    )  # fmt: skip


def _noise(seed: int) -> float:
    return 0.004 * (seed % 2) - 0.002 * (seed % 3)


# -- the evidence plan's goals ---------------------------------------------------------------
def test_the_goals_read_the_best_guided_arm_against_cutout_and_its_clean_cost():
    aucs = {  # arm: (clean, shortcut)
        "unet": (0.80, 0.60), "cutout": (0.79, 0.62),
        "rrr-share": (0.795, 0.78), "density-share": (0.78, 0.70),
    }  # fmt: skip
    trials = [
        _trial(arm, s, auc + _noise(s), {"twin": twin, "generator": "none"})
        for arm, pair in aucs.items()
        for twin, auc in zip(("clean", "shortcut"), pair, strict=True)
        for s in SEEDS
    ]
    (line,) = goal_lines(trials, evidence_table(trials, list(aucs)))
    assert line.startswith("Goals: the best guided arm, rrr-share, recovers 90%")
    assert "against cutout on the shortcut twin +0.160 [+0.160, +0.160] (goal: CI above 0: met)" in line  # fmt: skip
    assert "clean AUC against unet -0.005" in line
    assert goal_lines(trials, evidence_table(trials, ["unet", "rrr-share"])) == []  # no cutout


# -- scanning ----------------------------------------------------------------------------------
def _scanning_trials(density_at_half: float) -> list[Trial]:
    """unet loses 0.2 at every share; rrr-share recovers 100% at 0 and 25% at 0.5; density-share
    100% at 0 and ``density_at_half`` of the loss at 0.5."""
    shortcut = {
        ("unet", 0.0): 0.6, ("unet", 0.5): 0.6,
        ("rrr-share", 0.0): 0.8, ("rrr-share", 0.5): 0.65,
        ("density-share", 0.0): 0.8, ("density-share", 0.5): 0.6 + 0.2 * density_at_half,
    }  # fmt: skip
    out = []
    for (arm, share), sc in shortcut.items():
        for s in SEEDS:
            tags = {"scanning": f"{share:g}"}
            out.append(_trial(arm, s, 0.8 + _noise(s), {**tags, "twin": "clean"}))
            out.append(_trial(arm, s, sc + _noise(s) * 0.5, {**tags, "twin": "shortcut"}))
    return out


def test_scanning_recovers_per_share_and_calls_the_graceful_loss():
    arms = ["unet", "rrr-share", "density-share"]
    table = scanning.scanning_table(_scanning_trials(0.75), arms)
    rec = table.frame.set_index(["arm", "scanning"])["recovered"]
    assert rec[("rrr-share", 0.0)] == pytest.approx(1.0, abs=0.02)
    assert rec[("rrr-share", 0.5)] == pytest.approx(0.25, abs=0.02)
    assert rec[("density-share", 0.5)] == pytest.approx(0.75, abs=0.02)
    assert list(table.display.columns) == ["scanning 0", "scanning 0.5"]
    lines = scanning.verdict(table)
    assert any("rrr-share recovers" in x and "below half from scanning 0.5" in x for x in lines)
    assert "Verdict: density-share degrades more gracefully" in lines[-1]
    # The same drop for both: no call the seeds can make.
    same = scanning.verdict(scanning.scanning_table(_scanning_trials(0.25), arms))
    assert "no difference between them" in same[-1]


# -- data efficiency ---------------------------------------------------------------------------
def test_efficiency_pairs_by_size_and_seed_and_says_whether_guidance_helps_with_few_labels():
    trials = []
    for n, gain in ((24, 0.05), (96, 0.0)):
        for s in SEEDS:
            base = 0.6 + 0.1 * (n == 96) + 0.03 * s  # seeds differ a lot; pairs do not
            tags = {"twin": "clean", "train_images": str(n)}
            trials += [_trial("unet", s, base, tags), _trial("rrr-share", s, base + gain + _noise(s), tags)]  # fmt: skip
    table = efficiency.efficiency_table(trials, ["unet", "rrr-share"])
    iv = table.intervals[("rrr-share", 24)]
    assert iv.mean == pytest.approx(0.05 + sum(map(_noise, SEEDS)) / 4) and iv.excludes_zero()
    assert not table.intervals[("rrr-share", 96)].excludes_zero()
    assert list(table.auc_display.columns) == ["24 images", "96 images"]
    lines = efficiency.verdict(table)
    assert "guidance helps on the twin: rrr-share" in lines[-1]


# -- selection ---------------------------------------------------------------------------------
def _selection_trials() -> list[Trial]:
    """lambda 0 learns the shortcut: best validation AUC, worst test AUC, low masked AUC."""
    grid = {  # variant: (val AUC, masked AUC, agreement, test AUC)
        "rrr-share lambda=0 lr=0.001": (0.99, 0.55, 0.2, 0.62),
        "rrr-share lambda=1 lr=0.001": (0.95, 0.80, 0.7, 0.78),
        "rrr-share lambda=10 lr=0.001": (0.90, 0.75, 0.9, 0.74),
    }
    out = []
    for variant, (val, masked, agree, test) in grid.items():
        for s in SEEDS:
            signals = dict(zip(BLIND_SIGNALS, (masked, agree, 0.5 + (masked - 0.5) * agree), strict=True))  # fmt: skip
            metrics = {"best/val_auc_mean": val, "best/epoch": 1.0, **signals}
            out.append(_trial("rrr-share", s, test + _noise(s), {"twin": "shortcut", "variant": variant}, metrics))  # fmt: skip
    return out


def _latest(t: Trial, key: str) -> float:
    return float(t.metrics.get("best/val_auc_mean" if key == "val/auc_mean" else key, math.nan))


def test_selection_rules_read_validation_only_and_report_the_regret():
    rows = selection.selection_rows(_selection_trials(), _latest)
    picks = selection.rule_picks(rows)
    assert picks[("rrr-share", "validation AUC")] == "rrr-share lambda=0 lr=0.001"
    assert picks[("rrr-share", "masked validation AUC")] == "rrr-share lambda=1 lr=0.001"
    assert picks[("rrr-share", "gaze agreement")] == "rrr-share lambda=10 lr=0.001"
    # Test AUCs reversed: the oracle changes, no pick does.
    flipped = rows.assign(**{selection.TEST: 1.5 - rows[selection.TEST]})
    assert selection.rule_picks(flipped) == picks
    table = selection.selection_table(rows).frame.set_index("rule")
    assert (table["oracle"] == "rrr-share lambda=1 lr=0.001").all()
    assert table.loc["validation AUC", "regret"] == pytest.approx(0.16)
    assert table.loc["masked validation AUC", "regret"] == pytest.approx(0.0)
    assert not table.loc["validation AUC", "within goal"]
    assert table.loc["masked validation AUC", "within goal"]
    assert table.loc["gaze agreement", "per-seed regret"] == pytest.approx(0.04)
    lines = selection.verdict(selection.selection_table(rows))
    assert lines[0].endswith("Blind rules within 0.02 of the oracle: masked validation AUC.")


# -- border ------------------------------------------------------------------------------------
def test_border_names_a_candidate_only_when_it_beats_the_default_at_no_clean_cost():
    numbers = {  # variant: (clean AUC, border AUC)
        "unet": (0.80, 0.60),
        "rrr-share": (0.80, 0.68),
        "rrr-share lambda=3": (0.795, 0.74),  # better on the border, costs 0.005 clean: candidate
        "rrr-share lambda=10": (0.76, 0.76),  # better still, but costs 0.04 clean
    }
    trials = []
    for v, (clean, line) in numbers.items():
        arm = v.split()[0]
        for s in SEEDS:
            trials.append(_trial(arm, 10 + s, clean + _noise(s), {"twin": "clean", "variant": v}))
            trials.append(_trial(arm, 10 + s, line + _noise(s), {"twin": "shortcut", "variant": v}))  # fmt: skip
    table = border.border_table(trials, list(numbers))
    f = table.frame.set_index("arm")
    assert f.loc["rrr-share", "recovered"] == pytest.approx(0.4, abs=0.01)
    assert f.loc["rrr-share lambda=3", "recovered"] == pytest.approx(0.7, abs=0.01)
    lines = border.verdict(table)
    assert "Candidates" in lines[-1] and "rrr-share lambda=3 (+0.060" in lines[-1]
    assert "lambda=10" not in lines[-1]
    assert isinstance(table.display, pd.DataFrame) and list(table.display.index) == list(numbers)
