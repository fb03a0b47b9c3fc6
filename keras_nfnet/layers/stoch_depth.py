"""Stochastic depth as the reference code implements it (docs/nfnet_reference.md §3.5)."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from keras_nfnet.fast import remember
from keras_nfnet.registry import register


def check_rate(rate: float, name: str = "stochdepth_rate") -> float:
    """Return ``rate`` as a float if it is a number in [0, 1), else raise ``ValueError``.

    Example:
    >>> check_rate(0.25)
    0.25
    >>> check_rate("x", "dropout_rate")
    Traceback (most recent call last):
    ...
    ValueError: dropout_rate must be a number in [0, 1). Received: dropout_rate='x'.
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1). Received: {name}={rate!r}.")
    return float(rate)


@register
class StochDepth(keras.layers.Layer):
    """Drop the residual branch per example during training, without rescaling.

    In training the output is ``x * floor(1 - rate + U[0, 1))`` with one draw per example (the
    mask has shape ``(batch, 1, ..., 1)``). There is **no** ``1 / keep`` rescaling, unlike
    timm's ``DropPath`` or Keras' ``Dropout``. At inference it is the identity.

    Args:
        rate: drop probability in [0, 1).
        seed: optional integer seed.

    Example:
    >>> import numpy as np
    >>> layer = StochDepth(0.5, seed=1)
    >>> y = np.asarray(layer(np.ones((64, 2, 2, 3), "float32"), training=True))
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 1.0]
    >>> bool((np.asarray(layer(np.ones((4, 2, 2, 3), "float32"))) == 1).all())
    True
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate, "rate")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        batch = ops.shape(inputs)[0]
        shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        uniform = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        keep = ops.floor(1.0 - self.rate + uniform)
        # The gradient keeps ``keep`` alone; ``inputs`` may be recomputable (`remember`).
        return remember(inputs * keep, ops.multiply, inputs, keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
