"""Baselines for NF-ResNets: pre-activation ResNetV2 with BatchNorm, the same network without
normalization, and SkipInit (docs/nfnet_reference.md §11.1-§11.2).

They share the NF-ResNet variant rows (depths and the width multiplier, §11) and the layer
names of `keras_nfnet.models.nf_resnet`. Activations are plain ReLU (no gamma). Each block ends
in a merge of ``[shortcut, residual]``: an ``Add`` named ``stage{s}_block{b}_out`` (ResNetV2) or
a `SkipGain` with ``alpha = 1`` (SkipInit); `keras_nfnet.analysis.signal_propagation` finds the
blocks by that convention.

Initializer: the DeepMind baselines use Haiku's default conv initializer, variance ``1/fan_in``
(``VarianceScaling(1.0, "fan_in", "truncated_normal")``). The default here is He
(``"he_normal"``, variance ``2/fan_in``), the setting of the ResNetV2 paper and of De & Smith's
signal-propagation experiments, under which each BN residual branch starts with unit variance
(§12.2). Pass ``kernel_initializer`` to choose.
"""

from __future__ import annotations

import keras

from keras_nfnet.checks import check_choice
from keras_nfnet.layers import SkipGain, SqueezeExcite, StochDepth
from keras_nfnet.layers.stoch_depth import check_rate
from keras_nfnet.models.common import assemble
from keras_nfnet.models.nf_resnet import (
    NF_RESNET_VARIANTS,
    NFResNetVariant,
    get_nf_resnet_variant,
    nf_resnet_plan,
)
from keras_nfnet.models.nfnet import BlockPlan

NORMALIZATIONS = ("batch_norm", "none")

# §11.1: Haiku BatchNorm, decay 0.9 and eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _check_normalization(normalization: str) -> str:
    return check_choice("normalization", normalization, NORMALIZATIONS)


def _variant_name(v: NFResNetVariant) -> str:
    return next((k for k, row in NF_RESNET_VARIANTS.items() if row == v), "custom")


class _Convs:
    """Plain convs with the chosen initializer, named like the NF-ResNet's."""

    def __init__(self, kernel_initializer, use_bias: bool):
        self.kernel_initializer = keras.initializers.serialize(
            keras.initializers.get(kernel_initializer)
        )
        self.use_bias = use_bias

    def __call__(self, y, filters, kernel, name, strides=1, use_bias=None):
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            use_bias=self.use_bias if use_bias is None else use_bias,
            # A fresh initializer per layer: an unseeded Keras 3 initializer instance draws its
            # seed once, so sharing one would give every same-shaped conv the same kernel.
            kernel_initializer=keras.initializers.deserialize(self.kernel_initializer),
            name=name,
        )(y)


def _stem(inputs, v: NFResNetVariant, conv: _Convs):
    # §11: 7x7 stride-2 conv (no bias), 3x3 stride-2 max-pool; v2 has no BN or act here.
    x = conv(inputs, v.stem_width, 7, "stem_conv", strides=2, use_bias=False)
    return keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)


