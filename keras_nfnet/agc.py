"""Adaptive Gradient Clipping (AGC), docs/nfnet_reference.md §13.1-§13.3, in `keras.ops`.

AGC clips a gradient unit by unit (one output channel of a conv kernel, one output unit of a
Dense kernel, or a whole bias/gain vector) when its norm is larger than ``clipping`` times the
norm of the matching unit of the parameter:

* ``p_n = max(U(p), eps)`` (eps on the **parameter** norm), ``g_n = U(g)``, ``m = clipping * p_n``;
* where ``g_n > m`` (strict): ``g <- g * m / max(g_n, 1e-6)``; elsewhere ``g`` is unchanged.

This module only knows gradients and variables. Where AGC sits in a training step (after the
cross-replica sum, after loss-scale unscaling, before coupled L2 and the optimizer) is the job of
`keras_nfnet.agc_model.AGCModel`.

Example:
>>> import numpy as np
>>> from keras_nfnet.agc import clip_gradients
>>> w = np.ones((4, 2), "float32")          # unit norms: 2.0 each
>>> g = np.array([[1.0, 0.001]] * 4, "float32")  # unit norms: 2.0 and 0.002
>>> clipped = clip_gradients([g], [w], clipping=0.01)
>>> [round(float(v), 4) for v in np.asarray(clipped[0])[0]]  # unit 0 scaled to norm 0.02
[0.01, 0.001]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from keras import ops

# docs/nfnet_reference.md §13.3: DeepMind excludes only the classifier kernel from AGC; the
# classifier
# bias is still clipped. Patterns are regular expressions searched in `variable.path` (the same
# convention as Keras' `Optimizer.exclude_from_weight_decay`).
DEFAULT_EXCLUDE: tuple[str, ...] = (r"(^|/)predictions/kernel$",)

# §13.2: the floor on the gradient norm in the clip factor (a divide-by-zero guard).
_GRAD_NORM_FLOOR = 1e-6

# The AGC defaults (docs/nfnet_reference.md §13.2): lambda, DeepMind's value at batch 4096 with
# SGD, and the floor on parameter norms. Every default in the package and the trainer is these.
DEFAULT_CLIPPING = 0.01
DEFAULT_EPS = 1e-3

# §13.3 gains_biases group: leaf names {scale, offset, b} or containing "gain" or "bias".
# `gamma`/`beta` are the Keras names of the normalization layers' scale and offset.
_EXEMPT_LEAF_NAMES = frozenset({"scale", "offset", "b", "gamma", "beta"})


def unit_axes(shape) -> tuple[int, ...] | None:
    """The axes `unitwise_norm` reduces for a tensor of ``shape``; None means the whole tensor.

    Example:
    >>> unit_axes((3, 3, 8, 16)), unit_axes((5, 10)), unit_axes((1, 1, 1, 6)), unit_axes(())
    ((0, 1, 2), (0,), None, None)
    """
    shape = tuple(shape)
    if sum(1 for d in shape if d != 1) <= 1:
        return None
    return (0,) if len(shape) in (2, 3) else tuple(range(len(shape) - 1))


def unitwise_norm(x):
    """L2 norm of ``x`` per output unit (docs/nfnet_reference.md §13.1).

    * squeezed rank <= 1 (scalars, biases, gains, ``skip_gain``, any tensor with a single
      non-singleton axis): the norm of the whole tensor, returned as a 0-d tensor;
    * rank 2 (Dense kernel ``(in, out)``) and rank 3: the norm over axis 0, keepdims
      (DeepMind's rule; it differs from timm's only for rank-3 kernels);
    * rank 4 and above (conv kernels, ``HWIO``): the norm over every axis but the last, keepdims,
      so one norm per output channel.

    Args:
        x: a tensor.

    Returns:
        A tensor that broadcasts against ``x``.

    Example:
    >>> import numpy as np
    >>> tuple(unitwise_norm(np.ones((3, 3, 8, 16), "float32")).shape)
    (1, 1, 1, 16)
    >>> float(unitwise_norm(np.full((4,), 0.5, "float32")))
    1.0
    """
    axis = unit_axes(x.shape)
    return ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=axis is not None))


def unitwise_norm_tf_fused(x):
    """`unitwise_norm` as one TensorFlow kernel (``tf.math.reduce_euclidean_norm``).

    Same value; on a CPU without XLA it reads ``x`` once instead of materializing ``x**2``, which
    halves AGC's cost (bench/bench_agc.py). TF has no XLA kernel for it, so `AGCModel` uses it
    only when the TF train function is not XLA-compiled.

    Example:
    >>> import numpy as np
    >>> float(unitwise_norm_tf_fused(np.array([3.0, 4.0], "float32")))
    5.0
    """
    import tensorflow as tf

    axis = unit_axes(x.shape)
    return tf.math.reduce_euclidean_norm(x, axis=axis, keepdims=axis is not None)


def unitwise_norm_torch_fused(x):
    """`unitwise_norm` as one PyTorch kernel (``torch.linalg.vector_norm``), for eager torch.

    Same value; it reads ``x`` once instead of materializing ``x**2`` per variable and step.
    `AGCModel`'s torch train step uses it outside `keras_nfnet.fast.reference_paths`.

    Example:
    >>> import torch
    >>> float(unitwise_norm_torch_fused(torch.tensor([3.0, 4.0])))
    5.0
    """
    import torch

    axis = unit_axes(x.shape)
    return torch.linalg.vector_norm(x, dim=axis, keepdim=axis is not None)


def clip_unitwise(
    grad, param, clipping: float = DEFAULT_CLIPPING, eps: float = DEFAULT_EPS, norm=unitwise_norm
):
    """AGC for one tensor (§13.2); returns ``(clipped_grad, n_clipped_units, n_units)``.

    ``n_clipped_units`` is a float32 scalar tensor; ``n_units`` a Python int. ``norm`` is
    `unitwise_norm` or, on TensorFlow without XLA, `unitwise_norm_tf_fused` (on torch,
    `unitwise_norm_torch_fused`).

    Example:
    >>> import numpy as np
    >>> g, n, total = clip_unitwise(np.array([3.0, 4.0], "float32"), np.zeros(2, "float32"))
    >>> [round(float(v), 8) for v in np.asarray(g)], float(n), total  # max norm 0.01 * 1e-3
    ([6e-06, 8e-06], 1.0, 1)
    """
    grad = ops.convert_to_tensor(grad)
    param = ops.cast(param, grad.dtype)
    param_norm = ops.maximum(norm(param), eps)
    grad_norm = norm(grad)
    max_norm = param_norm * clipping
    trigger = ops.greater(grad_norm, max_norm)  # §13.2: strict '>'
    scale = ops.where(trigger, max_norm / ops.maximum(grad_norm, _GRAD_NORM_FLOOR), 1.0)
    n_units = 1
    for d in tuple(grad_norm.shape):
        n_units *= int(d)
    n_clipped = ops.sum(ops.cast(trigger, "float32"))
    return grad * ops.cast(scale, grad.dtype), n_clipped, n_units


def is_excluded(variable, exclude: Sequence[str]) -> bool:
    """Whether ``variable.path`` matches one of the ``exclude`` patterns (`re.search`).

    Tensors without a ``path`` (plain arrays) are never excluded.

    Example:
    >>> import keras
    >>> dense = keras.layers.Dense(2, name="predictions")
    >>> dense.build((None, 3))
    >>> is_excluded(dense.kernel, DEFAULT_EXCLUDE), is_excluded(dense.bias, DEFAULT_EXCLUDE)
    (True, False)
    """
    path = getattr(variable, "path", None)
    if path is None:
        return False
    return any(re.search(pattern, path) for pattern in exclude)


def check_exclude(exclude, variables) -> tuple[str, ...]:
    """Validate ``exclude`` patterns against ``variables``; return them as a tuple.

    Raises:
        ValueError: if ``exclude`` is not a sequence of valid regular expressions, or if a pattern
            matches no variable path (a typo would otherwise silently clip the classifier).

    Example:
    >>> import keras
    >>> dense = keras.layers.Dense(2, name="predictions")
    >>> dense.build((None, 3))
    >>> check_exclude(["predictions/kernel"], dense.weights)
    ('predictions/kernel',)
    """
    if isinstance(exclude, str) or not isinstance(exclude, Sequence):
        raise ValueError(
            "agc_exclude must be a list or tuple of regular expressions matched against "
            f"variable paths (or None for the default {DEFAULT_EXCLUDE}). Received: "
            f"agc_exclude={exclude!r}"
        )
    patterns = tuple(exclude)
    paths = [v.path for v in variables]
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(
                f"agc_exclude patterns must be strings. Received: {pattern!r} in "
                f"agc_exclude={exclude!r}"
            )
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(
                f"agc_exclude pattern {pattern!r} is not a valid regular expression: {err}"
            ) from err
        if paths and not any(regex.search(p) for p in paths):
            shown = ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
            raise ValueError(
                f"agc_exclude pattern {pattern!r} matches no trainable variable path. "
                f"Patterns are regular expressions searched in `variable.path`, e.g. "
                f"'predictions/kernel'. Available paths: {shown}"
            )
    return patterns


def check_agc_args(clipping, eps) -> None:
    """Raise ValueError unless ``clipping`` is None or > 0 and ``eps`` is > 0.

    Example:
    >>> check_agc_args(0.01, 1e-3)
    """
    if clipping is not None and (
        isinstance(clipping, bool) or not isinstance(clipping, int | float) or not clipping > 0
    ):
        raise ValueError(
            "agc_clipping must be a number > 0 (the AGC threshold lambda, e.g. 0.01), or None "
            f"to turn AGC off. Received: agc_clipping={clipping!r}"
        )
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
        raise ValueError(
            f"agc_eps must be a number > 0 (the floor on parameter norms, e.g. 1e-3). "
            f"Received: agc_eps={eps!r}"
        )


def clip_gradients(
    grads: Sequence,
    variables: Sequence,
    clipping: float = DEFAULT_CLIPPING,
    eps: float = DEFAULT_EPS,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    *,
    norm=unitwise_norm,
    values: Sequence | None = None,
    return_stats: bool = False,
):
    """Adaptive Gradient Clipping of a list of gradients (docs/nfnet_reference.md §13.2): the one
    AGC loop, which `keras_nfnet.agc_model.AGCModel`'s train step runs too.

    Not clipped: None gradients (they pass through), variables matching ``exclude``, and
    variables whose "gradient" is a new value (``overwrite_with_gradient``, e.g. float8 scales).

    Args:
        grads: gradients, one per variable; None entries pass through unchanged.
        variables: the parameters the gradients belong to (Keras variables or tensors), measured
            as they are now (AGC compares the gradient with the **current** parameter).
        clipping: lambda, the maximum ratio of unit gradient norm to unit parameter norm.
        eps: the floor on the parameter norm (so zero-initialized gains/biases can move).
        exclude: regular expressions searched in ``variable.path``; matching variables are not
            clipped. Default: the classifier kernel ``predictions/kernel`` only (§13.3).
        norm: the unit-wise norm (`unitwise_norm` or a fused equivalent).
        values: the parameters to measure when they differ from ``variables`` (a stateless
            step's values).
        return_stats: also return ``n_clipped_units`` (a float32 scalar tensor) and ``n_units``
            (an int, counting the units of the clipped tensors).

    Returns:
        The list of clipped gradients, or ``(clipped, n_clipped_units, n_units)``.

    Example:
    >>> import numpy as np
    >>> out = clip_gradients([None, np.full((3,), 10.0, "float32")],
    ...                      [np.ones(2, "float32"), np.ones(3, "float32")], clipping=0.1)
    >>> out[0] is None, round(float(np.linalg.norm(np.asarray(out[1]))), 4)
    (True, 0.1732)
    >>> _, n, total = clip_gradients([np.ones((2, 3), "float32")], [np.ones((2, 3), "float32")],
    ...                              return_stats=True)
    >>> float(n), total
    (3.0, 3)
    """
    check_agc_args(clipping, eps)
    values = variables if values is None else values
    if not len(grads) == len(variables) == len(values):
        raise ValueError(
            f"grads and variables must have the same length. Received: {len(grads)} grads "
            f"and {len(variables)} variables"
        )
    clipped, n_clipped, n_units = [], ops.zeros((), "float32"), 0
    for g, v, w in zip(grads, variables, values):
        if g is None or is_excluded(v, exclude) or getattr(v, "overwrite_with_gradient", False):
            clipped.append(g)
            continue
        g, n, units = clip_unitwise(g, w, clipping, eps, norm)
        clipped.append(g)
        n_clipped = n_clipped + n
        n_units += units
    return (clipped, n_clipped, n_units) if return_stats else clipped


# `clip_gradients` that also returns ``(n_clipped_units, n_units)``.
clip_gradients_with_stats = functools.partial(clip_gradients, return_stats=True)


def decay_exempt(variable) -> bool:
    """True for the variables coupled L2 weight decay skips (docs/nfnet_reference.md §13.3, §14.1).

    DeepMind's ``gains_biases`` group: a leaf name in {``scale``, ``offset``, ``b``} or containing
    ``gain`` or ``bias``. That covers the WS ``gain`` and every conv bias, ``skip_gain``, the SE and
    classifier Dense biases. Keras normalization layers' ``gamma``/``beta`` are exempt too.

    Example:
    >>> import keras
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> decay_exempt(dense.kernel), decay_exempt(dense.bias)
    (False, True)
    """
    name = variable.path.rsplit("/", 1)[-1] if hasattr(variable, "path") else variable.name
    return name in _EXEMPT_LEAF_NAMES or "gain" in name or "bias" in name
