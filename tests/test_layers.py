"""keras_nfnet.layers against NumPy references of docs/nfnet_reference.md §3-§5."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy.special import erf

from keras_nfnet.layers import (
    GAMMAS,
    ScaledActivation,
    SkipGain,
    SqueezeExcite,
    StochDepth,
    WSConv2D,
    scaled_activation,
    standardize_kernel,
)

RNG = np.random.default_rng(0)


def np_standardize(w, gain, form):
    n = math.prod(w.shape[:-1])
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    var = w.var(axis=(0, 1, 2), keepdims=True)  # population variance
    if form == "deepmind":
        return gain * (w - mean) / np.sqrt(np.maximum(n * var, 1e-4))
    return gain * (w - mean) / (np.sqrt(n) * np.sqrt(var + 1e-5))


def np_same_conv(x, w, stride, groups):
    """Direct NHWC convolution with TF SAME padding and groups (float64 reference)."""
    kh, kw, cin_g, cout = w.shape
    n, h, wd, _ = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - wd, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((n, oh, ow, cout))
    cout_g = cout // groups
    for g in range(groups):
        xs = xp[..., g * cin_g : (g + 1) * cin_g]
        ws = w[..., g * cout_g : (g + 1) * cout_g]
        for i in range(oh):
            for j in range(ow):
                patch = xs[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
                out[:, i, j, g * cout_g : (g + 1) * cout_g] = np.einsum("nhwc,hwco->no", patch, ws)
    return out


@pytest.mark.parametrize("form", ["deepmind", "timm"])
def test_standardize_kernel_matches_formula(form):
    w = RNG.normal(size=(3, 3, 8, 16)).astype("float32") * 0.3
    gain = RNG.uniform(0.5, 1.5, size=16).astype("float32")
    got = np.asarray(standardize_kernel(w, gain, form))
    np.testing.assert_allclose(got, np_standardize(w, gain, form), rtol=1e-5, atol=1e-7)


def test_deepmind_and_timm_forms_differ_by_the_documented_scale():
    # §4.3: per channel, w_timm / w_dm = sqrt(var / (var + 1e-5)).
    w = RNG.normal(size=(3, 3, 128, 4)).astype("float32") / math.sqrt(9 * 128)
    gain = np.ones(4, "float32")
    dm = np.asarray(standardize_kernel(w, gain, "deepmind"))
    tm = np.asarray(standardize_kernel(w, gain, "timm"))
    var = w.var(axis=(0, 1, 2))
    np.testing.assert_allclose(
        tm / dm, np.broadcast_to(np.sqrt(var / (var + 1e-5)), dm.shape), rtol=1e-5
    )
    assert 0.004 < 1 - (tm / dm).mean() < 0.008  # ~0.6 % for fan-in 1152


def test_deepmind_floor_is_on_n_times_var_not_added():
    w = np.zeros((1, 1, 4, 2), "float32")
    w[0, 0, 0, 0] = 1e-3  # n * var far below 1e-4: the floor applies
    w[..., 1] = RNG.normal(size=(1, 1, 4))  # normal channel: no epsilon at all
    got = np.asarray(standardize_kernel(w, np.ones(2, "float32"), "deepmind"))
    mean0 = w[..., 0].mean()
    np.testing.assert_allclose(got[..., 0], (w[..., 0] - mean0) / math.sqrt(1e-4), rtol=1e-5)
    c1 = w[..., 1]
    np.testing.assert_allclose(got[..., 1], (c1 - c1.mean()) / math.sqrt(4 * c1.var()), rtol=1e-5)


@pytest.mark.parametrize("groups,stride,size", [(1, 1, 7), (2, 2, 8), (4, 2, 9)])
def test_wsconv2d_equals_numpy_grouped_same_conv(groups, stride, size):
    layer = WSConv2D(8, 3, strides=stride, groups=groups)
    x = RNG.normal(size=(2, size, size, 8)).astype("float32")
    layer.build(x.shape)
    layer.gain.assign(RNG.uniform(0.5, 1.5, size=8))
    layer.bias.assign(RNG.normal(size=8))
    w_hat = np_standardize(
        np.asarray(layer.kernel, "float64"), np.asarray(layer.gain, "float64"), "deepmind"
    )
    expected = np_same_conv(x.astype("float64"), w_hat, stride, groups) + np.asarray(layer.bias)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-4)


def test_wsconv2d_never_writes_the_standardized_kernel_back():
    layer = WSConv2D(4, 3)
    x = RNG.normal(size=(1, 5, 5, 3)).astype("float32")
    layer(x)
    raw = np.asarray(layer.kernel).copy()
    layer(x)
    np.testing.assert_array_equal(np.asarray(layer.kernel), raw)
    assert abs(raw.std() * math.sqrt(27) - 1) < 0.5  # still the fan-in init, not standardized


def test_wsconv2d_gradient_matches_finite_differences():
    # float64 end to end so the central difference is exact to ~1e-8.
    layer = WSConv2D(3, 3, strides=2, groups=1, dtype="float64")
    x = RNG.normal(size=(2, 6, 6, 2))
    layer.build(x.shape)
    layer.gain.assign(RNG.uniform(0.5, 1.5, size=3))
    target = RNG.normal(size=(2, 3, 3, 3))

    import tensorflow as tf

    def loss_of(kernel):
        y = layer.convolution_op(x, kernel) + layer.bias
        return tf.reduce_sum(y * target)

    kernel = tf.constant(np.asarray(layer.kernel))
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        loss = loss_of(kernel)
    analytic = tape.gradient(loss, kernel).numpy()
    numeric = np.zeros_like(analytic)
    eps = 1e-6
    flat = kernel.numpy().ravel()
    for i in range(flat.size):
        plus, minus = flat.copy(), flat.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric.ravel()[i] = (
            loss_of(tf.constant(plus.reshape(kernel.shape)))
            - loss_of(tf.constant(minus.reshape(kernel.shape)))
        ).numpy() / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
    # The standardization is in the graph: the gradient is orthogonal to a per-channel shift.
    np.testing.assert_allclose(analytic.sum(axis=(0, 1, 2)), 0.0, atol=1e-8)


def test_wsconv2d_refuses_use_bias_false():
    with pytest.raises(ValueError, match="use_bias=False"):
        WSConv2D(4, 3, use_bias=False)


def test_wsconv2d_unknown_standardization_is_named():
    with pytest.raises(ValueError, match=r"'batchnorm'.*'deepmind', 'timm'"):
        WSConv2D(4, 3, standardization="batchnorm")


def test_wsconv2d_statistics_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = WSConv2D(4, 3)
        y = layer(np.ones((1, 5, 5, 3), "float16"))
        assert layer.kernel.dtype == "float32" and layer.gain.dtype == "float32"
        assert y.dtype == "float16"
        assert layer.standardized_kernel().dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_gamma_table_is_verbatim():
    # docs/nfnet_reference.md §5: copied constants, not analytic values.
    assert GAMMAS["gelu"] == 1.7015043497085571
    assert GAMMAS["relu"] == 1.7139588594436646
    assert GAMMAS["silu"] == 1.7881293296813965
    assert len(GAMMAS) == 15 and "swish" not in GAMMAS


def test_gelu_forms_tanh_for_deepmind_erf_for_timm():
    x = np.linspace(-4, 4, 81).astype("float64")
    tanh_gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    erf_gelu = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    g = GAMMAS["gelu"]
    np.testing.assert_allclose(
        np.asarray(scaled_activation(x.astype("float32"), "gelu", True)),
        g * tanh_gelu,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(scaled_activation(x.astype("float32"), "gelu", False)),
        g * erf_gelu,
        rtol=1e-5,
        atol=1e-6,
    )
    assert np.abs(tanh_gelu - erf_gelu).max() > 4e-4  # the forms really differ (§5.1)


def test_scaled_activation_applies_activation_then_beta():
    layer = ScaledActivation("relu", scale=0.5)
    x = np.array([-1.0, 2.0], "float32")
    np.testing.assert_allclose(np.asarray(layer(x)), [0.0, 2.0 * GAMMAS["relu"] * 0.5], rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(ScaledActivation("leaky_relu")(x)),
        np.array([-0.01, 2.0]) * GAMMAS["leaky_relu"],
        rtol=1e-6,
    )


def test_unknown_activation_lists_accepted():
    with pytest.raises(ValueError, match=r"'swish'.*silu"):
        ScaledActivation("swish")


def test_stoch_depth_drops_whole_examples_without_rescaling():
    layer = StochDepth(0.3, seed=3)
    x = RNG.uniform(1, 2, size=(4000, 2, 2, 3)).astype("float32")
    y = np.asarray(layer(x, training=True))
    kept = np.all(y == x, axis=(1, 2, 3))
    dropped = np.all(y == 0, axis=(1, 2, 3))
    assert np.all(kept | dropped)  # per example: all or nothing, never scaled by 1/keep
    assert abs(dropped.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_stoch_depth_rate_outside_unit_interval_is_named(rate):
    with pytest.raises(ValueError, match=f"rate={rate}"):
        StochDepth(rate)


def test_squeeze_excite_matches_numpy():
    se = SqueezeExcite(hidden_units=3, gate_multiplier=2.0)
    x = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
    pooled = x.mean(axis=(1, 2))

    def expected(b0):
        w0, w1, b1 = (np.asarray(v) for v in (se.fc0.kernel, se.fc1.kernel, se.fc1.bias))
        gate = 1 / (1 + np.exp(-(np.maximum(pooled @ w0 + b0, 0) @ w1 + b1)))
        return x * 2 * gate[:, None, None, :]

    # With the initial zero bias, then with a random one (the bias must reach the gate).
    np.testing.assert_allclose(np.asarray(se(x)), expected(0.0), rtol=1e-5, atol=1e-6)
    b0 = RNG.normal(size=3).astype("float32")
    se.fc0.bias.assign(b0)
    np.testing.assert_allclose(np.asarray(se(x)), expected(b0), rtol=1e-5, atol=1e-6)


def test_squeeze_excite_init_is_haiku_truncated_normal():
    se = SqueezeExcite(hidden_units=256)
    se.build((None, 1, 1, 512))
    w = np.asarray(se.fc0.kernel)
    std = 1 / math.sqrt(512)
    assert np.abs(w).max() <= 2 * std + 1e-7  # truncated at 2 std
    # No 0.8796 correction: a N(0, s) truncated at 2s has std 0.8796 s.
    assert abs(w.std() / std - 0.8796) < 0.01


def test_skip_gain_merge():
    merge = SkipGain(alpha=0.2)
    sc = RNG.normal(size=(2, 3)).astype("float32")
    r = RNG.normal(size=(2, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(merge([sc, r])), sc)  # zero-init: the shortcut
    merge.skip_gain.assign(1.5)
    np.testing.assert_allclose(np.asarray(merge([sc, r])), sc + 0.2 * 1.5 * r, rtol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        WSConv2D(8, 3, strides=2, groups=2, standardization="timm", name="w"),
        StochDepth(0.2, seed=5, name="s"),
        SqueezeExcite(4, gate_multiplier=1.0, name="se"),
        SkipGain(0.3, name="k"),
        ScaledActivation("silu", scale=0.9, gelu_approximate=False, name="a"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_config_round_trips(layer):
    config = keras.saving.serialize_keras_object(layer)
    assert config["module"] is None or "keras_nfnet" in config["registered_name"]
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
