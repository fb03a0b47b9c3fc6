"""`NFNetImageClassifier` trains with the package's AGC step: the same update on 2 replicas as on
one device, and the compile settings of `AGCModel`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from agc_common import compile_model
from hubutil import IMAGE_SHAPE, ROW, rel

from keras_nfnet.agc_model import AGCTrainStep
from keras_nfnet.hub import NFNetBackbone, NFNetImageClassifier


def _classifier():
    return NFNetImageClassifier(NFNetBackbone(variant=ROW, image_shape=IMAGE_SHAPE), num_classes=5)


def test_mirrored_strategy_makes_the_single_device_agc_update():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, *IMAGE_SHAPE)).astype("float32")
    y = rng.integers(0, 5, 32).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.utils.set_random_seed(3)
    single = _classifier()
    init = single.get_weights()
    compile_model(single)  # SGD(0.5, momentum 0.9), agc_clipping=0.05 (tests/agc_common.py)
    single.fit(dataset, epochs=1, verbose=0, shuffle=False)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = _classifier()
        mirrored.set_weights(init)
        compile_model(mirrored)
    history = mirrored.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert strategy.num_replicas_in_sync == 2 and mirrored.optimizer.iterations.numpy() == 2
    assert history.history["agc_clip_fraction"][-1] > 0.05  # AGC is actively clipping
    moved = 0
    for w0, a, b in zip(init, mirrored.get_weights(), single.get_weights()):
        assert rel(a, b) < 1e-5
        if np.any(b != w0):
            moved += 1
            assert rel(a - w0, b - w0) < 1e-4  # the updates themselves agree
    assert moved > len(init) // 2


def test_compile_takes_the_agc_settings_of_agcmodel():
    classifier = _classifier()
    assert isinstance(classifier, AGCTrainStep)
    classifier.compile(optimizer="sgd", agc_clipping=0.02, agc_eps=1e-2, l2_weight_decay=1e-4)
    assert (classifier.agc_clipping, classifier.agc_eps, classifier.l2_weight_decay) == (
        0.02,
        1e-2,
        1e-4,
    )
    with pytest.raises(ValueError, match="agc_clipping"):
        classifier.compile(optimizer="sgd", agc_clipping=-1.0)
    # The classifier kernel is the package's `predictions` layer, which AGC leaves unclipped.
    assert classifier.output_dense.kernel.path == "predictions/kernel"
    assert classifier.output_dense.dtype_policy.name == "float32"
    assert float(np.std(classifier.output_dense.kernel.numpy())) == pytest.approx(0.01, rel=0.1)
