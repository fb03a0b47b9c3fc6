"""The residual merge of an NF block (docs/nfnet_reference.md §3.2 step 10-11, §3.4)."""

from __future__ import annotations

import keras

from keras_nfnet.fast import recomputing
from keras_nfnet.registry import register


@register
class SkipGain(keras.layers.Layer):
    """``shortcut + alpha * skip_gain * residual`` with a trainable scalar ``skip_gain``.

    ``skip_gain`` is initialized to zero ("SkipInit"), so every block starts as its shortcut.
    ``alpha`` is a fixed float, not a weight.

    Args:
        alpha: the constant residual scale (0.2 in NF networks).
        skip_gain_initializer: initializer of the scalar (zeros).

    Example:
    >>> import numpy as np
    >>> merge = SkipGain(alpha=0.2)
    >>> x = np.ones((1, 2, 2, 3), "float32")
    >>> float(np.asarray(merge([x, x])).max())
    1.0
    """

    def __init__(self, alpha: float = 0.2, skip_gain_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.skip_gain_initializer = keras.initializers.get(skip_gain_initializer)

    def build(self, input_shape):
        self.skip_gain = self.add_weight(
            name="skip_gain", shape=(), initializer=self.skip_gain_initializer, trainable=True
        )

    def call(self, inputs):
        shortcut, residual = inputs
        # The gain's gradient needs ``residual``; recompute it (SE and drop-path products) rather
        # than keep one more activation-sized tensor per block for the backward pass.
        return recomputing(self._scale, residual, self.skip_gain) + shortcut

    def _scale(self, residual, skip_gain):
        # One pass over the activation: the two scalars multiply first.
        return residual * (skip_gain * self.alpha)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha=self.alpha,
            skip_gain_initializer=keras.initializers.serialize(self.skip_gain_initializer),
        )
        return config
