"""keras-hub's own task models take `NFNetBackbone` as their image encoder and train."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from hubutil import IMAGE_SHAPE, ROW

from keras_nfnet.hub import NFNetBackbone


def _images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *IMAGE_SHAPE)).astype("float32")


def _decreasing(losses):
    return all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_retinanet_detector_on_the_backbone_trains_three_steps():
    keras.utils.set_random_seed(0)
    encoder = NFNetBackbone(variant=ROW, image_shape=IMAGE_SHAPE)
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=5, use_p5=False, image_shape=IMAGE_SHAPE
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="yxyx", pre_logits_num_conv_layers=1
    )
    detector.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = _images()
    boxes = np.array([[[8, 8, 40, 40], [20, 30, 60, 62]]] * 4, "float32")
    labels = np.array([[0, 2]] * 4, "int32")
    data = tf.data.Dataset.from_tensor_slices((x, {"boxes": boxes, "labels": labels})).batch(4)
    # One step per epoch.
    losses = detector.fit(data, epochs=3, verbose=0, shuffle=False).history["loss"]
    assert _decreasing(losses), losses
    assert losses[0] > 2 * losses[-1], losses  # 14.5, 4.4, 3.9 here
    # The backbone's pyramid feeds the FPN: P3-P5 of the encoder at 1/8 ... 1/32.
    assert [encoder.pyramid_outputs[f"P{n}"].shape[1] for n in (3, 4, 5)] == [8, 4, 2]


def test_deeplabv3_segmenter_on_the_backbone_trains_three_steps():
    keras.utils.set_random_seed(0)
    encoder = NFNetBackbone(variant=ROW, image_shape=IMAGE_SHAPE)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[1, 2],
        low_level_feature_key="P2",
        projection_filters=16,
        image_shape=IMAGE_SHAPE,
    )
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    segmenter.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = _images()
    masks = (x[..., :1] > 0).astype("int32") + (x[..., 1:2] > 0.5)
    data = tf.data.Dataset.from_tensor_slices((x, masks)).batch(4)
    losses = segmenter.fit(data, epochs=3, verbose=0, shuffle=False).history["loss"]
    assert _decreasing(losses) and losses[0] > losses[1] > losses[2], losses  # 1.21, 1.16, 1.10
    assert segmenter.predict(x, verbose=0).shape == (4, 64, 64, 3)
