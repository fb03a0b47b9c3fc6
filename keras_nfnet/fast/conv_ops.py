"""The 2-D convolution every WS layer runs, with fast grouped paths per backend and device.

NFNets are mostly grouped convolutions (docs/nfnet_reference.md §1.4: 128 channels per group), and
the
generic grouped-conv paths of two backends are slow on CPU (docs/platform_facts.md, "grouped
convolution speed on CPU"). `conv2d` picks, per backend and device:

========================  ======================================================================
backend / device          path
========================  ======================================================================
TensorFlow, any device    ``tf.nn.conv2d`` with the grouped kernel. Keras 3 instead wraps every
                          grouped conv in an XLA function, assuming TF's CPU kernels reject them
                          (keras/src/backend/tensorflow/nn.py); TF 2.21's oneDNN kernels run them
                          natively and the XLA backward pass is far slower on CPU
                          (bench/FINDINGS.md §1).
                          ``tf.nn.conv2d`` is the op TensorFlow documents for grouped convs on
                          CPU (oneDNN) and GPU (cuDNN); under ``jit_compile``/TPU it lowers to
                          XLA's grouped conv, as Keras' own path does.
TensorFlow, CPU only      1x1, stride-1, ungrouped convolutions (an NFNet block's first and
                          last conv, the shortcut and final convs) run as one ``tf.matmul`` over
                          the pixels, which is faster (bench/FINDINGS.md §1): oneDNN's
                          convolution re-lays-out the weights on every call
                          (they are recomputed by weight standardization, so never cached),
                          which costs most where weights are large and images small (stages 3
                          and 4). Used when TF sees no GPU or TPU; otherwise ``tf.nn.conv2d``.
JAX, CPU                  one dense ``conv_general_dilated`` per group, then a concatenation.
                          XLA:CPU's ``feature_group_count`` convolution is several times slower
                          than the split form, with bit-identical outputs (bench/FINDINGS.md §1).
                          1x1, stride-1, ungrouped convolutions run as one matmul over the
                          pixels, as on TF: XLA:CPU's dot runs them faster than its 1x1
                          convolution (bench/FINDINGS.md §1).
JAX, GPU / TPU            ``keras.ops.conv`` (``feature_group_count``): the form XLA's GPU
                          (cuDNN grouped conv) and TPU backends document and optimize. Not
                          measured here (no accelerator).
torch, any device         ``keras.ops.conv`` (``torch.nn.functional.conv2d(groups=...)``, the
                          native grouped kernel of oneDNN / cuDNN).
========================  ======================================================================

Every path computes the same convolution; tests/test_fast_paths.py checks forward outputs and
gradients of each fast path against ``keras.ops.conv`` on every backend.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from keras_nfnet.registry import register


def conv2d(inputs, kernel, strides=(1, 1), padding="same", dilation_rate=(1, 1), bias=None):
    """NHWC 2-D convolution; ``kernel`` is HWIO with ``I = in_channels / groups``.

    The number of groups is ``in_channels // kernel.shape[2]``, as in ``keras.ops.conv``.
    ``bias`` (per output channel), if given, is added in a form TF fuses into the convolution.

    Example:
    >>> import numpy as np
    >>> x = np.ones((1, 5, 5, 4), "float32")
    >>> w = np.ones((3, 3, 2, 6), "float32")  # 2 groups
    >>> y = np.asarray(conv2d(x, w))
    >>> y.shape, float(y[0, 2, 2, 0])
    ((1, 5, 5, 6), 18.0)
    """
    backend = keras.backend.backend()
    if _is_pointwise(inputs, kernel, strides) and _pointwise_as_matmul(backend):
        return _pointwise_matmul(inputs, kernel, bias)
    if backend == "tensorflow":
        import tensorflow as tf

        outputs = tf.nn.conv2d(
            inputs,
            kernel,
            strides=(1, *strides, 1),
            padding=padding.upper(),
            dilations=(1, *dilation_rate, 1),
        )
        return outputs if bias is None else tf.nn.bias_add(outputs, bias)
    groups = inputs.shape[-1] // kernel.shape[2]
    if backend == "jax" and groups > 1 and _jax_on_cpu():
        outputs = _split_grouped_conv(inputs, kernel, groups, strides, padding, dilation_rate)
    else:
        outputs = _keras_conv(inputs, kernel, strides, padding, dilation_rate)
    return outputs if bias is None else outputs + bias


def reference_conv2d(
    inputs, kernel, strides=(1, 1), padding="same", dilation_rate=(1, 1), bias=None
):
    """Keras' own ``ops.conv`` (plus ``bias``): what every fast path of `conv2d` must reproduce."""
    outputs = _keras_conv(inputs, kernel, strides, padding, dilation_rate)
    return outputs if bias is None else outputs + bias


