"""Presets: keras-hub's generic classes load ours back; the built-in names cover every
pretrained row; the backbone is the row, with the features-only model's pyramid."""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import numpy as np
import pytest
from hubutil import IMAGE_SHAPE, ROW

import keras_nfnet
from keras_nfnet.hub import (
    NFNetBackbone,
    NFNetImageClassifier,
    NFNetImageClassifierPreprocessor,
    NFNetImageConverter,
)
from keras_nfnet.hub.presets import PRESETS, preset_row


def _images(n=2, size=(70, 90), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *size, 3)).astype("float32")


def _classifier(**kwargs):
    keras.utils.set_random_seed(1)
    backbone = NFNetBackbone(variant=ROW, **kwargs)
    preprocessor = NFNetImageClassifierPreprocessor.for_variant(ROW, image_size=(64, 64))
    return NFNetImageClassifier(backbone, num_classes=3, preprocessor=preprocessor)


def test_save_to_preset_loads_back_through_keras_hubs_generic_classes(tmp_path):
    classifier = _classifier()
    images = _images()
    expected = classifier.predict(images, verbose=0)
    classifier.save_to_preset(str(tmp_path))

    task = keras_hub.models.ImageClassifier.from_preset(str(tmp_path))
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path))
    preprocessor = keras_hub.models.ImageClassifierPreprocessor.from_preset(str(tmp_path))
    assert type(task) is NFNetImageClassifier and type(backbone) is NFNetBackbone
    assert type(preprocessor) is NFNetImageClassifierPreprocessor
    assert type(preprocessor.image_converter) is NFNetImageConverter
    np.testing.assert_array_equal(task.predict(images, verbose=0), expected)
    x = classifier.preprocessor(images)
    np.testing.assert_array_equal(
        backbone.predict(x, verbose=0), classifier.backbone.predict(x, verbose=0)
    )
    assert preprocessor.get_config() == classifier.preprocessor.get_config()
    assert task.get_config()["head_dtype"] == "float32"


def test_backbone_config_round_trips_with_row_overrides():
    backbone = NFNetBackbone(
        variant=ROW, depths=(1, 1, 1), channels=(32, 64, 96), numerics="deepmind"
    )
    config = backbone.get_config()
    assert config["depths"] == (1, 1, 1) and config["numerics"] == "deepmind"
    clone = NFNetBackbone.from_config(keras.tree.map_structure(lambda v: v, config))
    clone.set_weights(backbone.get_weights())
    assert sorted(clone.pyramid_outputs) == ["P1", "P2", "P3", "P4"]
    x = np.random.default_rng(0).normal(size=(1, *IMAGE_SHAPE)).astype("float32")
    np.testing.assert_array_equal(clone(x), backbone(x))
    assert clone.spec == dataclasses.replace(
        keras_nfnet.get_spec(ROW), depths=(1, 1, 1), channels=(32, 64, 96)
    )


def test_pyramid_is_the_features_only_model_and_the_output_what_the_classifier_pools():
    backbone = NFNetBackbone(variant=ROW)
    features = keras_nfnet.create_model(ROW, features_only=True)
    full = keras_nfnet.create_model(ROW, classes=5, classifier_activation=None)
    for layer in features.layers:
        if layer.weights:
            layer.set_weights(backbone.get_layer(layer.name).get_weights())
            full.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 64, 96, 3)).astype("float32")
    pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)(x)
    for level, tensor in features(x).items():
        np.testing.assert_array_equal(pyramid[level], tensor)
    pooled = keras.ops.mean(backbone(x), axis=(1, 2))
    head = full.get_layer("predictions")
    np.testing.assert_allclose(head(pooled), full(x), rtol=1e-6, atol=1e-6)


def test_unknown_variant_and_head_arguments_are_value_errors_naming_them():
    with pytest.raises(ValueError, match=r"Unknown NF model 'resnet50'.*eca_nfnet_l0"):
        NFNetBackbone(variant="resnet50")
    with pytest.raises(ValueError, match="does not take classes, include_top"):
        NFNetBackbone(variant=ROW, include_top=True, classes=3)
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match=r"needs an NFNetBackbone\. Received: backbone=Functional"):
        NFNetImageClassifier(other, num_classes=2)


def test_builtin_presets_name_every_pretrained_row_and_keras_hub_lists_them():
    rows = {preset_row(name): name for name in PRESETS}
    assert set(rows) == set(keras_nfnet.list_models(pretrained=True))
    assert rows["dm_nfnet_f0"] == "nfnet_f0_imagenet"
    assert rows["eca_nfnet_l0"] == "eca_nfnet_l0_imagenet"
    assert PRESETS["eca_nfnet_l0_imagenet"]["kaggle_handle"] == "hf://timm/eca_nfnet_l0.ra2_in1k"
    assert PRESETS["nf_regnet_b1_imagenet"]["metadata"]["params"] == 10223984  # timm's count
    assert set(NFNetBackbone.presets) == set(PRESETS) == set(NFNetImageClassifier.presets)


def test_a_saved_classifier_loads_with_safe_mode(tmp_path):
    classifier = _classifier()
    classifier.preprocessor = None
    x = np.random.default_rng(0).normal(size=(2, *IMAGE_SHAPE)).astype("float32")
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is NFNetImageClassifier
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0))
