"""Test-time evaluation: probabilities, per-image maps for the predicted class, and the panel
images (the same in every trial)."""

from __future__ import annotations

import numpy as np
import torch

from tests.tiny import TINY_DECODER, TINY_ENCODER, tiny_config
from trainables.data.toy import make_toy_cached
from trainables.device_data import DeviceData
from trainables.evaluate import choose_panel_keys, explain, predict, predicted_class_maps
from trainables.generators import probe_generators
from trainables.model import build_model
from trainables.model_sets import get_arm


def _model_and_data():
    torch.manual_seed(0)
    model = build_model(TINY_ENCODER, None, TINY_DECODER)
    data = make_toy_cached(n=30, size=32)
    return model, DeviceData(data, torch.device("cpu")), data


def test_predict_gives_softmax_probabilities_in_stored_order():
    model, dd, data = _model_and_data()
    probs, labels, loss = predict(model, dd, "test", batch_size=4)
    assert probs.shape == (len(data.indices("test")), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, data.labels[data.indices("test")])
    x, _, y = dd.batch(dd.indices("test"))
    with torch.no_grad():
        logits = model.classify(x)
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)
    expected_loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert abs(loss - expected_loss) < 1e-5


def test_maps_are_per_image_for_the_predicted_class():
    model, dd, _ = _model_and_data()
    x, _, _ = dd.batch(dd.indices("test"))
    maps, probs = predicted_class_maps(model, x, ("gbp", "gradient"), with_decoder=True)
    alone, _ = predicted_class_maps(model, x[2:3], ("gbp", "gradient"), with_decoder=True)
    for name in ("gbp", "gradient", "decoder"):
        assert maps[name].shape == (len(x), 1, 32, 32)
        assert maps[name].min() >= 0 and maps[name].max() <= 1
        # Eval mode: image 2's map does not depend on the other images of its batch.
        torch.testing.assert_close(maps[name][2:3], alone[name], rtol=1e-5, atol=1e-6)
    assert probs.shape == (len(x), 3)


def test_explain_rows_and_panels():
    model, dd, data = _model_and_data()
    keys = [data.keys[i] for i in data.indices("test")]
    panel_keys = choose_panel_keys(keys, data.labels[data.indices("test")], 2)
    rows, arrays, _ = explain(
        model, dd, "test", get_arm("set3-gbp"), tiny_config(eval_batch_size=4), panel_keys
    )
    n = len(keys)
    kinds = [r["map"] for r in rows]
    assert kinds.count("generator") == kinds.count("decoder") == n
    assert kinds.count("probe") == n * len(probe_generators())
    assert {r["generator"] for r in rows if r["map"] == "generator"} == {"gbp"}
    assert list(arrays["keys"]) == panel_keys
    np.testing.assert_array_equal(arrays["generator"], arrays["gbp"])  # set3-gbp's own map
    rows, arrays, _ = explain(
        model, dd, "test", get_arm("no-seg"), tiny_config(eval_batch_size=4), panel_keys
    )
    assert "decoder" not in {r["map"] for r in rows} and np.isnan(arrays["decoder"]).all()


def test_panel_keys_are_the_same_whatever_the_order_and_cover_every_class():
    keys = [f"k{i:02d}" for i in range(9)]
    labels = np.array([0, 1, 2] * 3)
    chosen = choose_panel_keys(keys, labels, 4)
    assert chosen == choose_panel_keys(keys[::-1], labels[::-1], 4)
    assert {int(labels[keys.index(k)]) for k in chosen[:3]} == {0, 1, 2}
    assert len(choose_panel_keys(keys, labels, 20)) == 9
