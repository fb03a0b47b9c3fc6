"""training.eval: top-1/top-5 counting and the command's JSON result (ref §15 protocol)."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import TINY_VARIANT

from keras_nfnet.models.nfnet import NFNet
from training import eval as nfnet_eval
from training.data import digits_arrays
from training.preprocessing import eval_preprocess


def test_evaluate_counts_top1_and_top5_like_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(23, 10)).astype("float32")
    labels = rng.integers(0, 10, size=23)
    order = np.argsort(-logits, axis=1)
    want1 = 100 * np.mean(order[:, 0] == labels)
    want5 = 100 * np.mean([label in row[:5] for label, row in zip(labels, order)])
    model = keras.Sequential([keras.Input((10,)), keras.layers.Identity()])
    ds = tf.data.Dataset.from_tensor_slices((logits, np.eye(10, dtype="f4")[labels])).batch(5)
    got = nfnet_eval.evaluate(model, ds, steps=5)
    assert got == {"examples": 23, "top1": want1, "top5": want5}
    assert 0 < want1 < want5 < 100  # the data exercises both counts


def test_eval_command_writes_json_matching_a_direct_evaluation(tmp_path, monkeypatch):
    model = NFNet(TINY_VARIANT, classes=10, input_shape=(32, 32, 3), classifier_activation=None)
    monkeypatch.setattr(nfnet_eval, "NFNet", lambda *args, **kwargs: model)  # F0 is too slow
    out = tmp_path / "result.json"
    result = nfnet_eval.main(
        ["--variant", "F0", "--weights", "none", "--source", "digits", "--split", "test",
         "--image_size", "32", "--batch_size", "64", "--output", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == result
    # The same numbers from the §15 transform applied by hand and the model.
    x, labels = digits_arrays("test", 32)
    images = next(
        iter(tf.data.Dataset.from_tensor_slices(x).map(lambda i: eval_preprocess(i, 32)).batch(400))
    )
    logits = np.asarray(model(images, training=False))
    order = np.argsort(-logits, axis=1, kind="stable")
    assert result["examples"] == len(labels) == 360
    assert result["top1"] == 100 * np.sum(order[:, 0] == np.array(labels)) / 360
    assert result["top5"] == 100 * np.sum((order[:, :5] == np.array(labels)[:, None]).any(1)) / 360
    assert result["image_size"] == 32 and result["dataset"] == "digits"


def test_eval_command_reads_tfds_imagenet2012_validation(monkeypatch, tmp_path):
    built = {}

    def tiny_nfnet(variant, **kwargs):
        built.update(kwargs)
        return NFNet(TINY_VARIANT, **{**kwargs, "weights": None})

    monkeypatch.setattr(nfnet_eval, "NFNet", tiny_nfnet)
    with tfds.testing.mock_data(num_examples=6):  # random images in imagenet2012's format
        result = nfnet_eval.main(
            ["--variant", "F0", "--weights", "none", "--data_dir", str(tmp_path),
             "--image_size", "32", "--batch_size", "4"]
        )  # fmt: skip
    assert result["dataset"] == "imagenet2012:validation" and result["examples"] == 6
    assert built["classes"] == 1000 and built["input_shape"] == (32, 32, 3)
    assert built["classifier_activation"] is None and built["numerics"] == "deepmind"
    assert 0.0 <= result["top1"] <= result["top5"] <= 100.0
