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


def _tiny_model(variant, numerics: str, stochdepth_rate=None):
    import keras

    from keras_nfnet import NFNet

    keras.utils.set_random_seed(0)
    model = NFNet(
        variant,
        input_shape=(32, 32, 3),
        classes=10,
        classifier_activation=None,
        numerics=numerics,
        stochdepth_rate=stochdepth_rate,
    )
    rng = np.random.default_rng(3)
    for layer in model.layers:  # skip gains start at zero; make the residual branches count
        if layer.name.endswith("skip_gain"):
            layer.set_weights([np.array(0.5, "float32")])
        elif hasattr(layer, "bias") and layer.bias is not None:  # biases start at zero too
            layer.bias.assign(rng.normal(0.0, 0.1, size=layer.bias.shape).astype("float32"))
    return model


def _model_outputs_and_grads(model, graph: bool = False, training: bool = False):
    from keras import ops

    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
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
    variant, numerics: str = "deepmind", graph: bool = False, training: bool = False
) -> None:
    """A reduced NFNet gives the same logits and gradients with the fast and reference paths.

    ``training=True`` runs stochastic depth (at a high rate, so blocks are dropped) and dropout,
    whose products the fast path's skip-gain gradient recomputes.
    """
    from keras_nfnet.fast import conv_ops, fusion
    from keras_nfnet.layers import ws_conv

    model = _tiny_model(variant, numerics, stochdepth_rate=0.8 if training else None)
    fast = _model_outputs_and_grads(model, graph, training)
    try:  # WSConv2D looks its conv up at call time; fusion is read at call time
        ws_conv.conv2d = conv_ops.reference_conv2d
        fusion.set_fusion(False)
        reference = _model_outputs_and_grads(model, graph, training)
    finally:
        ws_conv.conv2d = conv_ops.conv2d
        fusion.set_fusion(True)
    _assert_close(fast[0], reference[0], "logits", MODEL_TOLERANCE)
    _assert_close(fast[1], reference[1], "loss", MODEL_TOLERANCE)
    assert fast[2].keys() == reference[2].keys()
    assert any("conv1b" in name for name in fast[2])  # grouped convs are among the checked
    scalars = [name for name, grad in fast[2].items() if np.ndim(grad) == 0]
    for name, grad in fast[2].items():
        if name not in scalars:
            _assert_close(grad, reference[2][name], f"gradient of {name}", MODEL_TOLERANCE)
    # The skip gains' gradients are whole-tensor sums that can cancel (one measured 200x smaller
    # than the others), so they are compared together, relative to the largest of them.
    _assert_close(
        np.array([fast[2][n] for n in scalars]),
        np.array([reference[2][n] for n in scalars]),
        f"gradients of the scalars {scalars}",
        MODEL_TOLERANCE,
    )


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


def _run_backend(backend: str, tiny_variant) -> str:
    from conftest import run_python

    proc = run_python(
        [__file__, json.dumps(dataclasses.asdict(tiny_variant))],
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
    out = _run_backend("torch", tiny_variant)
    assert "path: torch" in out, out
    assert "all checks passed" in out


def main() -> None:
    from keras_nfnet.models.nfnet import NFNetVariant

    fields = json.loads(sys.argv[1])
    variant = NFNetVariant(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    print("path:", check_path_choice(), flush=True)
    check_convs()
    check_model(variant)
    print("all checks passed")


if __name__ == "__main__":
    main()
