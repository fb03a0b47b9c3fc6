"""Adaptive Gradient Clipping: the rule (docs/nfnet_reference.md §13.1-§13.3) and `AGCModel`'s TF
step
(§13.4-§13.5): exclusions, coupled L2, MirroredStrategy equivalence, mixed precision, settings."""

from __future__ import annotations

import copy
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from agc_common import build_model, compile_model, initial_weights, make_data

from keras_nfnet import AGCModel, distribute_compat
from keras_nfnet.agc import (
    clip_gradients,
    clip_gradients_with_stats,
    decay_exempt,
    is_excluded,
    unitwise_norm,
)
from keras_nfnet.models.nfnet import NFNet


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _numpy_agc(g, w, clipping, eps, axis):
    """Independent NumPy transcription of §13.2 (axis=None: whole-tensor norm)."""
    keep = axis is not None
    p_n = np.maximum(np.sqrt(np.sum(w**2, axis=axis, keepdims=keep)), eps)
    g_n = np.sqrt(np.sum(g**2, axis=axis, keepdims=keep))
    m = clipping * p_n
    return np.where(g_n > m, g * m / np.maximum(g_n, 1e-6), g)


def _grads(model, x, y):
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


# ------------------------------------------------------------------------------- the rule


def test_unitwise_norm_reduces_per_output_unit_for_conv_and_dense_kernels():
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    dense = rng.normal(size=(5, 3)).astype("float32")
    conv1d = rng.normal(size=(3, 2, 4)).astype("float32")
    np.testing.assert_allclose(
        _np(unitwise_norm(conv)), np.sqrt((conv**2).sum(axis=(0, 1, 2), keepdims=True)), 1e-6
    )
    assert _np(unitwise_norm(conv)).shape == (1, 1, 1, 4)
    np.testing.assert_allclose(
        _np(unitwise_norm(dense)), np.sqrt((dense**2).sum(axis=0, keepdims=True)), 1e-6
    )
    assert _np(unitwise_norm(dense)).shape == (1, 3)
    # §13.1: rank 3 follows DeepMind (axis 0 only).
    assert _np(unitwise_norm(conv1d)).shape == (1, 2, 4)


def test_unitwise_norm_is_whole_tensor_for_vectors_scalars_and_squeezed_rank_one():
    vector = np.array([3.0, 4.0], "float32")
    assert _np(unitwise_norm(vector)).shape == ()
    assert float(_np(unitwise_norm(vector))) == pytest.approx(5.0)
    assert float(_np(unitwise_norm(np.array(-2.0, "float32")))) == pytest.approx(2.0)
    # A 1x1 conv kernel with one input channel has a single non-singleton axis (§13.1: the rank
    # test uses the squeezed shape): one norm for the whole tensor, not one per element.
    kernel = np.arange(1, 7, dtype="float32").reshape(1, 1, 1, 6)
    assert _np(unitwise_norm(kernel)).shape == ()
    assert float(_np(unitwise_norm(kernel))) == pytest.approx(np.sqrt(91.0))


def test_trigger_is_strict_and_clips_only_gradients_larger_than_lambda_times_weight():
    w = np.array([[1.0, 1.0, 1.0]], "float32") * np.array([[1.0], [0.0]], "float32")  # norms 1
    # Unit gradient norms 0.4 (below), 0.5 (exactly at) and 0.8 (above) the max norm 0.5.
    g = np.array([[0.4, 0.5, 0.0], [0.0, 0.0, 0.8]], "float32")
    out, n_clipped, n_units = clip_gradients_with_stats([g], [w], clipping=0.5)
    out = _np(out[0])
    np.testing.assert_array_equal(out[:, :2], g[:, :2])  # below and at the threshold: unchanged
    np.testing.assert_allclose(out[:, 2], [0.0, 0.5], rtol=1e-6)  # above: scaled to norm 0.5
    assert (float(n_clipped), n_units) == (1.0, 3)


def test_eps_floors_the_parameter_norm_not_the_gradient_norm():
    zeros = np.zeros((4,), "float32")
    g = np.array([3.0, 4.0, 0.0, 0.0], "float32")
    for eps in (1e-3, 1e-2):
        out = _np(clip_gradients([g], [zeros], clipping=0.01, eps=eps)[0])
        assert np.linalg.norm(out) == pytest.approx(0.01 * eps, rel=1e-5)
    # A zero gradient stays zero (no 0/0): eps is not on the gradient norm.
    np.testing.assert_array_equal(_np(clip_gradients([zeros], [zeros])[0]), zeros)


