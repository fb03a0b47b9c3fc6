"""The fast paths compute what the reference paths do, forward and gradients, on every backend.

`keras_nfnet.fast.conv_ops.conv2d` replaces Keras' grouped convolution per backend and device
(TF: ``tf.nn.conv2d``; JAX on CPU: one dense conv per group); each check compares it with
`reference_conv2d` (``keras.ops.conv``) on single convolutions. `keras_nfnet.fast.fusion` runs
the GELU and the weight standardization as fused XLA kernels with recomputing gradients on TF.
A reduced NFNet (`TINY_VARIANT`) is run with every fast path on and with every one off (reference
conv, fusion off), eagerly and inside ``tf.function`` (where TF prunes the backward pass's
recomputed convolution). TF runs in the pytest process; JAX and torch run this file as a script
in a subprocess:
``KERAS_BACKEND=jax python tests/test_fast_paths.py '<variant json>'``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import numpy as np
import pytest

# (in_channels, filters, groups, kernel, strides, padding, size): grouped and dense, stride 1
# and 2, even and odd sizes (SAME padding is asymmetric for even sizes at stride 2).
CONV_CASES = [
    (8, 12, 4, 3, 2, "same", 8),
    (8, 12, 4, 3, 2, "same", 9),
    (6, 6, 3, 3, 1, "valid", 7),
    (6, 10, 1, 3, 2, "same", 8),
    (8, 12, 1, 1, 1, "same", 7),  # pointwise: TF on CPU runs it as a matmul
    (8, 12, 1, 1, 2, "same", 8),  # 1x1 with stride: a real convolution
    (8, 12, 4, 1, 1, "valid", 5),  # grouped 1x1: a real (grouped) convolution
    (8, 12, 4, 3, 1, "same", 6),  # even padding on both sides: torch passes it to the conv
]
TOLERANCE = 1e-5  # relative to the largest magnitude of each compared array
# Whole-model checks: XLA reorders the fused reductions and evaluates the sigmoid differently, and
# a scalar gradient (a skip gain's) sums a whole activation tensor, so float32 rounding reaches
# ~1.1e-5 there; every other array agrees to ~1e-6.
MODEL_TOLERANCE = 5e-5


def _grads(fn, arrays, graph: bool = False):
    """``fn(*arrays) -> (scalar, aux)``: the scalar, aux and the scalar's gradients w.r.t. every
    array, per backend (TF: eagerly, or inside ``tf.function`` with ``graph=True``)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def value_aux_grads(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                value, aux = fn(*tensors)
            return value, aux, tape.gradient(value, tensors)

        step = tf.function(value_aux_grads) if graph else value_aux_grads
        value, aux, grads = step(*[tf.constant(a) for a in arrays])
        return float(value), np.asarray(aux), [g.numpy() for g in grads]
    if backend == "jax":
        import jax

        # One jit for value, aux and gradients: op-by-op dispatch of a model's gradient is slow.
        grad_fn = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(arrays))), has_aux=True))
        (value, aux), grads = grad_fn(*arrays)
        return float(value), np.asarray(aux), [np.asarray(g) for g in grads]
    import torch

    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    value, aux = fn(*tensors)
    value.backward()
    return float(value.detach()), aux.detach().numpy(), [t.grad.numpy() for t in tensors]


def _assert_close(actual, expected, what: str, tolerance: float = TOLERANCE) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-12)
    error = float(np.abs(actual - expected).max()) / scale
    assert error <= tolerance, f"{what}: relative difference {error:.2e} > {tolerance:.0e}"


