"""PyTorch's symmetric padding rule, for the rows timm trained with it (``padding="symmetric"``).

TF's ``"same"`` pads stride-2 convolutions of even inputs on the bottom/right only; PyTorch
pads ``k // 2`` on every side. Convolutions take that as a `keras.layers.ZeroPadding2D` before a
``"valid"`` convolution; max-pooling pads with ``-inf`` instead (`SymmetricMaxPool2D`), so a
padded position never wins.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_nfnet.registry import register


@register
class SymmetricMaxPool2D(keras.layers.Layer):
    """Max-pooling with ``pool_size // 2`` of ``-inf`` padding on every side (PyTorch's
    ``MaxPool2d(pool_size, strides, padding=pool_size // 2)``).

    Example:
    >>> import numpy as np
    >>> pool = SymmetricMaxPool2D(3, 2)
    >>> tuple(pool(-np.ones((1, 8, 7, 2), "float32")).shape)
    (1, 4, 4, 2)
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides)

    def call(self, inputs):
        pad = self.pool_size // 2
        padded = ops.pad(
            inputs, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=float("-inf")
        )
        return ops.max_pool(padded, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        pad = self.pool_size // 2

        def size(n):
            return None if n is None else (n + 2 * pad - self.pool_size) // self.strides + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides)
        return config
