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
torch, any device         ``torch.nn.functional.conv2d(groups=...)`` (the native grouped kernel
                          of oneDNN / cuDNN, as ``keras.ops.conv``) called on channels-last
                          views: an NHWC tensor seen as NCHW is PyTorch's ``channels_last``
                          memory format, so the activation is never copied. ``keras.ops.conv``
                          instead copies the input to a contiguous NCHW tensor and then back to
                          ``channels_last`` on every call (two copies of every activation) and
                          adds the bias as a separate op (bench/FINDINGS.md §1). ``"same"``
                          padding that is equal on both sides (stride 1, odd kernel) is passed
                          to the convolution; the uneven padding of stride 2 on even inputs is
                          one ``pad``, as in Keras.
========================  ======================================================================

Inside `keras_nfnet.fast.reference_paths` every call takes `reference_conv2d`.

Every path computes the same convolution; tests/test_fast_paths.py checks forward outputs and
gradients of each fast path against ``keras.ops.conv`` on every backend.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_nfnet.fast.paths import fast_paths_enabled, tf_cpu_only
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
    if not fast_paths_enabled():
        return reference_conv2d(inputs, kernel, strides, padding, dilation_rate, bias)
    backend = keras.backend.backend()
    if backend == "torch":
        return _torch_conv2d(inputs, kernel, strides, padding, dilation_rate, bias)
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
        return tf_cpu_only()
    return backend == "jax" and _jax_on_cpu()


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's ``"same"`` padding of one spatial axis, ``(before, after)``: the extra pixel of an
    odd total goes after."""
    extent = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _torch_conv2d(inputs, kernel, strides, padding, dilation_rate, bias=None):
    import torch
    import torch.nn.functional as F

    inputs, kernel = ops.convert_to_tensor(inputs), ops.convert_to_tensor(kernel)
    if _is_pointwise(inputs, kernel, strides) and inputs.device.type == "cpu":
        # One matmul over the pixels reads the HWIO kernel as it is stored; the convolution
        # needs it copied to OHWI first, which costs most where weights are large and images
        # small (bench/FINDINGS.md §1).
        flat = inputs.reshape(-1, inputs.shape[-1])
        weight = kernel.reshape(kernel.shape[2:])
        out = flat @ weight if bias is None else torch.addmm(bias, flat, weight)
        return out.reshape(*inputs.shape[:-1], kernel.shape[-1])
    # NHWC memory viewed as NCHW is the channels_last format: no copy; the kernel (HWIO) becomes
    # OHWI-ordered OIHW, the weight layout oneDNN wants for channels_last (a standardized kernel
    # from fast/torch_ops.py is already stored so, and is not copied again).
    x = inputs.permute(0, 3, 1, 2)
    w = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    groups = inputs.shape[-1] // kernel.shape[2]
    pad: tuple[int, int] | int = 0
    if padding == "same":
        (top, bottom), (left, right) = (
            _same_padding(n, k, s, d)
            for n, k, s, d in zip(inputs.shape[1:3], kernel.shape[:2], strides, dilation_rate)
        )
        if top == bottom and left == right:
            pad = (top, left)
        else:
            x = F.pad(x, (left, right, top, bottom))
    outputs = F.conv2d(x, w, bias, tuple(strides), pad, tuple(dilation_rate), groups)
    return outputs.permute(0, 2, 3, 1)


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
