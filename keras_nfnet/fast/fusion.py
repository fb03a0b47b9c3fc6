"""Elementwise chains run as one kernel, with gradients that keep only the chain's inputs.

Two chains of small ops run once per layer and per step in an NFNet: the tanh GELU
(``0.5 x (1 + tanh(x (c1 + c3 x^2))) * gamma``, ~9 ops on an activation-sized tensor) and Scaled
Weight Standardization (mean, variance and normalization of a kernel-sized tensor, ~7 ops).
TensorFlow runs each op as its own kernel on CPU, reading and writing the whole tensor each time,
and its autodiff keeps the intermediates alive until the backward pass (what fusing saves is
measured in bench/FINDINGS.md §2).
`fused` changes how such a chain runs, never what it computes:

========================  ======================================================================
backend                   path
========================  ======================================================================
TensorFlow, any device    the chain is one ``tf.function(jit_compile=True)`` (XLA fuses it into a
                          single loop: one read, one write), and its gradient is a second XLA
                          function that recomputes the chain under a tape from the saved inputs,
                          so nothing else is kept for the backward pass (``tf.custom_gradient``).
                          `fused_weight` (the convolution recomputes its standardized kernel
                          and its activated input in the backward pass) and `recomputing` in
                          `SkipGain` (the residual is rebuilt from the SE and stochastic-depth
                          factors) keep less for the backward pass in the same way
                          (bench/FINDINGS.md §2). A constant pad of a recomputable tensor (the
                          ``ZeroPadding2D`` of symmetric padding) is recomputable too, and a
                          fused chain whose input is recomputable (an activation after an
                          attention gate) rebuilds that input in its gradient.
                          XLA is what TensorFlow documents for fusing elementwise ops on CPU,
                          GPU and TPU (not measured here on GPU/TPU).
JAX                       the function itself: ``jax.jit`` already compiles the whole step with
                          XLA, which fuses these chains.
torch                     the function itself (eager; the GELU uses torch's fused kernel).
========================  ======================================================================

``KERAS_NFNET_FUSION=0`` in the environment, or ``set_fusion(False)``, turns fusion off (the
reference path); tests/test_fast_paths.py checks both paths give the same outputs and gradients.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable

import keras

_enabled = os.environ.get("KERAS_NFNET_FUSION", "1").strip().lower() not in ("0", "false", "no")
_cache: dict[tuple, Callable] = {}


def set_fusion(enabled: bool) -> None:
    """Turn fused chains on (default) or off; takes effect for layers called afterwards.

    Models already traced into a ``tf.function`` (e.g. by ``fit``) keep the path they traced.

    Example:
    >>> set_fusion(False); fusion_enabled()
    False
    >>> set_fusion(True); fusion_enabled()
    True
    """
    global _enabled
    _enabled = bool(enabled)


def fusion_enabled() -> bool:
    """Whether `fused` chains are on (``KERAS_NFNET_FUSION``, `set_fusion`)."""
    return _enabled


def fused(fn: Callable, **static: Hashable) -> Callable:
    """Return ``lambda *tensors: fn(*tensors, **static)``, run as one fused kernel on TF.

    ``fn`` must be a pure function of its tensor arguments (keras.ops or backend ops) and of the
    hashable constants in ``static``. On the TF backend with fusion on, the result runs under XLA
    and its gradient recomputes ``fn`` from the inputs (see the module docstring); elsewhere it
    calls ``fn`` directly. Outputs are equal to ``fn``'s to float rounding.

    Example:
    >>> import numpy as np
    >>> cube_plus = fused(lambda x, c: x * x * x + c, c=1.0)
    >>> float(np.asarray(cube_plus(np.array(2.0, "float32"))))
    9.0
    """
    if not _enabled or keras.backend.backend() != "tensorflow":
        return lambda *tensors: fn(*tensors, **static)
    return lambda *tensors: _tf_call(fn, static, tensors)


def fused_weight(op: Callable, weight_fn: Callable, **static: Hashable) -> Callable:
    """Return ``f(x, *params, extra=()) = op(x, weight_fn(*params, **static), *extra)``.

    For a layer whose weight is computed from its variables (a WS convolution: ``op`` is the
    convolution with its bias in ``extra``, ``weight_fn`` the standardization). On TF with fusion
    on, ``weight_fn`` runs as a `fused` kernel and the weight is not kept for the backward pass:
    the gradient recomputes it from ``params`` (one more fused kernel) and differentiates ``op``
    from ``x``, ``extra`` and the recomputed weight. The recomputed forward ``op`` feeds nothing,
    so ``tf.function`` prunes it (in eager mode it runs). If ``x`` came out of a `fused` chain in
    the same traced graph (an activation), the gradient recomputes ``x`` too, from that chain's
    inputs, so ``x`` itself is not kept either. Elsewhere this is the plain composition.

    Example:
    >>> import numpy as np
    >>> scaled_matmul = fused_weight(lambda x, w: x @ w, lambda w, c: w * c, c=2.0)
    >>> y = scaled_matmul(np.ones((1, 2), "float32"), np.ones((2, 1), "float32"))
    >>> float(np.asarray(y)[0, 0])
    4.0
    """
    weight = fused(weight_fn, **static)
    if not _enabled or keras.backend.backend() != "tensorflow":
        return lambda x, *params, extra=(): op(x, weight(*params), *extra)
    return lambda x, *params, extra=(): _tf_weight_call(op, weight, x, params, tuple(extra))


def _tf_weight_call(op: Callable, weight: Callable, x, params: tuple, extra: tuple):
    n = len(params)

    def apply(x, *rest):
        return op(x, weight(*rest[:n]), *rest[n:])

    return _tf_recomputing_call(apply, x, params + extra)


def recomputing(fn: Callable, x, *rest):
    """``fn(x, *rest)``, whose gradient recomputes ``x`` instead of keeping it, where it can.

    On TF with fusion on, when ``x`` was noted by `remember` (or came out of a `fused` chain) in
    the same traced graph, the backward pass recomputes ``x`` from the inputs of its recipe,
    which their own gradients keep anyway, and differentiates ``fn`` from there, so ``x`` is
    freed after the forward pass. Elsewhere this is ``fn(x, *rest)``.

    Example:
    >>> import numpy as np
    >>> float(np.asarray(recomputing(lambda x, c: x * c, np.float32(3.0), np.float32(2.0))))
    6.0
    """
    if not _enabled or keras.backend.backend() != "tensorflow" or _recipe(x) is None:
        return fn(x, *rest)
    return _tf_recomputing_call(fn, x, rest)


def _tf_recomputing_call(fn: Callable, x, rest: tuple):
    import tensorflow as tf

    # Variables are read here, outside the custom gradient (as in `_tf_call`).
    x = tf.convert_to_tensor(x)
    rest = tuple(tf.convert_to_tensor(t) for t in rest)

    @tf.custom_gradient
    def call(x_in, *rest_in):
        def grad(upstream):
            # Recompute when the upstream gradient exists: TF's executor would otherwise run the
            # variable-only parts (a standardized kernel) at the start of the step.
            with tf.control_dependencies([upstream]):
                rest_ = tuple(tf.identity(t) for t in rest_in)
                x_ = _recompute(x_in)
            return _vjp(fn, (x_, *rest_), upstream)

        return fn(x_in, *rest_in), grad

    return call(x, *rest)


def remember(output, forward: Callable, *inputs):
    """Note that ``output == forward(*inputs)``, so `recomputing` may rebuild it; returns it.

    For an elementwise step whose ``inputs`` the backward pass keeps anyway (a product whose
    gradient needs both factors). The note exists only in traced TF graphs.

    Example:
    >>> import numpy as np
    >>> x = np.float32(2.0)
    >>> float(np.asarray(remember(x * x, lambda a: a * a, x)))
    4.0
    """
    if keras.backend.backend() != "tensorflow":
        return output
    import tensorflow as tf

    # Only on a traced tensor, where the note lives exactly as long as the graph's tensors;
    # eager tensors are values and get none.
    if tf.inside_function() and hasattr(output, "graph"):
        output._keras_nfnet_recipe = (forward, inputs)
    return output


def _recipe(tensor):
    """``(forward, inputs)`` if ``tensor`` came out of a fused chain in this graph (or is a
    constant pad of such a tensor, `_pad_recipe`), else None."""
    recipe = getattr(tensor, "_keras_nfnet_recipe", None)
    return _pad_recipe(tensor) if recipe is None else recipe


def _pad_recipe(tensor):
    """The recipe of a constant ``Pad``/``PadV2`` of a recomputable tensor, else None.

    The symmetric padding of timm's rows is a ``ZeroPadding2D`` between an activation and its
    ``"valid"`` convolution; the convolution's gradient would otherwise keep the padded copy of
    the activation, which the backward pass rebuilds instead from the activation's input.
    """
    try:
        op = tensor.op  # eager tensors have none
    except AttributeError:
        return None
    if op is None or op.type not in ("Pad", "PadV2") or _recipe(op.inputs[0]) is None:
        return None
    import tensorflow as tf

    if op.type == "Pad":
        return lambda x, paddings: tf.raw_ops.Pad(input=x, paddings=paddings), tuple(op.inputs)
    return (
        lambda x, paddings, value: tf.raw_ops.PadV2(
            input=x, paddings=paddings, constant_values=value
        ),
        tuple(op.inputs),
    )


def _recompute(tensor):
    """``tensor`` again, from the leaves of its recipes (tensors without one)."""
    import tensorflow as tf

    recipe = _recipe(tensor)
    if recipe is None:
        return tf.identity(tensor)
    forward, inputs = recipe
    return forward(*(_recompute(t) for t in inputs))


def _tf_call(fn: Callable, static: dict, tensors: tuple):
    import tensorflow as tf

    # Variables are read here, outside the custom gradient: it then sees plain tensors, and the
    # tape carries their gradients on to the variables.
    tensors = tuple(tf.convert_to_tensor(t) for t in tensors)
    # One traced function per fn, constants and input signature: each is traced once, and the
    # functions see static shapes (a kernel's fan-in is a Python int).
    signature = tuple((tuple(t.shape), t.dtype.name) for t in tensors)
    key = (fn, tuple(sorted(static.items())), signature)
    if key not in _cache:
        _cache[key] = _tf_fused(lambda *inputs: fn(*inputs, **static))
    fused_fn = _cache[key]
    if any(_recipe(t) is not None for t in tensors):
        # An input that is itself recomputable (an attention gate's product before the next
        # activation) is rebuilt in the backward pass instead of kept.
        output = _tf_recomputing_inputs_call(fused_fn, tensors)
    else:
        output = fused_fn(*tensors)
    return remember(output, fused_fn.forward, *tensors)


def _tf_recomputing_inputs_call(fused_fn: Callable, tensors: tuple):
    import tensorflow as tf

    @tf.custom_gradient
    def call(*inputs):
        def grad(upstream):
            with tf.control_dependencies([upstream]):
                inputs_ = tuple(_recompute(t) for t in inputs)
            return fused_fn.backward(inputs_, upstream)

        return fused_fn.forward(*inputs), grad

    return call(*tensors)


def _tf_fused(fn: Callable) -> Callable:
    import tensorflow as tf

    options = {"jit_compile": True, "autograph": False}
    forward = tf.function(fn, **options)
    backward = tf.function(lambda inputs, upstream: _vjp(fn, inputs, upstream), **options)
    for function in (forward, backward):
        # Each is traced once, for its own input signature (`_tf_call`); TF's "frequent
        # retracing" warning counts traces of the same Python code across all of them.
        function._omit_frequent_tracing_warning = True

    @tf.custom_gradient
    def call(*inputs):
        def grad(upstream):
            return backward(inputs, upstream)

        return forward(*inputs), grad

    call.forward = forward  # the value alone, for recomputation (`remember`)
    call.backward = backward  # the gradient from given inputs (`_tf_recomputing_inputs_call`)
    return call


def _vjp(fn: Callable, inputs: tuple, upstream):
    """Gradients of ``fn(*inputs)`` w.r.t. every input, given the upstream gradient (zeros for
    inputs the output does not depend on)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = fn(*inputs)
    return tape.gradient(
        outputs, inputs, upstream, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
