"""The converter applies each row's pretrained preprocessing exactly: timm's eval resize and
centre crop (``floor(size / crop_pct)``, offsets rounded half to even), then the row's mean/std.

Inputs are chosen so that timm's resize keeps the image as it is (the short side already equals
``floor(size / crop_pct)``); what is left is the crop and the normalization, computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hubutil import ROW

from keras_nfnet.hub import (
    NFNetBackbone,
    NFNetImageClassifier,
    NFNetImageClassifierPreprocessor,
    NFNetImageConverter,
    TimmEvalResizing,
    pretrained_preprocessing,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype("float32")


def test_test_nfnet_is_cropped_to_160_at_crop_pct_095_and_normalized_with_half_half():
    converter = NFNetImageConverter.for_variant(ROW)
    assert converter.resizing.scale_size == (168, 168)  # floor(160 / 0.95)
    image = _image(168, 201)
    # The short side is 168 already; the crop's left offset is round(20.5) = 20 (half to even,
    # as torchvision's CenterCrop), the top one (168 - 160) / 2 = 4.
    expected = (image[4:164, 20:180] / 255.0 - 0.5) / 0.5
    out = np.asarray(converter(image))
    assert out.shape == (160, 160, 3)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    batch = np.asarray(converter(np.stack([image, image[:, ::-1]])))
    np.testing.assert_allclose(
        batch[1], (image[4:164, 21:181][:, ::-1] / 255 - 0.5) / 0.5, atol=2e-5
    )


def test_deepmind_rows_squash_to_test_size_plus_32_and_crop_with_imagenet_statistics():
    recipe = pretrained_preprocessing("dm_nfnet_f0")
    assert recipe["image_size"] == (256, 256) and recipe["crop_mode"] == "squash"
    converter = NFNetImageConverter.for_variant("dm_nfnet_f0")
    assert converter.resizing.scale_size == (288, 288)  # docs/nfnet_reference.md §15: S + 32
    image = _image(288, 288, seed=1)
    expected = (image[16:272, 16:272] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(np.asarray(converter(image)), expected, atol=2e-5)


def test_timm_rows_use_timms_input_size_and_crop_pct():
    assert pretrained_preprocessing("eca_nfnet_l0")["image_size"] == (224, 224)
    assert pretrained_preprocessing("nf_resnet50")["crop_pct"] == 0.94
    converter = NFNetImageConverter.for_variant("nf_resnet50")
    assert converter.resizing.scale_size == (272, 272)  # floor(256 / 0.94)
    image = _image(272, 300, seed=2)
    expected = (image[8:264, 22:278] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(np.asarray(converter(image)), expected, atol=2e-5)


def test_the_short_side_is_resized_to_the_scale_size_keeping_the_aspect_ratio():
    layer = TimmEvalResizing(4, 4, crop_pct=0.5, interpolation="nearest", antialias=False)
    # scale 8: a 4x6 image becomes 8x12 (long side 8 * 6 // 4), then the central 4x4.
    image = np.arange(24, dtype="float32").reshape(1, 4, 6, 1)
    out = np.asarray(layer(image))[0, :, :, 0]
    big = np.repeat(np.repeat(image[0, :, :, 0], 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(out, big[2:6, 4:8])


def test_in_tf_data_images_of_any_size_give_the_same_numbers():
    converter = NFNetImageConverter.for_variant(ROW)
    images = [_image(168, 201), _image(201, 168, seed=3)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.float32)
    ).map(converter)
    for image, out in zip(images, dataset):
        assert out.shape == (160, 160, 3)
        np.testing.assert_allclose(out.numpy(), np.asarray(converter(image)), atol=1e-6)


def test_the_classifier_preprocesses_raw_images_in_predict():
    preprocessor = NFNetImageClassifierPreprocessor.for_variant(ROW)
    classifier = NFNetImageClassifier(
        NFNetBackbone(variant=ROW), num_classes=2, preprocessor=preprocessor
    )
    image = _image(168, 201)
    raw = classifier.predict(image[None], verbose=0)
    classifier.preprocessor = None
    done = classifier.predict(np.asarray(preprocessor.image_converter(image))[None], verbose=0)
    np.testing.assert_allclose(raw, done, atol=1e-6)


def test_bad_settings_are_value_errors_naming_them():
    with pytest.raises(ValueError, match="crop_pct must be in"):
        NFNetImageConverter(image_size=(8, 8), crop_pct=1.5)
    with pytest.raises(ValueError, match="Unknown crop_mode 'border'"):
        NFNetImageConverter(image_size=(8, 8), crop_mode="border")
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        NFNetImageConverter(image_size=(8, 8), std=(0.5, 0.0, 0.5))
