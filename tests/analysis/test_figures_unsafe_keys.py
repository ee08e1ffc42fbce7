"""Issue 20, item 2: the report's heatmap panels (``panel_<key>.png``) of a record whose maps
carry keys that are paths or mathtext: written inside ``--out`` or skipped, never a crash."""

from __future__ import annotations

import numpy as np
from mlflow.tracking import MlflowClient

from analysis.figures import panel_figures
from trainables.record.reader import Record
from trainables.record.trial import Trial


def test_panel_keys_that_are_paths_are_skipped_and_mathtext_is_text(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    keys = ["../../escaped_1", "a/b", "$\\x$", "ok-1"]
    rng = np.random.default_rng(0)
    arrays = {"keys": np.array(keys), "labels": np.arange(4) % 3,
              "probs": np.full((4, 3), 1 / 3, dtype=np.float32)}  # fmt: skip
    for name in ("image", "gaze", "gbp", "deconv", "gradcam", "decoder"):
        arrays[name] = rng.random((4, 16, 16)).astype(np.float32)
    best = {}
    for arm in ("unet", "set1-gbp"):
        run = client.create_run(exp).info.run_id
        np.savez(tmp_path / "maps.npz", **arrays)
        client.log_artifact(run, str(tmp_path / "maps.npz"), "heatmaps")
        best[arm] = Trial(run, run, arm, "search", "ok")
    out = tmp_path / "reports" / "study"
    out.mkdir(parents=True)
    paths, _ = panel_figures(Record(uri), best, out, ("Normal", "CHF", "pneumonia"))
    assert sorted(p.name for p in paths) == ["panel_$\\x$.png", "panel_ok-1.png"]
    assert sorted(p.name for p in tmp_path.rglob("panel_*.png")) == sorted(p.name for p in paths)
    assert not list(tmp_path.rglob("escaped_1*"))
