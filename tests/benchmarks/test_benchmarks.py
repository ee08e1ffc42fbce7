"""The benchmark scripts run and print what they promise (timings themselves are never asserted)."""

from __future__ import annotations

import json
import random
import re

import pytest

from benchmarks import step
from benchmarks.study_work import asha_expected_epochs


def test_step_benchmark_prints_a_ratio_row_per_arm_and_path(capsys):
    step.main(
        [
            "--batch",
            "2",
            "--size",
            "32",
            "--arms",
            "unet,set3-gbp",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--decoder-channels",
            "16,8,8",
        ]
    )
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


def test_step_times_file_keeps_the_fast_path_and_needs_unet(tmp_path):
    from benchmarks.study_work import read_step_times

    path = tmp_path / "steps.json"
    step.main(
        [
            "--batch",
            "2",
            "--size",
            "32",
            "--arms",
            "unet,set3-gbp",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--decoder-channels",
            "16,8,8",
            "--json",
            str(path),
        ]
    )
    raw = json.loads(path.read_text())
    times = read_step_times(str(path))
    assert times.step_s == {
        "unet": raw["step_s"]["unet"],
        "set3-gbp": raw["step_s"]["set3-gbp (fast)"],
    }
    assert times.batch == 2 and "CPU" in times.source and str(path) in times.source
    epoch = times.epoch_s(1017)  # 407 training steps of 2 images, 51 validation batches
    assert epoch["unet"] == pytest.approx(
        407 * times.step_s["unet"] + 51 * times.step_s["unet"] / 3
    )
    raw["step_s"].pop("unet")
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="unet"):
        read_step_times(str(path))


def test_learning_curves_are_seeded_and_depend_on_the_configuration():
    from benchmarks.sim_trial import SimModel, curve

    model = SimModel({"unet": 100.0}, speedup=1000.0, seed=0)
    good, bad = {"arm": "unet", "lr": 1e-3}, {"arm": "unet", "lr": 1e-5}
    values = [curve(model, good, e) for e in range(1, 36)]
    assert values == [curve(model, good, e) for e in range(1, 36)]  # the same in every run
    assert all(0.0 <= v <= 1.0 for v in values) and values[-1] > values[0] + 0.1  # it learns
    assert values[-1] > curve(model, bad, 35)  # the learning rate matters
    assert values != [
        curve(SimModel({"unet": 100.0}, 1000.0, seed=1), good, e) for e in range(1, 36)
    ]


@pytest.mark.slow
def test_cluster_sim_runs_the_study_driver_on_simulated_gpus(tmp_path, capsys):
    """2 arms on 2 simulated GPUs (2 nodes), both arm orders: every trial ends, one row each."""
    from benchmarks import cluster_sim

    steps = tmp_path / "steps.json"
    step.main(
        [
            "--batch",
            "2",
            "--size",
            "32",
            "--arms",
            "no-seg,set3-gbp,unet",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--decoder-channels",
            "16,8,8",
            "--json",
            str(steps),
        ]
    )
    capsys.readouterr()
    cluster_sim.main(
        [
            "--arms",
            "no-seg,set3-gbp",
            "--gpus",
            "2",
            "--gpus-per-node",
            "1",
            "--trials-per-arm",
            "3",
            "--epochs",
            "3",
            "--grace",
            "1",
            "--eta",
            "2",
            "--epoch-wall",
            "0.1",
            "--step-times",
            str(steps),
            "--out",
            str(tmp_path / "sim"),
        ]
    )
    out = capsys.readouterr().out
    assert "epoch times from benchmarks.step on CPU" in out and str(steps) in out
    lines = out.splitlines()
    (header,) = [line for line in lines if line.lstrip().startswith("gpus")]
    names = re.split(r"\s{2,}", header.strip())
    rows = {}
    for line in lines:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == len(names) and cells[0] == "2":
            rows[cells[1]] = dict(zip(names, cells, strict=True))
    assert set(rows) == {"in turn (old)", "side by side"}, out
    for row in rows.values():
        full, stopped = map(int, row["full/stopped"].split("/"))
        assert full + stopped == 2 * 3 and full >= 2  # every trial ended; ASHA keeps one per arm
        assert 0 < float(row["util %"]) <= 100 and 0 <= float(row["gaps %"]) < 100
        assert 0 < float(row["makespan h"]) < float(row["paper-scale h"])
    assert rows["in turn (old)"]["x in turn"] == "1.00"
    assert (tmp_path / "sim" / "ray_results" / "sim-2gpu-side-by-side" / "search").is_dir()
    assert (tmp_path / "sim" / "ray_results" / "sim-2gpu-in-turn" / "search").is_dir()  # one path


def test_concurrency_runs_separate_trial_processes(capsys):
    import torch

    from benchmarks import concurrency

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            concurrency.main([])  # GPU-only unless asked
    concurrency.main(
        [
            "--allow-cpu",
            "--arm",
            "unet",
            "--batch",
            "2",
            "--size",
            "32",
            "--counts",
            "1,2",
            "--seconds",
            "1",
        ]
    )
    rows = [
        line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()
    ]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][2] == "1.00"
    assert all(float(r[1]) > 0 for r in rows)


def test_guidance_diagnosis_weights_each_term_as_the_arms_total_does():
    import torch

    from benchmarks import guidance_diagnosis as gd
    from study.presets import TINY_DECODER, TINY_ENCODER
    from trainables.config import TrialConfig
    from trainables.model import build_model

    torch.manual_seed(0)
    cfg = TrialConfig(encoder=TINY_ENCODER, decoder_channels=TINY_DECODER, rrr_lambda=7.0)
    model = build_model(cfg.encoder, None, cfg.decoder_channels)
    x = torch.rand(4, 1, 32, 32)
    gaze = torch.rand(4, 1, 32, 32)
    y = torch.tensor([0, 1, 2, 0])
    ratios = gd.loss_gradient_ratios(model, cfg, (x, gaze, y))
    assert set(ratios) == set(gd.LOSS_ARMS)
    gamma = cfg.gamma
    expected = {"set1-gbp": (1 - gamma) / gamma, "rrr": 7.0, "rrr-share": cfg.share_lambda}
    for arm, weight in expected.items():
        r = ratios[arm]
        assert r["weight"] == pytest.approx(weight, rel=1e-5)
        for part in ("head", "encoder"):
            assert r[f"raw {part}"] > 0
            assert r[f"weighted {part}"] == pytest.approx(r[f"raw {part}"] * weight, rel=1e-6)
    # With the head re-initialised, the plain gradient map changes (it depends on the head).
    cosines = gd.randomisation_cosines(model, x)
    assert set(cosines) == set(gd.GENERATORS)
    assert all(-1.0 <= c <= 1.0 + 1e-6 for c in cosines.values())
    assert cosines["gradient"] < 0.999