def _keras_conv(inputs, kernel, strides, padding, dilation_rate):
    return ops.conv(
        inputs,
        kernel,
        strides=strides,
        padding=padding,
        data_format="channels_last",
        dilation_rate=dilation_rate,
    )


def _is_pointwise(inputs, kernel, strides) -> bool:
    return (
        tuple(kernel.shape[:2]) == (1, 1)
        and tuple(strides) == (1, 1)
        and kernel.shape[2] == inputs.shape[-1]  # ungrouped
    )


def _pointwise_as_matmul(backend: str) -> bool:
    """Whether 1x1 convolutions run as a matmul: TF and JAX on CPU (see the module docstring)."""
    if backend == "tensorflow":
        return _tf_cpu_only()
    return backend == "jax" and _jax_on_cpu()


@functools.cache  # TF's device list is fixed once it is initialized; asked for every layer
def _tf_cpu_only() -> bool:
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU")


def _pointwise_matmul(inputs, kernel, bias=None):
    # A 1x1, stride-1, ungrouped convolution is a matmul over the pixels (padding and dilation
    # do not matter for a 1x1 kernel); the kernel's in-channels equal the input's, so no groups.
    # The bias is added before the reshape; on TF as a BiasAdd, which oneDNN fuses into the
    # matmul.
    flat = ops.reshape(inputs, (-1, inputs.shape[-1]))
    out = ops.matmul(flat, ops.reshape(kernel, kernel.shape[2:]))
    if bias is not None:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            out = tf.nn.bias_add(out, bias)
        else:
            out = out + bias
    return ops.reshape(out, (*ops.shape(inputs)[:-1], kernel.shape[-1]))


def _jax_on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


def _split_grouped_conv(inputs, kernel, groups, strides, padding, dilation_rate):
    # Group g reads input channels [g*I, (g+1)*I) and writes output channels
    # [g*O/groups, (g+1)*O/groups): exactly feature_group_count's channel assignment.
    xs = ops.split(inputs, groups, axis=-1)
    ws = ops.split(kernel, groups, axis=-1)
    return ops.concatenate(
        [_keras_conv(x, w, strides, padding, dilation_rate) for x, w in zip(xs, ws)], axis=-1
    )


@register
class GroupedConv2D(keras.layers.Conv2D):
    """A ``keras.layers.Conv2D`` whose convolution runs `conv2d`'s fast path per backend.

    Same arguments, weights and outputs as ``keras.layers.Conv2D``; only the op differs. On the
    TF backend Keras wraps a grouped convolution in an XLA function, which is slower on CPU and
    which ``tf2onnx`` cannot convert ("StatefulPartitionedCall is not supported"); this layer
    emits TF's native grouped ``Conv2D`` op instead. `keras_nfnet.export` uses it for the grouped
    convolutions of folded models (ungrouped ones become plain ``Conv2D``).

    Example:
    >>> import numpy as np
    >>> conv = GroupedConv2D(6, 3, groups=2, padding="same")
    >>> tuple(conv(np.ones((1, 5, 5, 4), "float32")).shape)
    (1, 5, 5, 6)
    """

    def convolution_op(self, inputs, kernel):
        return conv2d(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )
