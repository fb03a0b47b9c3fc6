"""Squeeze-and-Excitation (docs/nfnet_reference.md §3.6)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_nfnet.layers.channel_gate import ChannelGate
from keras_nfnet.registry import register


@register
class SqueezeExcite(ChannelGate):
    """``x * gate_multiplier * sigmoid(fc1(relu(fc0(mean_hw(x)))))``.

    The ReLU and the sigmoid are plain (no gamma). NF blocks use ``gate_multiplier=2`` to undo
    the sigmoid's ~0.5 at initialization; the BN baseline uses 1. The two fully connected layers
    are the sublayers ``fc0`` (channels -> hidden) and ``fc1`` (hidden -> channels), i.e. the
    DeepMind modules ``squeeze_excite/~/linear`` and ``squeeze_excite/~/linear_1``. Their kernels
    are initialized like Haiku's Linear: truncated normal with std ``1/sqrt(fan_in)`` (§8).

    Args:
        hidden_units: width of the bottleneck.
        gate_multiplier: constant multiplied into the gate (2 in NF blocks).

    Example:
    >>> import numpy as np
    >>> se = SqueezeExcite(hidden_units=4)
    >>> tuple(se(np.ones((2, 5, 5, 8), "float32")).shape)
    (2, 5, 5, 8)
    """

    def __init__(self, hidden_units: int, gate_multiplier: float = 2.0, **kwargs):
        super().__init__(gate_multiplier, **kwargs)
        if int(hidden_units) < 1:
            raise ValueError(f"hidden_units must be >= 1. Received: hidden_units={hidden_units}.")
        self.hidden_units = int(hidden_units)
        self.fc0 = None
        self.fc1 = None

    def build(self, input_shape):
        channels = input_shape[-1]
        self.fc0 = keras.layers.Dense(
            self.hidden_units,
            kernel_initializer=_haiku_linear_init(channels),
            dtype=self.dtype_policy,
            name="fc0",
        )
        self.fc1 = keras.layers.Dense(
            channels,
            kernel_initializer=_haiku_linear_init(self.hidden_units),
            dtype=self.dtype_policy,
            name="fc1",
        )
        self.fc0.build((None, channels))
        self.fc1.build((None, self.hidden_units))

    def gate_logits(self, pooled):
        return self.fc1(ops.relu(self.fc0(pooled)))

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units)
        return config


def _haiku_linear_init(fan_in: int):
    # docs/nfnet_reference.md §8: truncated at 2 std with no std correction (not VarianceScaling).
    return keras.initializers.TruncatedNormal(stddev=1.0 / math.sqrt(fan_in))
