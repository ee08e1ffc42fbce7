"""The benchmark scripts run and print what they promise (timings themselves are never asserted)."""

from __future__ import annotations

import random

import pytest

from benchmarks import step
from benchmarks.study_projection import asha_expected_epochs


def test_step_benchmark_prints_a_ratio_row_per_arm_and_path(capsys):
    step.main(["--batch", "2", "--size", "32", "--arms", "unet,set3-gbp", "--repeats", "1",
               "--warmup", "0", "--decoder-channels", "16,8,8"])
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if line[:1].isalpha()}
    assert "unet" in rows and rows["unet"].rstrip().endswith("1.00")
    assert "set3-gbp (fast)" in rows and "set3-gbp (stock)" in rows
    assert "data path" in out and "# benchmarks.step on CPU" in out


def _simulate_asha(max_t: int, grace: int, eta: int, trials: int, rng: random.Random) -> float:
    """Synchronous successive halving on random trial qualities: the mean epochs a trial runs."""
    quality = [rng.random() for _ in range(trials)]
    alive, epochs, rung = list(range(trials)), [0] * trials, grace
    while alive:
        stop = min(rung, max_t)
        for t in alive:
            epochs[t] = stop
        if stop >= max_t:
            break
        alive = sorted(alive, key=lambda t: -quality[t])[: max(1, len(alive) // eta)]
        rung *= eta
    return sum(epochs) / trials


def test_asha_expected_epochs_matches_a_successive_halving_simulation():
    rng = random.Random(0)
    sim = _simulate_asha(35, 4, 3, trials=3**6, rng=rng)
    assert asha_expected_epochs(35, 4, 3) == pytest.approx(sim, rel=0.02)
    assert asha_expected_epochs(10, 10, 3) == 10  # grace period = max epochs: no early stopping
    with pytest.raises(ValueError):
        asha_expected_epochs(35, 4, 1)


def test_study_projection_prints_every_arm_and_a_total(capsys):
    from benchmarks import study_projection
    from trainables.model_sets import list_arms

    study_projection.main(["--batch", "2", "--size", "32", "--repeats", "1", "--images", "40",
                           "--trials-per-arm", "2", "--epochs", "4"])
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in list_arms()]
    assert rows == list_arms()
    assert "projected study wall time:" in out


def test_concurrency_runs_separate_trial_processes(capsys):
    import torch

    from benchmarks import concurrency

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            concurrency.main([])  # GPU-only unless asked
    concurrency.main(["--allow-cpu", "--arm", "unet", "--batch", "2", "--size", "32", "--counts",
                      "1,2", "--seconds", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][2] == "1.00"
    assert all(float(r[1]) > 0 for r in rows)