def _norm_act(x, normalization: str, name: str):
    if normalization == "batch_norm":
        x = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn"
        )(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _resnet_v2_block(x, p: BlockPlan, normalization: str, conv: _Convs):
    name = p.name
    # §11.1 v2 block: a = act(BN0(x)); the projecting shortcut is a strided 1x1 conv of a.
    a = _norm_act(x, normalization, f"{name}_preact")
    shortcut = conv(a, p.out_channels, 1, f"{name}_conv_shortcut", p.stride) if p.projection else x
    r = conv(a, p.width, 1, f"{name}_conv0")
    r = _norm_act(r, normalization, f"{name}_1")
    r = conv(r, p.width, 3, f"{name}_conv1", p.stride)
    r = _norm_act(r, normalization, f"{name}_2")
    r = conv(r, p.out_channels, 1, f"{name}_conv2")
    if p.se_hidden:  # §11.1: SE without the x2 of the NF blocks
        r = SqueezeExcite(p.se_hidden, gate_multiplier=1.0, name=f"{name}_se")(r)
    if 0.0 < p.stochdepth_rate < 1.0:
        r = StochDepth(p.stochdepth_rate, name=f"{name}_drop_path")(r)
    return keras.layers.Add(name=f"{name}_out")([shortcut, r])


def ResNetV2(
    variant: str | int | NFResNetVariant = "50",
    normalization: str = "batch_norm",
    use_se: bool = False,
    kernel_initializer="he_normal",
    dropout_rate: float = 0.0,
    stochdepth_rate: float = 0.0,
    **kwargs,
) -> keras.Model:
    """Pre-activation bottleneck ResNet (v2), with BatchNorm or without normalization (§11.1).

    Block: ``a = relu(BN0(x))``; shortcut = strided 1x1 conv of ``a`` on the first block of each
    stage, else ``x``; residual ``conv0 -> BN -> relu -> conv1 (3x3, strided) -> BN -> relu ->
    conv2`` (optional SE, gate x1); output ``Add([shortcut, residual])``. Convs have no bias
    with BatchNorm; with ``normalization="none"`` every BN is removed and the block convs get a
    zero-initialized bias in place of BN's offset. Head: ``relu(final_bn(x))``, global mean,
    dropout, zero-initialized classifier.

    Args:
        variant: depth (``26``, ``50``, ``101``, ``152``, ``200``, ...) or an `NFResNetVariant`.
        **kwargs: include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: as keras.applications (`models.common.assemble`).
        dropout_rate: dropout before the classifier (0, the DeepMind default).
        stochdepth_rate: maximum stochastic-depth rate (0: the DeepMind BN ResNet has none).
        normalization: ``"batch_norm"`` (momentum 0.9, eps 1e-5) or ``"none"``.
        use_se: add Squeeze-Excite (hidden ``out / 4``) after ``conv2``.
        kernel_initializer: conv initializer (``"he_normal"``; see the module docstring).

    Returns:
        A `keras.Model` named ``resnet50v2_bn`` / ``resnet50v2_plain`` etc. by default.

    Example:
    >>> import dataclasses
    >>> tiny = dataclasses.replace(NF_RESNET_VARIANTS["26"], width=1, depths=(1, 1, 1, 1))
    >>> bn = ResNetV2(tiny, input_shape=(32, 32, 3), classes=10)
    >>> plain = ResNetV2(tiny, normalization="none", include_top=False, pooling="avg")
    >>> bn.name, plain.name, plain.output.shape
    ('resnetcustomv2_bn', 'resnetcustomv2_plain', (None, 512))
    """
    v = get_nf_resnet_variant(variant)
    _check_normalization(normalization)
    plan = nf_resnet_plan(v, check_rate(stochdepth_rate), use_se=use_se)
    conv = _Convs(kernel_initializer, use_bias=normalization == "none")

    def body(inputs):
        x = _stem(inputs, v, conv)
        for p in plan:
            x = _resnet_v2_block(x, p, normalization, conv)
        return _norm_act(x, normalization, "final")

    suffix = "bn" if normalization == "batch_norm" else "plain"
    default = f"resnet{_variant_name(v)}v2_{suffix}" + ("_se" if use_se else "")
    return assemble(body, default_name=default, dropout_rate=dropout_rate, **kwargs)


def _skipinit_block(x, p: BlockPlan, conv: _Convs):
    name = p.name
    # §11.2: a = act(x); no normalization, no beta or alpha; convs with bias.
    a = keras.layers.ReLU(name=f"{name}_preact")(x)
    shortcut = conv(a, p.out_channels, 1, f"{name}_conv_shortcut", p.stride) if p.projection else x
    r = conv(a, p.width, 1, f"{name}_conv0")
    r = keras.layers.ReLU(name=f"{name}_act1")(r)
    r = conv(r, p.width, 3, f"{name}_conv1", p.stride)
    r = keras.layers.ReLU(name=f"{name}_act2")(r)
    r = conv(r, p.out_channels, 1, f"{name}_conv2")
    if 0.0 < p.stochdepth_rate < 1.0:
        r = StochDepth(p.stochdepth_rate, name=f"{name}_drop_path")(r)
    # shortcut + skip_gain * r, skip_gain initialized to 0 (SkipInit).
    return SkipGain(1.0, name=f"{name}_skip_gain")([shortcut, r])


def SkipInitResNet(
    variant: str | int | NFResNetVariant = "50",
    kernel_initializer="he_normal",
    dropout_rate: float = 0.0,
    stochdepth_rate: float = 0.1,
    **kwargs,
) -> keras.Model:
    """SkipInit ResNet (De & Smith, 2020; docs/nfnet_reference.md §11.2).

    An unnormalized pre-activation bottleneck ResNet whose residual branches are multiplied by
    a scalar ``skip_gain`` initialized to zero, so every block starts as its shortcut. Block:
    ``a = relu(x)``; shortcut = strided 1x1 conv of ``a`` when projecting, else ``x``; residual
    ``conv0 -> relu -> conv1 (3x3, strided) -> relu -> conv2``, stochastic depth, ``skip_gain``.
    Block convs have a bias, the stem conv none. Head: ``mean(relu(x))``, dropout,
    zero-initialized classifier.

    Args:
        variant: depth or an `NFResNetVariant` (§11 shares the NF-ResNet rows).
        **kwargs: include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: as keras.applications (`models.common.assemble`).
        dropout_rate: dropout before the classifier (pass it explicitly in DeepMind's code).
        stochdepth_rate: maximum stochastic-depth rate (0.1).
        kernel_initializer: conv initializer (``"he_normal"``; see the module docstring).

    Returns:
        A `keras.Model` named ``skipinit_resnet50`` etc. by default.

    Example:
    >>> import numpy as np
    >>> model = SkipInitResNet(26, input_shape=(64, 48, 3), classes=5, classifier_activation=None)
    >>> float(np.abs(model.predict(np.ones((1, 64, 48, 3)), verbose=0)).max())  # zero classifier
    0.0
    """
    v = get_nf_resnet_variant(variant)
    plan = nf_resnet_plan(v, check_rate(stochdepth_rate))
    conv = _Convs(kernel_initializer, use_bias=True)

    def body(inputs):
        x = _stem(inputs, v, conv)
        for p in plan:
            x = _skipinit_block(x, p, conv)
        return keras.layers.ReLU(name="final_relu")(x)

    default = f"skipinit_resnet{_variant_name(v)}"
    return assemble(body, default_name=default, dropout_rate=dropout_rate, **kwargs)
