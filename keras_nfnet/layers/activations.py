"""Gamma-scaled activations (docs/nfnet_reference.md §5).

Every NF activation is ``g(x) * gamma``, where gamma is an empirical estimate of
``1 / std(g(z))`` for ``z ~ N(0, 1)``. The table below is copied verbatim from the reference
code: recomputing the constants (ReLU's analytic value is 1.71286) breaks weight compatibility.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import ops

from keras_nfnet.fast import fused
from keras_nfnet.registry import register

# docs/nfnet_reference.md §5: DeepMind's `base.nonlinearities`, copied verbatim. "identity" has
# none.
GAMMAS: dict[str, float] = {
    "celu": 1.270926833152771,
    "elu": 1.2716004848480225,
    "gelu": 1.7015043497085571,
    "glu": 1.8484294414520264,
    "leaky_relu": 1.70590341091156,
    "log_sigmoid": 1.9193484783172607,
    "log_softmax": 1.0002083778381348,
    "relu": 1.7139588594436646,
    "relu6": 1.7131484746932983,
    "selu": 1.0008515119552612,
    "sigmoid": 4.803835391998291,
    "silu": 1.7881293296813965,
    "soft_sign": 2.338853120803833,
    "softplus": 1.9203323125839233,
    "tanh": 1.5939117670059204,
}


# The raw nonlinearities. GELU is handled separately because its form (tanh or erf) is part of
# the numerics; leaky_relu uses the reference slope of 0.01 (Keras' default is 0.2).
_NONLINEARITIES: dict[str, Callable] = {
    "celu": ops.celu,
    "elu": ops.elu,
    "glu": ops.glu,
    "leaky_relu": lambda x: ops.leaky_relu(x, negative_slope=0.01),
    "log_sigmoid": ops.log_sigmoid,
    "log_softmax": ops.log_softmax,
    "relu": ops.relu,
    "relu6": ops.relu6,
    "selu": ops.selu,
    "sigmoid": ops.sigmoid,
    "silu": ops.silu,
    "soft_sign": ops.softsign,
    "softplus": ops.softplus,
    "tanh": ops.tanh,
}

ACTIVATIONS: tuple[str, ...] = ("identity", *sorted(GAMMAS))

# tanh GELU, ``0.5 x (1 + tanh(z))`` with ``z = sqrt(2/pi) (x + 0.044715 x^3)`` written as
# ``z = x (c1 + c3 x^2)``: fused under XLA on TF (the default) this form runs faster than the
# equal ``x * sigmoid(2 z)`` (bench/FINDINGS.md §3).
_GELU_C1 = math.sqrt(2.0 / math.pi)
_GELU_C3 = _GELU_C1 * 0.044715


def _gelu_tanh(x):
    if keras.backend.backend() == "torch":  # torch has a fused tanh-GELU kernel
        return ops.gelu(x, approximate=True)
    return 0.5 * x * (1.0 + ops.tanh(x * (_GELU_C1 + _GELU_C3 * ops.square(x))))


def check_activation(activation: str) -> str:
    """Return ``activation`` if it names a gamma-scaled activation, else raise ``ValueError``."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {activation!r}. Accepted: {', '.join(ACTIVATIONS)} "
            "('swish' is spelled 'silu')."
        )
    return activation


def scaled_activation(
    x,
    activation: str = "gelu",
    gelu_approximate: bool = True,
    scale: float = 1.0,
    fuse: bool = True,
):
    """Apply ``g(x) * gamma * scale`` for a named activation of §5 (one multiply).

    On the TF backend the chain runs as one fused kernel (`keras_nfnet.fast.fusion`).

    Args:
        x: tensor.
        activation: a key of `GAMMAS` or ``"identity"``.
        gelu_approximate: GELU form. ``True`` is the tanh approximation the DeepMind weights were
            trained with; ``False`` is the exact erf form timm's ``dm_nfnet_*`` models run.
        scale: a constant folded into gamma (an NF block's beta); ignored for ``"identity"``.
        fuse: run as one fused kernel on the TF backend (`keras_nfnet.fast.fusion`); ``False``
            emits plain TF ops (what exporters such as tf2onnx need).

    Example:
    >>> import numpy as np
    >>> y = scaled_activation(np.array([1.0], "float32"), "relu")
    >>> round(float(y[0]), 6)
    1.713959
    """
    check_activation(activation)
    if activation == "identity":
        return x if scale == 1.0 else x * scale
    gain = GAMMAS[activation] * scale
    if not fuse:
        return _scaled(x, activation, gelu_approximate, gain)
    return fused(_scaled, activation=activation, approximate=gelu_approximate, gain=gain)(x)


def _scaled(x, activation: str, approximate: bool, gain: float):
    if activation == "gelu":
        y = _gelu_tanh(x) if approximate else ops.gelu(x, approximate=False)
    else:
        y = _NONLINEARITIES[activation](x)
    return y * gain


@register
class ScaledActivation(keras.layers.Layer):
    """Gamma-scaled activation, optionally multiplied by a constant ``scale``.

    In an NF block the pre-activation is ``phi(x) * beta`` (docs/nfnet_reference.md §3.2: activate
    first, then multiply by beta); ``scale`` carries beta, a fixed float, not a weight.

    Args:
        activation: a key of `GAMMAS` or ``"identity"``.
        scale: constant multiplied after the activation (the block's beta), default 1.
        gelu_approximate: ``True`` for tanh GELU (DeepMind numerics), ``False`` for exact GELU
            (timm numerics).
        fuse: ``True`` (default) runs the activation as one fused kernel with a recomputing
            gradient on the TF backend; `keras_nfnet.export.fold_weight_standardization` sets
            ``False`` so exported graphs hold plain ops.

    Example:
    >>> import numpy as np
    >>> layer = ScaledActivation("gelu", scale=0.5)
    >>> tuple(layer(np.zeros((1, 2, 2, 3), "float32")).shape)
    (1, 2, 2, 3)
    """

    def __init__(
        self,
        activation: str = "gelu",
        scale: float = 1.0,
        gelu_approximate: bool = True,
        fuse: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)
        self.scale = float(scale)
        self.gelu_approximate = bool(gelu_approximate)
        self.fuse = bool(fuse)

    def call(self, inputs):
        return scaled_activation(
            inputs, self.activation, self.gelu_approximate, self.scale, self.fuse
        )

    def compute_output_shape(self, input_shape):
        if self.activation == "glu":
            return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] // 2)
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=self.activation,
            scale=self.scale,
            gelu_approximate=self.gelu_approximate,
            fuse=self.fuse,
        )
        return config
