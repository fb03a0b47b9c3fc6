"""The fully connected linear residual network of the seeds' analytic case (§12.2).

``x_{l+1} = x_l + W_l g(x_l)`` with ``W_l`` a ``width x width`` matrix drawn N(0, 1/width) and
``g`` the identity (unnormalized) or BatchNorm (normalized branch). With unit-variance inputs:

* unnormalized, each branch has the variance of its input, so the skip path doubles:
  ``Var(x_l) = 2**l`` (point ``l``, with point 0 the input);
* with BatchNorm on the branch, each branch has unit variance, so ``Var(x_l) = l + 1``: the
  residual blocks are biased towards the identity (De & Smith, 2020).

Layer names follow the signal-propagation convention: ``block{i}_bn``, ``block{i}_dense``, and
the merge ``block{i}_out``; there is no stem, so point 0 is the input.
"""

from __future__ import annotations

import keras

NORMALIZATIONS = (None, "batch_norm")


def linear_residual_network(
    depth: int = 12,
    width: int = 256,
    normalization: str | None = None,
    seed: int | None = None,
) -> keras.Model:
    """Build the linear residual network ``x_{l+1} = x_l + W_l g(x_l)``.

    Args:
        depth: number of residual blocks.
        width: features per layer.
        normalization: ``None`` (``g`` is the identity) or ``"batch_norm"`` (``g`` is a
            BatchNorm with unit scale and zero offset at initialization).
        seed: seed of the weight draws (block ``i`` uses ``seed + i``).

    Returns:
        A `keras.Model` mapping ``(batch, width)`` to ``(batch, width)``.

    Example:
    >>> model = linear_residual_network(depth=2, width=8, normalization="batch_norm")
    >>> [layer.name for layer in model.layers][1:]
    ['block0_bn', 'block0_dense', 'block0_out', 'block1_bn', 'block1_dense', 'block1_out']
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer. Received: depth={depth!r}.")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer. Received: width={width!r}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"Unknown normalization {normalization!r}. Accepted: None, 'batch_norm'.")
    inputs = keras.Input((width,), name="input")
    x = inputs
    for i in range(depth):
        r = x
        if normalization == "batch_norm":
            r = keras.layers.BatchNormalization(name=f"block{i}_bn")(r)
        r = keras.layers.Dense(
            width,
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(
                1.0, "fan_in", "untruncated_normal", seed=None if seed is None else seed + i
            ),
            name=f"block{i}_dense",
        )(r)
        x = keras.layers.Add(name=f"block{i}_out")([x, r])
    suffix = "bn" if normalization else "plain"
    return keras.Model(inputs, x, name=f"linear_resnet{depth}_{suffix}")
