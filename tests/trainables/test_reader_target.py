"""The per-reader gaze target (``trial.gaze_target="random-reader"``): an image several
radiologists read trains on one of their maps, drawn each epoch; the default (their mean) is
untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.tiny import CPU1, tiny_config
from trainables.config import ConfigError, DataConfig
from trainables.data.prepare import prepare_data
from trainables.device_data import DeviceData
from trainables.fit import fit


@pytest.fixture(scope="module")
def reflacx(tmp_path_factory):
    cfg = DataConfig(
        dataset="reflacx", data_dir=str(tmp_path_factory.mktemp("rfx")), synthetic_images=40,
        image_size=32, synthetic_multi_reader_images=16,
    )  # fmt: skip
    return prepare_data(cfg, progress=False)


def test_each_multi_reader_image_gets_one_of_its_readers_maps(reflacx):
    dd = DeviceData(reflacx, torch.device("cpu"))
    idx = torch.arange(len(reflacx.keys))
    _, mean, _ = dd.batch(idx)
    gen = torch.Generator().manual_seed(0)
    seen: dict[int, set[int]] = {}
    for _ in range(40):
        drawn = dd.reader_gaze(idx, mean, gen)
        for i in range(len(idx)):
            maps, _, _ = reflacx.readers.of(i)
            if maps is None:  # one reader: its own (the mean) map, unchanged
                assert torch.equal(drawn[i], mean[i])
                continue
            hits = [r for r, m in enumerate(maps) if np.isfinite(m).all() and np.array_equal(drawn[i, 0].numpy(), m.astype(np.float32))]  # fmt: skip
            assert len(hits) >= 1, f"image {i}: not one of its readers' maps"
            seen.setdefault(i, set()).update(hits)
    for i, readers in seen.items():  # every reader with gaze is drawn, a discarded one never
        maps, _, _ = reflacx.readers.of(i)
        assert readers == {r for r, m in enumerate(maps) if np.isfinite(m).all()}
    assert len(seen) >= 10


def test_the_draws_follow_the_generator(reflacx):
    dd = DeviceData(reflacx, torch.device("cpu"))
    idx = torch.arange(len(reflacx.keys))
    _, mean, _ = dd.batch(idx)
    a = dd.reader_gaze(idx, mean, torch.Generator().manual_seed(3))
    b = dd.reader_gaze(idx, mean, torch.Generator().manual_seed(3))
    c = dd.reader_gaze(idx, mean, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_on_a_reader_differs_from_the_mean_and_one_reader_datasets_refuse(reflacx, tmp_path, tiny_data):  # fmt: skip
    base = tiny_config(arm="unet", epochs=1, augment=False, panels=0)
    mean = fit(base, reflacx, tmp_path / "mean", placement=CPU1, log=lambda *_: None)
    again = fit(base, reflacx, tmp_path / "again", placement=CPU1, log=lambda *_: None)
    drawn = fit(dataclasses.replace(base, gaze_target="random-reader"), reflacx, tmp_path / "r", placement=CPU1, log=lambda *_: None)  # fmt: skip
    loss = lambda r: r.history[0]["train/loss_seg_decoder"]
    assert loss(mean) == loss(again) and loss(drawn) != loss(mean)
    with pytest.raises(ConfigError, match="gaze_target"):
        fit(dataclasses.replace(base, gaze_target="random-reader"), tiny_data, tmp_path / "egd", placement=CPU1, log=lambda *_: None)  # fmt: skip