def test_clip_gradients_matches_numpy_transcription():
    rng = np.random.default_rng(1)
    shapes_axes = [((3, 3, 4, 6), (0, 1, 2)), ((7, 5), 0), ((6,), None), ((), None)]
    for shape, axis in shapes_axes:
        w = rng.normal(0, 0.1, shape).astype("float32")
        g = rng.normal(0, 0.01, shape).astype("float32")
        expected = _numpy_agc(g, w, 0.05, 1e-3, axis)
        np.testing.assert_allclose(_np(clip_gradients([g], [w], 0.05)[0]), expected, rtol=1e-5)


def test_none_gradients_pass_through_and_are_not_counted():
    w = np.ones((2, 2), "float32")
    out, n_clipped, n_units = clip_gradients_with_stats([None, 10 * w], [w, w], clipping=0.1)
    assert out[0] is None
    assert (float(n_clipped), n_units) == (2.0, 2)


def test_classifier_kernel_is_excluded_by_default_and_classifier_bias_is_clipped():
    dense = keras.layers.Dense(3, name="predictions")
    dense.build((None, 4))
    g_kernel = np.full((4, 3), 5.0, "float32")
    g_bias = np.full((3,), 5.0, "float32")
    kernel_out, bias_out = clip_gradients([g_kernel, g_bias], [dense.kernel, dense.bias], 0.01)
    np.testing.assert_array_equal(_np(kernel_out), g_kernel)
    # Zero-initialized bias: whole-vector norm clipped to 0.01 * eps (§13.2-§13.3).
    assert np.linalg.norm(_np(bias_out)) == pytest.approx(1e-5, rel=1e-5)


def test_nfnet_default_exclusion_matches_exactly_the_classifier_kernel(tiny_variant):
    model = NFNet(tiny_variant, input_shape=(32, 32, 3), classes=10)
    assert isinstance(model, AGCModel)
    excluded = [v.path for v in model.trainable_variables if is_excluded(v, model_exclude(model))]
    assert excluded == ["predictions/kernel"]
    exempt = {v.path.rsplit("/", 1)[-1] for v in model.trainable_variables if decay_exempt(v)}
    decayed = {v.path.rsplit("/", 1)[-1] for v in model.trainable_variables if not decay_exempt(v)}
    # §13.3: gains, every conv/SE/classifier bias and skip gains are exempt; kernels decay.
    assert exempt == {"gain", "bias", "skip_gain"}
    assert decayed == {"kernel"}


def model_exclude(model):
    from keras_nfnet.agc import DEFAULT_EXCLUDE

    return DEFAULT_EXCLUDE if model.agc_exclude is None else model.agc_exclude


# ------------------------------------------------------------------------------- AGCModel (TF)


def test_train_step_clips_all_but_the_classifier_kernel_then_adds_coupled_l2():
    lr, wd, lam = 0.5, 0.1, 0.05
    x, y = make_data(16)
    model = build_model()
    compile_model(model, keras.optimizers.SGD(lr), agc_clipping=lam, l2_weight_decay=wd)
    before = model.get_weights()
    grads = _grads(model, x, y)
    logs = model.train_on_batch(x, y, return_dict=True)
    axes = {4: (0, 1, 2), 2: 0, 1: None}
    for v, w0, g, w1 in zip(model.trainable_variables, before, grads, model.get_weights()):
        clipped = (
            g if v.path == "predictions/kernel" else _numpy_agc(g, w0, lam, 1e-3, axes[g.ndim])
        )
        decay = 0.0 if v.path.endswith("bias") else wd * w0  # AGC first, then coupled L2
        np.testing.assert_allclose(w1, w0 - lr * (clipped + decay), rtol=1e-5, atol=1e-7)
    assert 0.0 < logs["agc_clip_fraction"] < 1.0


