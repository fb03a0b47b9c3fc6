"""Efficient Channel Attention (Wang et al., 2020), as timm's ``eca_nfnet_*`` and
``nf_ecaresnet*`` rows use it: a 1-D convolution across the pooled channels gates each channel."""

from __future__ import annotations

import keras
from keras import ops

from keras_nfnet.layers.channel_gate import ChannelGate
from keras_nfnet.registry import register


@register
class EfficientChannelAttention(ChannelGate):
    """``x * gate_multiplier * sigmoid(conv1d(mean_hw(x)))``; the conv has no bias.

    The kernel (shape ``(kernel_size,)``) slides over the channel axis of the pooled features
    with zero padding ``(kernel_size - 1) // 2`` on both sides (cross-correlation, as PyTorch's
    ``Conv1d``). It is initialized like PyTorch's ``Conv1d`` (uniform in ``±1/sqrt(k)``).

    Args:
        kernel_size: odd width of the 1-D kernel (`keras_nfnet.architecture.spec.eca_kernel_size`).
        gate_multiplier: constant multiplied into the gate (2 in NF blocks).

    Example:
    >>> import numpy as np
    >>> eca = EfficientChannelAttention(kernel_size=5, gate_multiplier=1.0)
    >>> x = np.ones((1, 4, 4, 16), "float32")
    >>> eca.build(x.shape)
    >>> _ = eca.kernel.assign(np.zeros(5, "float32"))  # every gate is sigmoid(0) = 0.5
    >>> float(np.asarray(eca(x)).max()), eca.count_params()
    (0.5, 5)
    """

    def __init__(self, kernel_size: int = 3, gate_multiplier: float = 2.0, **kwargs):
        super().__init__(gate_multiplier, **kwargs)
        if isinstance(kernel_size, bool) or int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(
                "kernel_size must be a positive odd integer. "
                f"Received: kernel_size={kernel_size!r}."
            )
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        bound = 1.0 / self.kernel_size**0.5
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size,),
            initializer=keras.initializers.RandomUniform(-bound, bound),
            trainable=True,
        )

    def gate_logits(self, pooled):
        # channels as the 1-D "length" axis: (batch, channels, 1) * (k, 1, 1)
        kernel = ops.reshape(ops.cast(self.kernel, pooled.dtype), (self.kernel_size, 1, 1))
        return ops.squeeze(ops.conv(ops.expand_dims(pooled, -1), kernel, padding="same"), -1)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config