def check_convs() -> None:
    """`conv2d` equals `reference_conv2d` (forward and the three gradients) on every CONV_CASE,
    with a bias (which TF's paths fuse into the convolution or matmul)."""
    from keras import ops

    from keras_nfnet.fast.conv_ops import conv2d, reference_conv2d

    rng = np.random.default_rng(0)
    for in_ch, filters, groups, k, stride, padding, size in CONV_CASES:
        x = rng.normal(size=(2, size, size, in_ch)).astype("float32")
        w = rng.normal(size=(k, k, in_ch // groups, filters)).astype("float32")
        b = rng.normal(size=(filters,)).astype("float32")
        probe = rng.normal(size=(1, 1, 1, filters)).astype("float32")
        results = []
        for conv in (conv2d, reference_conv2d):

            def loss(x_, w_, b_, conv=conv, strides=(stride, stride), padding=padding, probe=probe):
                y = conv(x_, w_, strides=strides, padding=padding, bias=b_)
                return ops.sum(ops.tanh(y) * ops.convert_to_tensor(probe)), y

            results.append(_grads(loss, [x, w, b]))
        case = f"conv {in_ch}->{filters} groups={groups} k={k} s={stride} {padding} {size}px"
        (v_fast, y_fast, g_fast), (v_ref, y_ref, g_ref) = results
        _assert_close(y_fast, y_ref, f"{case} output")
        _assert_close(v_fast, v_ref, f"{case} loss")
        _assert_close(g_fast[0], g_ref[0], f"{case} d/dx")
        _assert_close(g_fast[1], g_ref[1], f"{case} d/dkernel")
        _assert_close(g_fast[2], g_ref[2], f"{case} d/dbias")


# Reduced rows of every family, each with the features its full rows route through the fast
# paths: timm's layouts (symmetric padding, gamma on the convs, no skip gain), SiLU and ReLU,
# ECA and SE, the 7x7 stem with its -inf max-pool, RegNet's mid-block SE and groups of 8.
REDUCED = {
    # The L rows' bottleneck is a quarter of the channels: 16…48 wide, in groups of 8 (2…6).
    "eca_nfnet_l0": {"depths": (1, 1, 1, 1), "channels": (64, 96, 128, 192), "group_size": 8},
    "nfnet_l0": {"depths": (1, 1, 1, 1), "channels": (64, 96, 128, 192), "group_size": 8},
    "nf_resnet50": {"depths": (1, 1, 1, 1), "channels": (32, 64, 96, 128)},
    "nf_regnet_b1": {"depths": (1, 2, 1, 1), "channels": (16, 24, 32, 48), "head_channels": 64},
}
REDUCED_STEM = {"eca_nfnet_l0": 32, "nfnet_l0": 32, "nf_resnet50": 16, "nf_regnet_b1": 16}
# At 48 px the last two stages are 3x3 (odd: where the padding rules part) and 2x2; the F model
# keeps the 32 px its checks were written for.
SIZE = 48
F_SIZE = 32


def reduced_spec(row: str):
    """A few-block, narrow `NFSpec` of timm's row ``row`` (`REDUCED`), every other field kept."""
    import dataclasses

    from keras_nfnet import get_spec

    fields = {**REDUCED[row], "stem_channels": REDUCED_STEM[row]}
    if get_spec(row).head_channels and "head_channels" not in fields:
        fields["head_channels"] = 2 * fields["channels"][-1]
    return dataclasses.replace(get_spec(row), **fields)


def _tiny_model(variant, numerics: str | None = None, stochdepth_rate=None):
    """The reduced DeepMind F model of ``variant`` (an `NFNetVariant`), or the reduced timm row
    named ``variant`` (a key of `REDUCED`), with every gain, bias and skip gain randomized."""
    import keras

    from keras_nfnet import NFNet
    from keras_nfnet.models.normfree import NormFreeNet

    keras.utils.set_random_seed(0)
    size = SIZE if isinstance(variant, str) else F_SIZE
    common = {
        "input_shape": (size, size, 3),
        "classes": 10,
        "classifier_activation": None,
        "stochdepth_rate": stochdepth_rate,
    }
    if isinstance(variant, str):
        model = NormFreeNet(reduced_spec(variant), numerics=numerics, **common)
    else:
        model = NFNet(variant, numerics=numerics or "deepmind", **common)
    rng = np.random.default_rng(3)
    for layer in model.layers:  # skip gains start at zero; make the residual branches count
        if layer.name.endswith("skip_gain"):
            layer.set_weights([np.array(0.5, "float32")])
            continue
        if getattr(layer, "bias", None) is not None:  # biases start at zero too
            layer.bias.assign(rng.normal(0.0, 0.1, size=layer.bias.shape).astype("float32"))
        if getattr(layer, "gain", None) is not None:  # timm rows start their last gain at zero
            layer.gain.assign(rng.normal(1.0, 0.2, size=layer.gain.shape).astype("float32"))
    return model


def _model_outputs_and_grads(model, graph: bool = False, training: bool = False):
    from keras import ops

    x = np.random.default_rng(1).normal(size=(4, *model.input_shape[1:])).astype("float32")
    probe = np.random.default_rng(2).normal(size=(4, 10)).astype("float32")
    weights = [ops.convert_to_numpy(v) for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(x_, *trainable):
        # The same seed state each call: stochastic depth and dropout draw the same masks.
        logits, _ = model.stateless_call(list(trainable), non_trainable, x_, training=training)
        return ops.sum(logits * ops.convert_to_tensor(probe)), logits

    value, logits, grads = _grads(loss, [x, *weights], graph)
    names = ["input"] + [v.path for v in model.trainable_variables]
    return logits, value, dict(zip(names, grads))


def check_model(
    variant, numerics: str | None = None, graph: bool = False, training: bool = False
) -> None:
    """A reduced model gives the same logits and gradients with the fast and reference paths.

    ``variant`` is an `NFNetVariant` (DeepMind's F layout) or a key of `REDUCED` (timm's rows).
    ``training=True`` runs stochastic depth (at a high rate, so blocks are dropped) and dropout,
    whose products the fast path's skip-gain gradient recomputes.
    """
    from keras_nfnet.fast import reference_paths

    model = _tiny_model(variant, numerics, stochdepth_rate=0.8 if training else None)
    fast = _model_outputs_and_grads(model, graph, training)
    with reference_paths():  # conv, pooling and fusion are looked up at call time
        reference = _model_outputs_and_grads(model, graph, training)
    _assert_close(fast[0], reference[0], "logits", MODEL_TOLERANCE)
    _assert_close(fast[1], reference[1], "loss", MODEL_TOLERANCE)
    assert fast[2].keys() == reference[2].keys()
    assert any("conv1" in name for name in fast[2])  # the 3x3 (grouped) convs are checked
    scalars = [name for name, grad in fast[2].items() if np.ndim(grad) == 0]
    for name, grad in fast[2].items():
        if name not in scalars:
            _assert_close(grad, reference[2][name], f"gradient of {name}", MODEL_TOLERANCE)
    # The skip gains' gradients are whole-tensor sums that can cancel (one measured 200x smaller
    # than the others), so they are compared together, relative to the largest of them.
    if scalars:
        _assert_close(
            np.array([fast[2][n] for n in scalars]),
            np.array([reference[2][n] for n in scalars]),
            f"gradients of the scalars {scalars}",
            MODEL_TOLERANCE,
        )


def check_spatial_mean() -> None:
    """`spatial_mean` equals `reference_spatial_mean` (``keras.ops.mean``), value and gradient."""
    from keras import ops

    from keras_nfnet.fast import reference_spatial_mean, spatial_mean

    rng = np.random.default_rng(0)
    for shape in [(2, 5, 7, 3), (3, 4, 4, 6), (2, 1, 1, 4)]:
        x = rng.normal(size=shape).astype("float32")
        probe = rng.normal(size=(1, shape[-1])).astype("float32")
        results = []
        for mean in (spatial_mean, reference_spatial_mean):

            def loss(x_, mean=mean, probe=probe):
                y = mean(x_)
                return ops.sum(ops.tanh(y) * ops.convert_to_tensor(probe)), y

            results.append(_grads(loss, [x], graph=True))
        (_, y_fast, g_fast), (_, y_ref, g_ref) = results
        _assert_close(y_fast, y_ref, f"spatial mean {shape}")
        _assert_close(g_fast[0], g_ref[0], f"spatial mean {shape} d/dx")


def check_path_choice() -> str:
    """Which op `conv2d` emits for a grouped conv on this backend (asserted by the tests)."""
    import keras

    from keras_nfnet.fast.conv_ops import conv2d

    x = np.ones((1, 6, 6, 8), "float32")
    w = np.ones((3, 3, 2, 8), "float32")
    if keras.backend.backend() == "jax":
        import jax

        jaxpr = str(jax.make_jaxpr(lambda a, b: conv2d(a, b))(x, w))
        group_counts = {int(n) for n in re.findall(r"feature_group_count=(\d+)", jaxpr)}
        w_1x1 = np.ones((1, 1, 8, 4), "float32")
        pointwise = str(jax.make_jaxpr(lambda a, b: conv2d(a, b))(x, w_1x1))
        kind = "conv" if "conv_general_dilated" in pointwise else "dot"
        return f"{jax.default_backend()} feature_group_counts={sorted(group_counts)} 1x1={kind}"
    return keras.backend.backend()


def test_tf_conv2d_matches_keras_ops_conv():
    check_convs()


def test_tf_tiny_nfnet_fast_path_matches_reference_forward_and_gradients(tiny_variant):
    check_model(tiny_variant)


def test_tf_tiny_nfnet_fast_path_matches_reference_in_tf_function(tiny_variant):
    check_model(tiny_variant, graph=True)


def test_tf_tiny_nfnet_fast_path_matches_reference_in_training(tiny_variant):
    check_model(tiny_variant, graph=True, training=True)


def test_tf_timm_numerics_fast_path_matches_reference(tiny_variant):
    check_model(tiny_variant, numerics="timm", graph=True)  # exact GELU, timm's WS epsilon


@pytest.mark.parametrize("row", sorted(REDUCED))
def test_tf_reduced_row_fast_path_matches_reference_forward_and_gradients(row):
    check_model(row)


@pytest.mark.parametrize("row", sorted(REDUCED))
def test_tf_reduced_row_fast_path_matches_reference_in_training(row):
    check_model(row, graph=True, training=True)


def test_tf_spatial_mean_matches_keras_ops_mean():
    check_spatial_mean()


def test_tf_spatial_mean_is_one_avg_pool_on_cpu():
    import tensorflow as tf

    from keras_nfnet.fast import spatial_mean

    spec = tf.TensorSpec((None, 6, 5, 8), tf.float32)
    graph = tf.function(spatial_mean).get_concrete_function(spec).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "AvgPool" in op_types and "Mean" not in op_types, op_types


def _xla_calls(fusion_on: bool) -> int:
    """XLA-compiled function calls in the traced gradient of a GELU + grouped WS conv."""
    import tensorflow as tf

    from keras_nfnet.fast import fusion
    from keras_nfnet.layers import ScaledActivation, WSConv2D

    act, conv = ScaledActivation("gelu", scale=0.5), WSConv2D(8, 3, groups=2)
    x = tf.random.stateless_normal((2, 6, 6, 4), seed=(0, 1))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(conv(act(x)) ** 2)
        return tape.gradient(y, [x, *conv.trainable_variables])

    fusion.set_fusion(fusion_on)
    try:
        graph = step.get_concrete_function(x).graph
    finally:
        fusion.set_fusion(True)
    return sum(
        op.type in ("PartitionedCall", "StatefulPartitionedCall")
        and op.node_def.attr["_XlaMustCompile"].b
        for op in graph.get_operations()
    )


def test_tf_fused_chains_are_xla_functions_and_fusion_can_be_turned_off():
    # GELU forward and backward, WS forward, WS recomputed and its backward in the gradient.
    assert _xla_calls(True) >= 4
    assert _xla_calls(False) == 0


def _backward_consumers_of_residual(fusion_on: bool) -> list[str]:
    """Backward-pass ops reading a block's residual branch (SE, then stochastic depth)."""
    import tensorflow as tf

    from keras_nfnet.fast import fusion
    from keras_nfnet.layers import SkipGain, SqueezeExcite, StochDepth, WSConv2D

    conv, se = WSConv2D(8, 1), SqueezeExcite(4, gate_multiplier=2.0)
    drop, merge = StochDepth(0.5, seed=1), SkipGain(alpha=0.2)
    x = tf.random.stateless_normal((2, 6, 6, 8), seed=(0, 1))
    names = []

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            residual = drop(se(conv(x)), training=True)
            names.append(residual.name)
            y = tf.reduce_sum(merge([x, residual]) ** 2)
        return tape.gradient(y, [x, merge.skip_gain, *conv.trainable_variables])

    fusion.set_fusion(fusion_on)
    try:
        graph = step.get_concrete_function(x).graph
    finally:
        fusion.set_fusion(True)
    consumers = graph.get_tensor_by_name(names[-1]).consumers()
    return [op.name for op in consumers if op.name.startswith("gradient_tape")]


def test_tf_skip_gain_gradient_recomputes_the_residual_instead_of_keeping_it():
    # The skip gain's gradient needs the residual; the fast path rebuilds it from the SE and
    # stochastic-depth factors (kept anyway), so the residual is freed after the forward pass.
    assert _backward_consumers_of_residual(True) == []
    assert _backward_consumers_of_residual(False) != []


def test_tf_pointwise_conv_is_a_matmul_on_cpu():
    import tensorflow as tf

    from keras_nfnet.fast.conv_ops import conv2d

    graph = (
        tf.function(conv2d)
        .get_concrete_function(
            tf.TensorSpec((None, 6, 6, 8), tf.float32), tf.TensorSpec((1, 1, 8, 4), tf.float32)
        )
        .graph
    )
    op_types = {op.type for op in graph.get_operations()}
    assert "MatMul" in op_types and "Conv2D" not in op_types, op_types


def _run_backend(backend: str, tiny_variant, rows: tuple[str, ...] = ()) -> str:
    from conftest import run_python

    proc = run_python(
        [__file__, json.dumps(dataclasses.asdict(tiny_variant)), *rows],
        env={"KERAS_BACKEND": backend},
    )
    return proc.stdout


def test_jax_fast_path_splits_groups_on_cpu_and_matches_reference(tiny_variant):
    out = _run_backend("jax", tiny_variant)
    # On CPU every conv in the fast path is dense (feature_group_count=1): the split form.
    # 1x1 convs are one matmul (dot_general) on CPU.
    assert "path: cpu feature_group_counts=[1] 1x1=dot" in out, out
    assert "all checks passed" in out


def test_torch_fast_path_matches_reference(tiny_variant):
    out = _run_backend("torch", tiny_variant, tuple(sorted(REDUCED)))
    assert "path: torch" in out, out
    for row in REDUCED:
        assert f"{row}: fast path matches the reference" in out, out
    assert "all checks passed" in out


def main() -> None:
    from keras_nfnet.models.nfnet import NFNetVariant

    fields = json.loads(sys.argv[1])
    variant = NFNetVariant(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    print("path:", check_path_choice(), flush=True)
    check_convs()
    check_spatial_mean()
    check_model(variant)
    for row in sys.argv[2:]:
        check_model(row)
        print(f"{row}: fast path matches the reference", flush=True)
    print("all checks passed")


if __name__ == "__main__":
    main()
