"""NF-ResNets (docs/nfnet_reference.md §9) and the ResNetV2 / SkipInit baselines (§11)."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from keras_nfnet.layers import ScaledActivation, SkipGain, StochDepth, WSConv2D
from keras_nfnet.models.nf_resnet import (
    NF_RESNET_VARIANTS,
    NFResNet,
    NFResNet50,
    count_nf_resnet_params,
    nf_resnet_plan,
)
from keras_nfnet.models.resnet_v2 import ResNetV2, SkipInitResNet

# §9 table, millions of parameters with 1000 classes: (without SE, with SE).
PAPER_PARAMS_M = {
    "50": (25.56, 35.64),
    "101": (44.55, 63.56),
    "152": (60.19, 86.57),
    "200": (64.67, 93.15),
    "288": (146.46, 213.42),
    "600": (300.65, 440.15),
}

TINY = dataclasses.replace(NF_RESNET_VARIANTS["26"], width=1, depths=(1, 2, 1, 1))


def test_nf_resnet50_built_parameter_count_matches_the_table_and_the_counter():
    model = NFResNet50()
    assert model.count_params() == count_nf_resnet_params("50") == 25_557_048
    assert round(model.count_params() / 1e6, 2) == PAPER_PARAMS_M["50"][0]
    # One WS conv per checkpoint module: stem + 3 per block + 4 shortcuts (§9).
    assert sum(isinstance(layer, WSConv2D) for layer in model.layers) == 1 + 3 * 16 + 4
    assert sum(isinstance(layer, SkipGain) for layer in model.layers) == 16


@pytest.mark.parametrize("variant", sorted(PAPER_PARAMS_M, key=int))
def test_parameter_counts_match_the_table_with_and_without_se(variant):
    plain, with_se = PAPER_PARAMS_M[variant]
    assert round(count_nf_resnet_params(variant) / 1e6, 2) == plain
    assert round(count_nf_resnet_params(variant, use_se=True) / 1e6, 2) == with_se


def test_se_counter_matches_a_built_model():
    model = NFResNet(TINY, use_se=True, input_shape=(32, 32, 3), classes=7)
    assert model.count_params() == count_nf_resnet_params(TINY, classes=7, use_se=True)
    assert model.get_layer("stage1_block1_se").hidden_units == int(128 * 0.25)


def test_plan_follows_the_beta_schedule_and_projects_only_at_stage_starts():
    plan = nf_resnet_plan("50")
    alpha = 0.2
    for p in plan:
        if p.index == 0:
            previous_depth = (3, 4, 6, 3)[p.stage - 1] if p.stage else 0
            expected = 1 / math.sqrt(1 + previous_depth * alpha**2)
        else:
            expected = 1 / math.sqrt(1 + p.index * alpha**2)
        assert p.beta == pytest.approx(expected, rel=1e-12)
        assert p.projection == (p.index == 0)
        assert p.stride == (2 if p.index == 0 and p.stage > 0 else 1)
        assert p.width == p.out_channels // 4 and p.groups == 1
    assert [p.stochdepth_rate for p in plan[:3]] == pytest.approx([0.0, 0.1 / 16, 0.2 / 16])


def test_block_structure_follows_section_9():
    model = NFResNet(TINY, input_shape=(64, 64, 3), classes=5)
    assert model.get_layer("stem_conv").kernel.shape == (7, 7, 3, 16)
    assert model.get_layer("stem_pool").pool_size == (3, 3)
    # The transition shortcut is a 1x1 conv carrying the stride, with no average pool.
    shortcut = model.get_layer("stage1_block0_conv_shortcut")
    assert shortcut.strides == (2, 2) and shortcut.kernel.shape == (1, 1, 64, 128)
    assert not any("pool" in layer.name for layer in model.layers if "stage" in layer.name)
    assert model.get_layer("stage1_block0_conv1").strides == (2, 2)  # stride on the 3x3
    preact = model.get_layer("stage1_block1_preact")
    assert isinstance(preact, ScaledActivation) and preact.activation == "relu"
    assert preact.scale == pytest.approx(1 / math.sqrt(1.04))
    assert isinstance(model.get_layer("stage1_block1_drop_path"), StochDepth)
    kernel = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel)
    assert kernel.std() == pytest.approx(0.01, rel=0.1)  # §8: classifier N(0, 0.01)
    assert model.get_layer("stage0_block0_skip_gain").alpha == 0.2


def test_forward_and_safe_mode_round_trip(tmp_path):
    model = NFResNet(TINY, input_shape=(32, 32, 3), classes=3, use_se=True)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    path = tmp_path / "nf_resnet.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-6)


def test_without_weight_standardization_uses_plain_convs():
    model = NFResNet(TINY, input_shape=(32, 32, 3), weight_standardization=False)
    assert not any(isinstance(layer, WSConv2D) for layer in model.layers)
    # The same graph minus the WS gains: one gain vector per conv fewer.
    ws = NFResNet(TINY, input_shape=(32, 32, 3))
    convs = [layer for layer in ws.layers if isinstance(layer, WSConv2D)]
    assert ws.count_params() - model.count_params() == sum(c.filters for c in convs)


def test_unknown_variant_and_weights_are_refused():
    with pytest.raises(ValueError, match=r"'34'.*26, 50, 101"):
        NFResNet("34")
    # No pretrained NF-ResNet weights are published (§17): only None or a file path.
    with pytest.raises(ValueError, match="weights='imagenet'"):
        NFResNet("50", weights="imagenet")


@pytest.mark.parametrize("normalization", ["batch_norm", "none"])
def test_resnet_v2_blocks_end_in_named_adds(normalization, tmp_path):
    model = ResNetV2(TINY, normalization=normalization, input_shape=(32, 32, 3), classes=4)
    adds = [layer for layer in model.layers if layer.name.endswith("_out")]
    assert [layer.name for layer in adds] == [p.name + "_out" for p in nf_resnet_plan(TINY)]
    has_bn = any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert has_bn == (normalization == "batch_norm")
    assert model.get_layer("stage0_block0_conv0").use_bias == (normalization == "none")
    assert model.name == f"resnetcustomv2_{'bn' if has_bn else 'plain'}"
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    # §11.1: zero-initialized classifier, so the softmax is uniform at initialization.
    np.testing.assert_allclose(model.predict(x, verbose=0), 0.25, rtol=1e-6)
    path = tmp_path / "resnet_v2.keras"
    model.save(path)
    keras.saving.load_model(path, safe_mode=True)


def test_resnet_v2_refuses_unknown_normalization():
    with pytest.raises(ValueError, match=r"'layer_norm'.*'batch_norm', 'none'"):
        ResNetV2("50", normalization="layer_norm")


def test_skipinit_resnet_starts_as_its_shortcuts():
    model = SkipInitResNet(TINY, input_shape=(32, 32, 3), include_top=False)
    gains = [layer for layer in model.layers if isinstance(layer, SkipGain)]
    assert len(gains) == len(nf_resnet_plan(TINY))
    assert all(layer.alpha == 1.0 and float(layer.skip_gain.numpy()) == 0.0 for layer in gains)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    # Block stage1_block1 has an identity shortcut: at init its output equals its input.
    block_in = keras.Model(model.input, model.get_layer("stage1_block0_skip_gain").output)
    block_out = keras.Model(model.input, model.get_layer("stage1_block1_skip_gain").output)
    np.testing.assert_array_equal(block_in(x), block_out(x))