def test_agc_off_gives_the_plain_keras_step():
    x, y = make_data(16)
    agc_off = compile_model(build_model(), agc_clipping=None)
    plain = keras.Model(agc_off.inputs, agc_off.outputs)
    plain_clone = keras.models.clone_model(plain)
    plain_clone.set_weights(initial_weights(plain_clone))
    plain_clone.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.5, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logs = agc_off.train_on_batch(x, y, return_dict=True)
    plain_clone.train_on_batch(x, y)
    for a, b in zip(agc_off.get_weights(), plain_clone.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert logs["agc_clip_fraction"] == 0.0


def _gradient_gathering_ops(model, x, y) -> list[str]:
    """Ops of the traced TF train step that take every gradient at once (an IdentityN)."""
    step = tf.function(lambda x, y: model.train_step((x, y)))
    graph = step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    n = len(model.trainable_variables)
    return [
        op.name for op in graph.get_operations() if op.type == "IdentityN" and len(op.inputs) >= n
    ]


def test_optimizer_updates_do_not_wait_for_every_gradient_on_one_replica():
    # Keras' own step all-reduces the gradients even with no strategy: one op over all of them,
    # so no variable is updated (and no gradient freed) before the last gradient exists.
    x, y = make_data(16)
    model = compile_model(build_model(), keras.optimizers.SGD(0.1, momentum=0.9))
    plain = keras.Model(model.inputs, model.outputs)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert _gradient_gathering_ops(plain, x, y) != []
    assert _gradient_gathering_ops(model, x, y) == []


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),  # decoupled decay: one barrier
    ],
    ids=["nesterov_sgd", "adamw"],
)
def test_gated_updates_equal_the_plain_keras_steps(make_optimizer):
    x, y = make_data(16)
    agc_off = compile_model(build_model(), make_optimizer(), agc_clipping=None)
    plain = keras.models.clone_model(keras.Model(agc_off.inputs, agc_off.outputs))
    plain.set_weights(agc_off.get_weights())
    plain.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    for _ in range(3):
        agc_off.train_on_batch(x, y)
        plain.train_on_batch(x, y)
    for a, b in zip(agc_off.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    duplicate = copy.deepcopy(agc_off.optimizer)  # the gates rebind to a copy
    assert duplicate.update_step.__self__ is duplicate


def test_mirrored_strategy_with_per_replica_data_equals_single_device_steps():
    x, y = make_data(48)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    single = compile_model(build_model())
    single.fit(dataset, epochs=1, verbose=0, shuffle=False)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = compile_model(build_model())
    history = mirrored.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert strategy.num_replicas_in_sync == 2
    assert mirrored.optimizer.iterations.numpy() == 3
    assert history.history["agc_clip_fraction"][-1] > 0.1  # AGC is actively clipping
    init = initial_weights(single)
    for w0, a, b in zip(init, mirrored.get_weights(), single.get_weights()):
        assert _rel(a, b) < 1e-5
        assert _rel(a - w0, b - w0) < 1e-4  # the updates themselves agree, not just the weights


def test_mixed_float16_step_with_loss_scaling_equals_float32_step():
    x, y = make_data(16)
    full = compile_model(build_model(), keras.optimizers.SGD(0.5))
    mixed = compile_model(
        build_model(dtype="mixed_float16"),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5)),
    )
    init = initial_weights(full)
    full_logs = full.train_on_batch(x, y, return_dict=True)
    mixed_logs = mixed.train_on_batch(x, y, return_dict=True)
    assert full_logs["agc_clip_fraction"] > 0.1
    assert mixed_logs["agc_clip_fraction"] == pytest.approx(full_logs["agc_clip_fraction"])
    assert float(mixed.optimizer.dynamic_scale.numpy()) == 2.0**15
    for w0, a, b in zip(init, mixed.get_weights(), full.get_weights()):
        # A double unscale or a rescaled update would be off by 2**15, not by fp16 rounding.
        assert _rel(a - w0, b - w0) < 1e-2


def test_mixed_float16_non_finite_step_is_skipped_and_halves_the_loss_scale():
    x, y = make_data(16)
    x[0, 0, 0, 0] = np.inf
    model = compile_model(
        build_model(dtype="mixed_float16"),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5, momentum=0.9)),
    )
    model.train_on_batch(x, y)
    for a, b in zip(model.get_weights(), initial_weights(model)):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.dynamic_scale.numpy()) == 2.0**14
    assert int(model.optimizer.iterations.numpy()) == 0
    x[0, 0, 0, 0] = 0.0
    model.train_on_batch(x, y)
    assert int(model.optimizer.iterations.numpy()) == 1
    assert int(model.optimizer.step_counter.numpy()) == 1


def test_mixed_float16_under_mirrored_strategy_skips_a_step_non_finite_on_one_replica():
    x, y = make_data(48)
    x[20, 0, 0, 0] = np.inf  # second global batch, first replica's half only
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def mixed_model():
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5, momentum=0.9))
        return compile_model(build_model(dtype="mixed_float16"), optimizer)

    single = mixed_model()
    single.fit(dataset, epochs=1, verbose=0, shuffle=False)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = mixed_model()
    mirrored.fit(dataset, epochs=1, verbose=0, shuffle=False)
    for model in (single, mirrored):
        assert int(model.optimizer.iterations.numpy()) == 2
        assert float(model.optimizer.dynamic_scale.numpy()) == 2.0**14
    for w0, a, b in zip(initial_weights(single), mirrored.get_weights(), single.get_weights()):
        assert _rel(a - w0, b - w0) < 1e-2  # fp16 forward passes on different batch splits


