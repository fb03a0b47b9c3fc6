"""Scaled Weight Standardization (docs/nfnet_reference.md §4)."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_nfnet.checks import check_choice
from keras_nfnet.fast import conv2d, fast_paths_enabled, fused_weight, torch_ops
from keras_nfnet.registry import register

STANDARDIZATIONS = ("deepmind", "timm")

# docs/nfnet_reference.md §4.1: a floor on n * var, not an epsilon added to the variance.
DEEPMIND_FLOOR = 1e-4
# docs/nfnet_reference.md §4.2: timm's `std_conv_eps` for the dm_nfnet_* configs.
TIMM_EPS = 1e-5


def check_standardization(standardization: str) -> str:
    return check_choice("standardization", standardization, STANDARDIZATIONS)


def standardize_kernel(kernel, gain, standardization: str = "deepmind"):
    """Return the scaled, standardized kernel, in float32 (float64 for a float64 kernel).

    Statistics are per output channel (the last axis) over every other axis, i.e. over
    ``(kh, kw, in/groups)`` for an HWIO kernel, with the population variance.

    * ``"deepmind"``: ``gain * (w - mean) / sqrt(max(n * var, 1e-4))`` (§4.1).
    * ``"timm"``: ``gain * (w - mean) / (sqrt(n) * sqrt(var + 1e-5))`` (§4.2).

    ``n`` is the fan-in, the product of every axis but the last.

    Example:
    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=(3, 3, 4, 8)).astype("float32")
    >>> w_hat = np.asarray(standardize_kernel(w, np.ones(8, "float32")))
    >>> bool(np.allclose(w_hat.mean(axis=(0, 1, 2)), 0.0, atol=1e-6))
    True
    >>> bool(np.allclose((w_hat**2).sum(axis=(0, 1, 2)), 1.0, atol=1e-4))
    True
    """
    check_standardization(standardization)
    dtype = "float64" if keras.backend.standardize_dtype(kernel.dtype) == "float64" else "float32"
    if keras.backend.backend() == "torch" and fast_paths_enabled():  # fast/torch_ops.py
        kernel, gain = ops.cast(kernel, dtype), ops.cast(gain, dtype)
        return torch_ops.standardize(kernel, gain, standardization, DEEPMIND_FLOOR, TIMM_EPS)
    shape = tuple(kernel.shape)
    fan_in = math.prod(shape[:-1])
    # The statistics of a (fan_in, out) view: XLA:CPU reduces one leading axis faster than three
    # (bench/FINDINGS.md §4); the result is reshaped back to the kernel's shape.
    kernel = ops.reshape(ops.cast(kernel, dtype), (fan_in, shape[-1]))
    gain = ops.cast(gain, dtype)
    mean = ops.mean(kernel, axis=0, keepdims=True)
    var = ops.var(kernel, axis=0, keepdims=True)
    if standardization == "deepmind":
        scale = ops.rsqrt(ops.maximum(var * fan_in, DEEPMIND_FLOOR))
    else:
        scale = ops.rsqrt(var + TIMM_EPS) / math.sqrt(fan_in)
    return ops.reshape((kernel - mean) * (scale * gain), shape)


@register
class WSConv2D(keras.layers.Conv2D):
    """2-D convolution with Scaled Weight Standardization, a per-channel gain and a bias.

    The kernel variable holds the raw weights; the standardized kernel is recomputed on every
    call (training and inference) so gradients flow through the mean and variance. It is never
    written back. Statistics are computed in float32 under mixed precision: the kernel and gain
    variables are not autocast, and the standardized kernel is cast to the compute dtype.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        strides: int or pair.
        padding: ``"same"`` (TF rule, asymmetric for even inputs and stride 2) or ``"valid"``.
        groups: grouped convolution; ``in_channels`` and ``filters`` must be divisible by it.
        standardization: ``"deepmind"`` (default, the numerics the DeepMind weights use) or
            ``"timm"`` (reproduces timm's ``ScaledStdConv2dSame`` outputs).
        gain_initializer: initializer of the per-channel gain (ones).
        **kwargs: other `keras.layers.Conv2D` arguments. The bias is always present
            (``use_bias=False`` is refused, unlike the reference code which ignores it).

    Example:
    >>> import numpy as np
    >>> conv = WSConv2D(8, 3, strides=2, groups=2)
    >>> tuple(conv(np.ones((1, 9, 9, 4), "float32")).shape)
    (1, 5, 5, 8)
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "same",
        groups: int = 1,
        standardization: str = "deepmind",
        kernel_initializer=None,
        gain_initializer="ones",
        bias_initializer="zeros",
        **kwargs,
    ):
        if not kwargs.pop("use_bias", True):
            raise ValueError(
                "WSConv2D always has a bias (docs/nfnet_reference.md §4.1). Received: "
                "use_bias=False."
            )
        if kernel_initializer is None:
            # docs/nfnet_reference.md §8: untruncated normal, std 1/sqrt(fan_in).
            kernel_initializer = keras.initializers.VarianceScaling(
                1.0, "fan_in", "untruncated_normal"
            )
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            groups=groups,
            use_bias=True,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            **kwargs,
        )
        if self.data_format != "channels_last":
            raise ValueError(
                f"WSConv2D supports data_format='channels_last' only. "
                f"Received: data_format={self.data_format!r}."
            )
        self.standardization = check_standardization(standardization)
        self.gain_initializer = keras.initializers.get(gain_initializer)

    def add_weight(self, *args, **kwargs):
        # Keep the raw kernel in float32 under mixed precision (§4.4).
        if kwargs.get("name") == "kernel":
            kwargs["autocast"] = False
        return super().add_weight(*args, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        self.gain = self.add_weight(
            name="gain",
            shape=(self.filters,),
            initializer=self.gain_initializer,
            trainable=True,
            autocast=False,
            dtype=self.dtype,
        )

    # BaseConv saves only (kernel, bias); the gain must travel with them.
    def _own_variables(self):
        return (self._kernel, self.bias, self.gain)

    def save_own_variables(self, store):
        if self.built:
            for i, variable in enumerate(self._own_variables()):
                store[str(i)] = variable

    def load_own_variables(self, store):
        self._check_load_own_variables(store)
        if self.built:
            for i, variable in enumerate(self._own_variables()):
                variable.assign(store[str(i)])

    def standardized_kernel(self):
        """The kernel the convolution uses, in float32 (for export and inspection)."""
        return standardize_kernel(self.kernel, self.gain, self.standardization)

    def call(self, inputs):
        # As keras' BaseConv.call, with the bias added inside the convolution op so that it
        # fuses with it (oneDNN conv/matmul + bias), and the standardization one fused kernel
        # on TF that the backward pass recomputes rather than keeps (fusion.py).
        ws_conv = fused_weight(self._conv, standardize_kernel, standardization=self.standardization)
        outputs = ws_conv(inputs, self.kernel, self.gain, extra=(self.bias,))
        return outputs if self.activation is None else self.activation(outputs)

    def convolution_op(self, inputs, kernel):
        """The convolution with the standardized ``kernel``, without the bias (unfused)."""
        return self._conv(inputs, standardize_kernel(kernel, self.gain, self.standardization))

    def _conv(self, inputs, w_hat, bias=None):
        return conv2d(
            inputs,
            ops.cast(w_hat, inputs.dtype),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            bias=None if bias is None else ops.cast(bias, inputs.dtype),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            standardization=self.standardization,
            gain_initializer=keras.initializers.serialize(self.gain_initializer),
        )
        return config
