"""Signal propagation at initialization reproduces the variance results of the seeds (§12).

Variances are channel variances over (N, H, W). For a ReLU branch ending in a conv whose kernel
has variance ``scale / fan_in``, the branch's channel variance is ``scale * Var(relu(z))`` with
``Var(relu(z)) = 1/2 - 1/(2 pi) ~ 0.341`` for unit-Gaussian ``z`` (the channel *mean* of
``relu(z)`` goes into the squared-mean statistic instead); this is the linear model's prediction
for BN ResNets (§12.2): He init gives 0.682 per block, the ReLU-gamma init gives 1.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from keras_nfnet.analysis import (
    channel_statistics,
    linear_residual_network,
    residual_blocks,
    signal_propagation,
)
from keras_nfnet.layers import GAMMAS, ScaledActivation, SkipGain, StochDepth, WSConv2D
from keras_nfnet.models.nf_resnet import NF_RESNET_VARIANTS, NFResNet, nf_resnet_plan
from keras_nfnet.models.nfnet import NFNet
from keras_nfnet.models.resnet_v2 import ResNetV2

RELU_VARIANCE = 0.5 - 1 / (2 * math.pi)
ALPHA = 0.2
DEPTHS_50 = (3, 4, 6, 3)


def gaussian(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


# --- the analytic case: a fully connected linear residual network --------------------------


def test_linear_unnormalized_skip_variance_doubles_per_block():
    model = linear_residual_network(depth=12, width=256, seed=0)
    stats = signal_propagation(model, gaussian((256, 256)))
    level = np.arange(1, 14)  # point i is "block l = i + 1"; point 0 is the unit input
    np.testing.assert_allclose(stats["avg_var"], 2.0 ** (level - 1), rtol=0.2)
    # Each branch has the variance of its input, 2**l at block l.
    np.testing.assert_allclose(stats["res_avg_var"], 2.0 ** (level[:-1] - 1), rtol=0.2)


def test_linear_batchnorm_branch_gives_linear_growth_and_unit_branches():
    model = linear_residual_network(depth=12, width=256, normalization="batch_norm", seed=0)
    stats = signal_propagation(model, gaussian((256, 256)))
    np.testing.assert_allclose(stats["avg_var"], np.arange(1, 14), rtol=0.2)
    np.testing.assert_allclose(stats["res_avg_var"], 1.0, rtol=0.2)
    # Training-mode BN for the measurement, with the moving statistics left untouched.
    bn = model.get_layer("block5_bn")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), 1.0)


# --- convolutional ResNetV2 baselines --------------------------------------------------------

SMALL_50 = dataclasses.replace(NF_RESNET_VARIANTS["50"], width=1)  # channels 64...512
IMAGES_96 = gaussian((8, 96, 96, 3))


def _stage_slices(depths):
    start = 1  # point 0 is the stem output
    for depth in depths:
        yield slice(start, start + depth)
        start += depth


@pytest.mark.parametrize(
    "scale", [1.0, 2.0, GAMMAS["relu"] ** 2], ids=["haiku_default", "he", "relu_gamma"]
)
def test_bn_resnet_v2_variance_grows_linearly_within_stages(scale):
    keras.utils.set_random_seed(0)
    init = keras.initializers.VarianceScaling(scale, "fan_in", "untruncated_normal")
    model = ResNetV2(SMALL_50, include_top=False, input_shape=(96, 96, 3), kernel_initializer=init)
    stats = signal_propagation(model, IMAGES_96)
    predicted = scale * RELU_VARIANCE
    np.testing.assert_allclose(stats["res_avg_var"], predicted, rtol=0.3)
    if scale == GAMMAS["relu"] ** 2:  # the variance-preserving init: unit branches
        np.testing.assert_allclose(stats["res_avg_var"], 1.0, rtol=0.3)
    for stage in _stage_slices(DEPTHS_50):
        block_outputs = stats["avg_var"][stage]
        slope = np.polyfit(np.arange(len(block_outputs)), block_outputs, 1)[0]
        assert slope == pytest.approx(predicted, rel=0.3)
    # Each transition resets the skip path: block 0's output is its shortcut (a conv of the
    # normalized input) plus one branch, 2 * predicted.
    transitions = np.cumsum((1, *DEPTHS_50[:-1]))
    np.testing.assert_allclose(stats["avg_var"][transitions], 2 * predicted, rtol=0.3)


def test_unnormalized_resnet_v2_grows_exponentially():
    keras.utils.set_random_seed(0)
    plain = signal_propagation(
        ResNetV2(SMALL_50, normalization="none", include_top=False, input_shape=(96, 96, 3)),
        IMAGES_96,
    )
    bn = signal_propagation(
        ResNetV2(SMALL_50, include_top=False, input_shape=(96, 96, 3)), IMAGES_96
    )
    blocks = np.arange(1, 17)
    # Doubling per block is the linear model's 2**l; require at least 1.5x per block.
    log_growth = np.polyfit(blocks, np.log2(plain["avg_var"][1:]), 1)[0]
    assert log_growth > math.log2(1.5)
    assert plain["avg_var"][-1] / plain["avg_var"][1] > 1.5**15
    # BN keeps every point below the linear prediction of its deepest stage.
    assert bn["avg_var"].max() < 1.3 * (1 + max(DEPTHS_50)) * 2 * RELU_VARIANCE
    assert plain["avg_var"][-1] > 1000 * bn["avg_var"][-1]


# --- NF-ResNet-50 with skip gains at 1 (§12.2) -----------------------------------------------


@pytest.fixture(scope="module")
def nf_resnet50_stats():
    images = gaussian((8, 160, 160, 3))
    keras.utils.set_random_seed(0)
    model = NFResNet("50", include_top=False, input_shape=(160, 160, 3))
    ws = signal_propagation(model, images, skip_gain=1.0)
    gains = [
        float(layer.skip_gain.numpy()) for layer in model.layers if isinstance(layer, SkipGain)
    ]
    del model
    keras.utils.set_random_seed(0)
    no_ws = NFResNet(
        "50", include_top=False, input_shape=(160, 160, 3), weight_standardization=False
    )
    return ws, signal_propagation(no_ws, images, skip_gain=1.0), gains


def test_nf_resnet50_variance_follows_the_beta_schedule(nf_resnet50_stats):
    stats, _, _ = nf_resnet50_stats
    plan = nf_resnet_plan("50")
    predicted = np.array([1 + (p.index + 1) * ALPHA**2 for p in plan])
    np.testing.assert_allclose(stats["avg_var"][1:], predicted, rtol=0.2)
    # The reset: each transition block's output is below the previous stage's last output.
    for k, p in enumerate(plan):
        if p.index == 0 and p.stage > 0:
            assert stats["avg_var"][k + 1] < stats["avg_var"][k]
    np.testing.assert_allclose(stats["res_avg_var"], 1.0, rtol=0.3)


def test_nf_resnet50_mean_shift_needs_weight_standardization(nf_resnet50_stats):
    ws, no_ws, _ = nf_resnet50_stats
    bound = 0.05
    assert ws["avg_sq_mean"][1:].max() < bound
    assert no_ws["avg_sq_mean"][1:].min() > 20 * bound
    # Without WS the branches are not normalized either, and the skip path grows.
    assert no_ws["avg_var"][-1] > 3 * ws["avg_var"][-1]


def test_measurement_restores_the_skip_gains(nf_resnet50_stats):
    _, _, gains = nf_resnet50_stats
    assert gains == [0.0] * 16


# --- user models built from the package's blocks ---------------------------------------------


def _user_model():
    inputs = keras.Input((16, 16, 3))
    x = WSConv2D(8, 3, name="my_stem")(inputs)
    for i in range(3):
        h = ScaledActivation("relu", name=f"a{i}")(x)
        r = WSConv2D(8, 3, name=f"c{i}")(h)
        r = StochDepth(0.5, name=f"drop{i}")(r)
        x = SkipGain(0.2, name=f"merge{i}")([x, r])
    return keras.Model(inputs, x)


def test_user_model_statistics_equal_direct_measurements():
    model = _user_model()
    x = gaussian((4, 16, 16, 3))
    stats = signal_propagation(model, x, stem_layer="my_stem", skip_gain=1.0)
    assert [b.name for b in residual_blocks(model)] == ["merge0", "merge1", "merge2"]
    for layer in model.layers:
        if isinstance(layer, SkipGain):
            layer.skip_gain.assign(1.0)
    points = ["my_stem", "merge0", "merge1", "merge2"]
    probe = keras.Model(
        model.input,
        [model.get_layer(n).output for n in points]
        + [model.get_layer(f"c{i}").output for i in range(3)],  # r_i before stochastic depth
    )
    values = [keras.ops.convert_to_numpy(v) for v in probe(x, training=False)]
    expected = [channel_statistics(v) for v in values]
    np.testing.assert_allclose(stats["avg_sq_mean"], [e[0] for e in expected[:4]], rtol=1e-5)
    np.testing.assert_allclose(stats["avg_var"], [e[1] for e in expected[:4]], rtol=1e-5)
    np.testing.assert_allclose(stats["res_avg_var"], [e[1] for e in expected[4:]], rtol=1e-5)
    # Inference mode: StochDepth(0.5) never drops, so repeated measurements agree exactly.
    again = signal_propagation(model, x, stem_layer="my_stem")
    np.testing.assert_array_equal(again["avg_var"], stats["avg_var"])


def test_nfnet_at_init_blocks_with_identity_shortcuts_pass_their_input(tiny_variant):
    model = NFNet(tiny_variant, include_top=False, input_shape=(64, 64, 3))
    stats = signal_propagation(model, gaussian((4, 64, 64, 3)))
    assert len(stats["res_avg_var"]) == sum(tiny_variant.depths)
    # skip_gain = 0 at init: a block with an identity shortcut outputs its input exactly.
    identity = [
        k for k, depth_index in enumerate(_block_indices(tiny_variant.depths)) if depth_index
    ]
    for k in identity:
        assert stats["avg_var"][k + 1] == stats["avg_var"][k]
    assert np.all(stats["res_avg_var"] > 0)


def _block_indices(depths):
    return [b for depth in depths for b in range(depth)]


def test_models_without_blocks_and_bad_stem_names_are_refused():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    with pytest.raises(ValueError, match="no residual blocks"):
        signal_propagation(plain, gaussian((2, 4)))
    with pytest.raises(ValueError, match="stem_layer='nope'"):
        signal_propagation(_user_model(), gaussian((2, 16, 16, 3)), stem_layer="nope")