def test_bad_agc_arguments_raise_value_errors_naming_the_value():
    model = build_model()
    with pytest.raises(ValueError, match=re.escape("agc_clipping=0")):
        compile_model(model, agc_clipping=0)
    with pytest.raises(ValueError, match=re.escape("agc_clipping=-0.01")):
        compile_model(model, agc_clipping=-0.01)
    with pytest.raises(ValueError, match=re.escape("agc_eps=0.0")):
        compile_model(model, agc_eps=0.0)
    with pytest.raises(ValueError, match=re.escape("agc_eps=-1")):
        compile_model(model, agc_eps=-1)
    with pytest.raises(ValueError, match="'classifier/kernel' matches no trainable variable"):
        compile_model(model, agc_exclude=["classifier/kernel"])
    with pytest.raises(ValueError, match="list or tuple"):
        compile_model(model, agc_exclude="predictions/kernel")
    with pytest.raises(ValueError, match=re.escape("l2_weight_decay=-1e-05")):
        compile_model(model, l2_weight_decay=-1e-5)
    with pytest.raises(ValueError, match="loss_scale_factor"):
        compile_model(model, keras.optimizers.SGD(0.1, loss_scale_factor=128.0))


def test_agc_settings_survive_save_and_load(tmp_path):
    model = compile_model(
        build_model(),
        agc_clipping=0.02,
        agc_eps=1e-4,
        agc_exclude=["hidden/kernel", "predictions/kernel"],
        l2_weight_decay=2e-5,
    )
    x, y = make_data(16)
    model.train_on_batch(x, y)  # so the momentum buffers are saved and restored too
    path = tmp_path / "agc.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is AGCModel
    assert (loaded.agc_clipping, loaded.agc_eps, loaded.l2_weight_decay) == (0.02, 1e-4, 2e-5)
    assert loaded.agc_exclude == ("hidden/kernel", "predictions/kernel")
    a = model.train_on_batch(x, y, return_dict=True)
    b = loaded.train_on_batch(x, y, return_dict=True)
    assert a["agc_clip_fraction"] == b["agc_clip_fraction"] > 0
    for wa, wb in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-8)


def test_agc_off_survives_save_and_load(tmp_path):
    model = compile_model(build_model(), agc_clipping=None)
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "off.keras")
    assert keras.models.load_model(tmp_path / "off.keras").agc_clipping is None


def test_mwms_workaround_is_tied_to_the_verified_keras_versions():
    # Re-verify tests/test_agc_multiworker.py and widen WORKAROUND_KERAS_VERSIONS on upgrade.
    assert distribute_compat.workaround_enabled()
    assert distribute_compat.workaround_enabled("3.15.1")
    assert not distribute_compat.workaround_enabled("3.16.0")
    assert not distribute_compat.in_multi_worker_mode(tf.distribute.MirroredStrategy(["/cpu:0"]))


def test_the_agc_defaults_are_defined_once_and_every_entry_point_uses_them():
    import inspect

    from keras_nfnet import agc as agc_lib
    from training.configs import OptimizerConfig

    assert (agc_lib.DEFAULT_CLIPPING, agc_lib.DEFAULT_EPS) == (0.01, 1e-3)
    compile_args = inspect.signature(AGCModel.compile).parameters
    for fn in (agc_lib.clip_gradients, agc_lib.clip_gradients_with_stats, agc_lib.clip_unitwise):
        params = inspect.signature(fn).parameters
        assert params["clipping"].default is agc_lib.DEFAULT_CLIPPING
        assert params["eps"].default is agc_lib.DEFAULT_EPS
    assert compile_args["agc_clipping"].default is agc_lib.DEFAULT_CLIPPING
    assert compile_args["agc_eps"].default is agc_lib.DEFAULT_EPS
    assert OptimizerConfig().agc_clipping is agc_lib.DEFAULT_CLIPPING
    assert OptimizerConfig().agc_eps is agc_lib.DEFAULT_EPS


def test_clip_gradients_skips_overwrite_with_gradient_variables_as_the_train_step_does():
    from keras_nfnet import agc as agc_lib

    scale = keras.Variable(np.ones(3, "float32"), name="scale")
    scale.overwrite_with_gradient = True  # its "gradient" is its next value (float8 scales)
    weight = keras.Variable(np.ones(3, "float32"), name="weight")
    big = np.full(3, 100.0, "float32")
    out, n_clipped, n_units = agc_lib.clip_gradients_with_stats([big, big], [scale, weight])
    np.testing.assert_array_equal(np.asarray(out[0]), big)  # untouched
    # The weight's gradient is clipped to 0.01 * its norm: a vector is one unit.
    assert np.linalg.norm(np.asarray(out[1])) == pytest.approx(0.01 * np.sqrt(3), rel=1e-5)
    assert (float(n_clipped), n_units) == (1.0, 1)
