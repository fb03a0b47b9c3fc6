"""The spatial mean of the attention gates (Squeeze-Excite, ECA), with a fast path per backend.

Every block of an NF model with attention pools its activation to one value per channel. On a
CPU-only TensorFlow machine oneDNN's average pooling over the whole image ran the pooling of
F0's and NF-RegNet-B1's squeeze-excite gates, value and gradient, 9–14 % faster than
``tf.reduce_mean`` over the height and width axes, and ECA-L0's level with it
(bench/FINDINGS.md §5), so `spatial_mean` runs that pooling there:

========================  ======================================================================
backend / device          path
========================  ======================================================================
TensorFlow, CPU only      ``tf.nn.avg_pool2d`` with the whole image as its window (oneDNN), for
                          4-D float32 inputs whose height and width are known when traced.
everywhere else           ``keras.ops.mean`` over the spatial axes (`reference_spatial_mean`).
========================  ======================================================================

Both compute the same mean (to float rounding); tests/test_fast_paths.py checks values and
gradients.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_nfnet.fast.paths import fast_paths_enabled, tf_cpu_only


def spatial_mean(inputs):
    """The mean over every axis but the first and the last: ``(batch, ..., C) -> (batch, C)``.

    Example:
    >>> import numpy as np
    >>> x = np.arange(2 * 3 * 4 * 2, dtype="float32").reshape(2, 3, 4, 2)
    >>> bool(np.allclose(np.asarray(spatial_mean(x)), x.mean(axis=(1, 2))))
    True
    """
    if (
        fast_paths_enabled()
        and keras.backend.backend() == "tensorflow"
        and len(inputs.shape) == 4
        and None not in tuple(inputs.shape[1:3])
        and keras.backend.standardize_dtype(inputs.dtype) == "float32"
        and tf_cpu_only()
    ):
        import tensorflow as tf

        window = tuple(inputs.shape[1:3])
        pooled = tf.nn.avg_pool2d(inputs, window, strides=1, padding="VALID")
        return tf.reshape(pooled, (-1, inputs.shape[-1]))
    return reference_spatial_mean(inputs)


def reference_spatial_mean(inputs):
    """``keras.ops.mean`` over the spatial axes: what `spatial_mean` must reproduce."""
    return ops.mean(inputs, axis=tuple(range(1, len(inputs.shape) - 1)))
