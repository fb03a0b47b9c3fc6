"""The channel gate shared by the attention layers (Squeeze-Excite, ECA).

Both rescale each channel by ``gate_multiplier * sigmoid(logits)``, where the logits are computed
from the spatially pooled features; only the logits differ, so a subclass defines `gate_logits`.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_nfnet.fast import remember, spatial_mean


class ChannelGate(keras.layers.Layer):
    """``x * gate_multiplier * sigmoid(gate_logits(mean_hw(x)))``; subclasses give the logits.

    Args:
        gate_multiplier: constant multiplied into the gate (2 in NF blocks, to undo the
            sigmoid's ~0.5 at initialization; 1 in the BN baseline).
    """

    def __init__(self, gate_multiplier: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.gate_multiplier = float(gate_multiplier)

    def gate_logits(self, pooled):
        """``(batch, channels)`` logits of the gate from the ``(batch, channels)`` means."""
        raise NotImplementedError(f"{type(self).__name__} must define gate_logits(pooled).")

    def call(self, inputs):
        spatial = tuple(range(1, len(inputs.shape) - 1))
        # The pooling's fast path (keras_nfnet.fast.pooling): oneDNN's on a CPU-only TF machine.
        gate = ops.sigmoid(self.gate_logits(spatial_mean(inputs)))
        gate = ops.reshape(gate, (-1,) + (1,) * len(spatial) + (inputs.shape[-1],))
        scale = self.gate_multiplier * gate
        # Both factors are kept for this product's gradient, so a later layer may recompute it.
        return remember(inputs * scale, ops.multiply, inputs, scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(gate_multiplier=self.gate_multiplier)
        return config
