"""NF-RegNets (Brock, De & Smith, ICLR 2021; nfnet_reference.md §10).

EfficientNet-like RegNet-Y blocks without normalization: ``x + alpha * skip_gain *
f(phi(x) * beta)``, where ``f`` is a WS 1x1 expansion, a grouped 3x3 (group size 8, strided),
Squeeze-Excite on the expanded width (x2 gate) and a WS 1x1 projection, with the SiLU gamma and
the beta schedule of NFNets (§3.3). Variants are rows of `NF_REGNET_VARIANTS`; `nf_regnet_plan`
turns a row into per-block settings, and both the builder and `count_nf_regnet_params` read it.

Layer names (the DeepMind module in brackets): ``stem_conv`` (``initial_conv``),
``stage{s}_block{b}_conv0/1/2`` and ``stage{s}_block0_conv_shortcut`` (``nf_block[_k]/~/...``),
``stage{s}_block{b}_se``, ``stage{s}_block{b}_skip_gain``, ``final_conv``, ``predictions``.
Weight-free layers: ``..._preact`` (``phi(x) * beta``), ``..._shortcut_pool``, ``..._act1``,
``..._act2``, ``..._drop_path``, ``final_act``.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.layers import ScaledActivation, SkipGain, SqueezeExcite, StochDepth, WSConv2D
from keras_nfnet.layers.activations import check_activation
from keras_nfnet.layers.stoch_depth import check_rate
from keras_nfnet.models.common import (
    apply_head,
    check_top,
    check_weights_path,
    image_input,
    load_weights_file,
    model_inputs,
    variant_builder,
)
from keras_nfnet.models.nfnet import BlockPlan
from keras_nfnet.models.spec import _ws_params, beta_schedule, stochdepth_schedule


@dataclasses.dataclass(frozen=True)
class NFRegNetVariant:
    """One row of the NF-RegNet variant table (nfnet_reference.md §10).

    Attributes:
        base_widths: RegNet widths per stage; the stage outputs are ``int(w * width)``.
        depths: blocks per stage.
        train_size / test_size: the resolutions the recipe trains and evaluates at.
        dropout_rate: dropout before the classifier.
        width: width multiplier (0.75).
        expansion: bottleneck expansion of every block but the network's first (which uses 1).
        group_size: channels per group of the 3x3 convs.
        se_ratio: SE hidden width as a fraction of the expanded width.
        alpha: residual scale.
        stochdepth_rate: the maximum stochastic-depth rate R.
        activation: gamma-scaled activation (§5). The DeepMind default ``'swish'`` is a KeyError
            there; its config uses ``'silu'``.
    """

    base_widths: tuple[int, ...]
    depths: tuple[int, ...]
    train_size: int = 192
    test_size: int = 224
    dropout_rate: float = 0.2
    width: float = 0.75
    expansion: float = 2.25
    group_size: int = 8
    se_ratio: float = 0.5
    alpha: float = 0.2
    stochdepth_rate: float = 0.1
    activation: str = "silu"

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(w * self.width) for w in self.base_widths)

    @property
    def final_conv_width(self) -> int:
        # §10: EfficientNet-style head, 1280 channels for a 440-wide last stage.
        return int(1280 * self.widths[-1] // 440)


# nfnet_reference.md §10 (`base.nf_regnet_params`).
NF_REGNET_VARIANTS: dict[str, NFRegNetVariant] = {
    "B0": NFRegNetVariant((48, 104, 208, 440), (1, 3, 6, 6), 192, 224, 0.2),
    "B1": NFRegNetVariant((48, 104, 208, 440), (2, 4, 7, 7), 224, 256, 0.2),
    "B2": NFRegNetVariant((56, 112, 232, 488), (2, 4, 8, 8), 240, 272, 0.3),
    "B3": NFRegNetVariant((56, 128, 248, 528), (2, 5, 9, 9), 288, 320, 0.3),
    "B4": NFRegNetVariant((64, 144, 288, 616), (2, 6, 11, 11), 320, 384, 0.4),
    "B5": NFRegNetVariant((80, 168, 336, 704), (3, 7, 14, 14), 384, 456, 0.4),
    "B6": NFRegNetVariant((88, 184, 376, 792), (3, 8, 16, 16), 448, 528, 0.5),
    "B7": NFRegNetVariant((96, 208, 416, 880), (4, 10, 19, 19), 512, 600, 0.5),
    "B8": NFRegNetVariant((104, 232, 456, 968), (4, 11, 22, 22), 600, 672, 0.5),
}


def get_nf_regnet_variant(variant: str | NFRegNetVariant) -> NFRegNetVariant:
    """Look up a variant by name (``"B0"``…``"B8"``) or pass an `NFRegNetVariant` through."""
    if isinstance(variant, NFRegNetVariant):
        return variant
    key = str(variant).upper()
    if key not in NF_REGNET_VARIANTS:
        raise ValueError(
            f"Unknown NF-RegNet variant {variant!r}. Accepted: {', '.join(NF_REGNET_VARIANTS)}, "
            "or an NFRegNetVariant."
        )
    return NF_REGNET_VARIANTS[key]


def nf_regnet_plan(
    variant: str | NFRegNetVariant, stochdepth_rate: float | None = None
) -> list[BlockPlan]:
    """Per-block plan of an NF-RegNet (§10): the single source of its shapes, beta and rates.

    ``width`` is the expanded width: ``int(in_channels * expansion)`` (expansion 1 for the
    network's first block) rounded down to a multiple of the group size; ``se_hidden`` is
    ``int(width * se_ratio)``. The first block of every stage has stride 2.

    Example:
    >>> plan = nf_regnet_plan("B0")
    >>> [(p.in_channels, p.width, p.groups, p.out_channels) for p in plan[:2]]
    [(36, 32, 4, 36), (36, 80, 10, 78)]
    """
    v = get_nf_regnet_variant(variant)
    rate = v.stochdepth_rate if stochdepth_rate is None else check_rate(stochdepth_rate)
    betas = beta_schedule(v.depths, v.alpha)
    rates = stochdepth_schedule(v.depths, rate)
    plan = []
    in_channels = v.widths[0]  # the stem's width
    k = 0
    for stage, (depth, out_channels) in enumerate(zip(v.depths, v.widths)):
        for index in range(depth):
            stride = 2 if index == 0 else 1
            # §10: expansion 1 for the network's first block (as EfficientNet), computed from
            # the block's *input* width.
            expansion = 1.0 if k == 0 else v.expansion
            groups = max(1, int(in_channels * expansion) // v.group_size)
            width = groups * v.group_size
            plan.append(
                BlockPlan(
                    stage=stage,
                    index=index,
                    k=k,
                    in_channels=in_channels,
                    out_channels=out_channels,
                    width=width,
                    groups=groups,
                    stride=stride,
                    projection=stride > 1 or in_channels != out_channels,
                    beta=betas[k],
                    stochdepth_rate=rates[k],
                    se_hidden=max(1, int(width * v.se_ratio)),
                )
            )
            in_channels = out_channels
            k += 1
    return plan


def count_nf_regnet_params(
    variant: str | NFRegNetVariant, classes: int = 1000, include_top: bool = True
) -> int:
    """Exact parameter count of an NF-RegNet, from `nf_regnet_plan`, without allocating weights.

    Example:
    >>> count_nf_regnet_params("B0")
    8595372
    """
    v = get_nf_regnet_variant(variant)
    total = _ws_params(3, 3, v.widths[0])
    for p in nf_regnet_plan(v):
        total += _ws_params(1, p.in_channels, p.width)
        total += _ws_params(3, p.width, p.width, p.groups)
        total += 2 * p.width * p.se_hidden + p.se_hidden + p.width
        total += _ws_params(1, p.width, p.out_channels)
        total += _ws_params(1, p.in_channels, p.out_channels) if p.projection else 0
        total += 1  # skip_gain
    total += _ws_params(1, v.widths[-1], v.final_conv_width)
    if include_top:
        total += v.final_conv_width * classes + classes
    return total


def _nf_regnet_block(x, p: BlockPlan, alpha: float, activation: str):
    name = p.name

    def conv(y, filters, kernel, suffix, strides=1, groups=1):
        return WSConv2D(filters, kernel, strides=strides, groups=groups, name=f"{name}_{suffix}")(y)

    # §10 step 1: phi(x) * beta (activate first, then scale).
    h = ScaledActivation(activation, p.beta, name=f"{name}_preact")(x)
    if p.stride > 1:  # §10 step 2: shortcut as in NFNets, average pool then WS 1x1
        shortcut = keras.layers.AveragePooling2D(
            2, 2, padding="same", name=f"{name}_shortcut_pool"
        )(h)
        shortcut = conv(shortcut, p.out_channels, 1, "conv_shortcut")
    elif p.projection:
        shortcut = conv(h, p.out_channels, 1, "conv_shortcut")
    else:
        shortcut = x  # the raw, un-activated input
    r = conv(h, p.width, 1, "conv0")
    r = ScaledActivation(activation, name=f"{name}_act1")(r)
    r = conv(r, p.width, 3, "conv1", strides=p.stride, groups=p.groups)
    # §10 step 5: SE on the expanded width, before conv2, with the x2 gate.
    r = SqueezeExcite(p.se_hidden, gate_multiplier=2.0, name=f"{name}_se")(r)
    r = ScaledActivation(activation, name=f"{name}_act2")(r)
    r = conv(r, p.out_channels, 1, "conv2")
    if 0.0 < p.stochdepth_rate < 1.0:
        r = StochDepth(p.stochdepth_rate, name=f"{name}_drop_path")(r)
    return SkipGain(alpha, name=f"{name}_skip_gain")([shortcut, r])


def NFRegNet(
    variant: str | NFRegNetVariant = "B0",
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    dropout_rate: float | None = None,
    stochdepth_rate: float | None = None,
) -> keras.Model:
    """Instantiate an NF-RegNet (nfnet_reference.md §10) with the keras.applications signature.

    Stem: one WS 3x3 stride-2 conv, no activation, no pool. Blocks: as the module docstring;
    the first block of every stage has stride 2 (total /32). Head: WS 1x1 ``final_conv``,
    ``phi``, global mean, dropout, and a zero-initialized classifier (§8).

    Args:
        variant: ``"B0"``…``"B8"`` or an `NFRegNetVariant`.
        include_top: whether to include global pooling, dropout and the classifier.
        weights: ``None`` or the path of a weights file saved from a model built with the same
            arguments (no pretrained NF-RegNet weights are published, §17).
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional ``(height, width, channels)``; default ``(None, None, 3)``.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: number of classes when ``include_top=True``.
        classifier_activation: activation of the top layer (``None`` returns logits).
        name: model name (defaults to ``"nf_regnet_b0"`` etc.).
        dropout_rate: dropout before the classifier (default: the variant's).
        stochdepth_rate: maximum stochastic-depth rate R in [0, 1) (default 0.1).

    Returns:
        A `keras.Model`.

    Example:
    >>> import numpy as np
    >>> model = NFRegNet("B0", input_shape=(32, 32, 3), classes=10)
    >>> model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
    (2, 10)
    """
    v = get_nf_regnet_variant(variant)
    check_activation(v.activation)
    check_top(include_top, pooling, classes, classifier_activation)
    check_weights_path(weights)
    dropout_rate = (
        v.dropout_rate if dropout_rate is None else check_rate(dropout_rate, "dropout_rate")
    )
    plan = nf_regnet_plan(v, stochdepth_rate)

    inputs = image_input(input_tensor, input_shape, weights)
    # §10 stem: no activation, no pool; the first block activates its input.
    x = WSConv2D(v.widths[0], 3, strides=2, name="stem_conv")(inputs)
    for p in plan:
        x = _nf_regnet_block(x, p, v.alpha, v.activation)
    x = WSConv2D(v.final_conv_width, 1, name="final_conv")(x)
    x = ScaledActivation(v.activation, name="final_act")(x)
    outputs = apply_head(
        x,
        include_top,
        pooling,
        classes,
        classifier_activation,
        dropout_rate,
        "zeros",  # §8: NF-RegNet's classifier kernel starts at zero
    )
    if name is None:
        key = next((k for k, row in NF_REGNET_VARIANTS.items() if row == v), "custom")
        name = f"nf_regnet_{key.lower()}"
    # AGCModel: its train_step applies Adaptive Gradient Clipping, as for every builder.
    model = AGCModel(model_inputs(input_tensor, inputs), outputs, name=name)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def _variant_builder(variant: str):
    row = NF_REGNET_VARIANTS[variant]
    doc = (
        f"NF-RegNet-{variant}: depths {row.depths}, stage widths {row.widths}, trained at "
        f"{row.train_size} px and evaluated at {row.test_size} px, "
        f"{count_nf_regnet_params(variant):,} parameters.\n\n"
        "Arguments as `keras_nfnet.NFRegNet` without `variant`."
    )
    return variant_builder(NFRegNet, variant, f"NFRegNet{variant}", doc)


NFRegNetB0 = _variant_builder("B0")
NFRegNetB1 = _variant_builder("B1")
NFRegNetB2 = _variant_builder("B2")
NFRegNetB3 = _variant_builder("B3")
NFRegNetB4 = _variant_builder("B4")
NFRegNetB5 = _variant_builder("B5")
NFRegNetB6 = _variant_builder("B6")
NFRegNetB7 = _variant_builder("B7")
NFRegNetB8 = _variant_builder("B8")
