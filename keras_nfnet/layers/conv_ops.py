"""The 2-D convolution every WS layer runs, with a fast grouped path on TensorFlow.

Keras 3's TensorFlow backend compiles every grouped convolution with XLA because it assumes TF's
CPU kernels reject them (keras/src/backend/tensorflow/nn.py). TF 2.21's oneDNN kernels run them
natively, and the XLA-compiled backward pass measured ~25x slower on CPU (platform_facts.md,
"grouped convolution speed on CPU"). NFNets are mostly grouped convolutions, so on the TF backend
we call ``tf.nn.conv2d`` directly: the op TensorFlow documents for this, which runs on CPU
(oneDNN), GPU (cuDNN) and, under ``jit_compile``/TPU, XLA. Other backends use ``keras.ops.conv``.
"""

from __future__ import annotations

import keras
from keras import ops


def conv2d(inputs, kernel, strides=(1, 1), padding="same", dilation_rate=(1, 1)):
    """NHWC 2-D convolution; ``kernel`` is HWIO with ``I = in_channels / groups``."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=(1, *strides, 1),
            padding=padding.upper(),
            dilations=(1, *dilation_rate, 1),
        )
    return ops.conv(
        inputs,
        kernel,
        strides=strides,
        padding=padding,
        data_format="channels_last",
        dilation_rate=dilation_rate,
    )
