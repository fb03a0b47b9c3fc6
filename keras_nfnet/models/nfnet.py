"""NFNet-F0…F7 and F0+…F7+ (nfnet_reference.md §1-§8).

Variants are rows of `NFNET_VARIANTS`. `nfnet_plan` turns a row into per-block settings (widths,
groups, strides, beta, stochastic-depth rates); the builder and `count_nfnet_params` both read
that plan, so parameter counts of variants too large to build in a test come from the same shape
logic the builder uses.

Layer names follow ``checkpoints.md`` §3.1, one Keras layer per checkpoint module:

========================================  ==========================================
Keras layer                               DeepMind module (timm key prefix)
========================================  ==========================================
``stem_conv{j}``, j = 0..3                ``NFNet/~/stem_conv{j}`` (``stem.conv{j+1}``)
``stage{s}_block{b}_conv0/1/1b/2``        ``<blk>/~/conv0/1/1b/2`` (``conv1/2/2b/3``)
``stage{s}_block0_conv_shortcut``         ``<blk>/~/conv_shortcut`` (``downsample.conv``)
``stage{s}_block{b}_se`` (``fc0``/``fc1``)  ``<blk>/~/squeeze_excite/~/linear``/``linear_1``
``stage{s}_block{b}_skip_gain``           ``<blk>`` ``skip_gain`` (``skipinit_gain``)
``final_conv``                            ``NFNet/~/final_conv`` (``final_conv``)
``predictions``                           ``NFNet/~/linear`` (``head.fc``)
========================================  ==========================================

``<blk>`` is ``NFNet/~/nf_block`` for the first block and ``NFNet/~/nf_block_{k}`` after, with
``k`` the global block index. Weight-free layers: ``stem_act{j}``, ``stage{s}_block{b}_preact``
(phi(x) * beta), ``..._act1``, ``..._act1b``, ``..._act2``, ``..._shortcut_pool``,
``..._drop_path``, ``final_act``, ``avg_pool``, ``top_dropout``.
"""

from __future__ import annotations

import dataclasses
import itertools

import keras

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.layers import ScaledActivation, SkipGain, SqueezeExcite, StochDepth, WSConv2D
from keras_nfnet.layers.activations import check_activation
from keras_nfnet.layers.stoch_depth import check_rate
from keras_nfnet.layers.ws_conv import check_standardization
from keras_nfnet.models.common import (
    apply_head,
    check_top,
    check_weights_path,
    image_input,
    load_weights_file,
    model_inputs,
    variant_builder,
)
from keras_nfnet.models.spec import _ws_params, beta_schedule, stochdepth_schedule

NUMERICS = ("deepmind", "timm")


@dataclasses.dataclass(frozen=True)
class NFNetVariant:
    """One row of the variant table (nfnet_reference.md §1.1-§1.4).

    Attributes:
        depths: blocks per stage.
        widths: output channels per stage.
        train_size / test_size: the resolutions the recipe trains and evaluates at.
        dropout_rate: dropout before the classifier.
        randaugment: RandAugment level, ``100 * layers + magnitude``.
        stochdepth_rate: the maximum stochastic-depth rate R (0.25 in the ImageNet recipe the
            published weights were trained with).
        stem_widths: the first three stem convs; the fourth has ``widths[0] // 2`` channels.
        group_width: channels per group of the grouped 3x3 convs.
        bottleneck_ratio: bottleneck width as a fraction of the block output width.
        se_ratio: SE hidden width as a fraction of the block output width.
        final_conv_mult: final 1x1 conv width as a multiple of the last stage width.
        alpha: residual scale.
        activation: gamma-scaled activation (§5).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...] = (256, 512, 1536, 1536)
    train_size: int = 192
    test_size: int = 256
    dropout_rate: float = 0.2
    randaugment: int = 405
    stochdepth_rate: float = 0.25
    stem_widths: tuple[int, int, int] = (16, 32, 64)
    group_width: int = 128
    bottleneck_ratio: float = 0.5
    se_ratio: float = 0.5
    final_conv_mult: int = 2
    alpha: float = 0.2
    activation: str = "gelu"

    @property
    def strides(self) -> tuple[int, ...]:
        return (1,) + (2,) * (len(self.depths) - 1)


PLUS_WIDTHS = (384, 768, 2048, 2048)

# nfnet_reference.md §1.2. F_k has depths [1, 2, 6, 3] x (k + 1).
NFNET_VARIANTS: dict[str, NFNetVariant] = {
    "F0": NFNetVariant(
        (1, 2, 6, 3), train_size=192, test_size=256, dropout_rate=0.2, randaugment=405
    ),
    "F1": NFNetVariant(
        (2, 4, 12, 6), train_size=224, test_size=320, dropout_rate=0.3, randaugment=410
    ),
    "F2": NFNetVariant(
        (3, 6, 18, 9), train_size=256, test_size=352, dropout_rate=0.4, randaugment=410
    ),
    "F3": NFNetVariant(
        (4, 8, 24, 12), train_size=320, test_size=416, dropout_rate=0.4, randaugment=415
    ),
    "F4": NFNetVariant(
        (5, 10, 30, 15), train_size=384, test_size=512, dropout_rate=0.5, randaugment=415
    ),
    "F5": NFNetVariant(
        (6, 12, 36, 18), train_size=416, test_size=544, dropout_rate=0.5, randaugment=415
    ),
    "F6": NFNetVariant(
        (7, 14, 42, 21), train_size=448, test_size=576, dropout_rate=0.5, randaugment=415
    ),
    "F7": NFNetVariant(
        (8, 16, 48, 24), train_size=480, test_size=608, dropout_rate=0.5, randaugment=415
    ),
}
# §1.3: each plus variant copies its base row with wider stages.
NFNET_VARIANTS.update(
    {
        f"{name}+": dataclasses.replace(row, widths=PLUS_WIDTHS)
        for name, row in list(NFNET_VARIANTS.items())
    }
)


def get_variant(variant: str | NFNetVariant) -> NFNetVariant:
    """Look up a variant by name (``"F0"``…``"F7"``, ``"F0+"``…``"F7+"``) or pass one through."""
    if isinstance(variant, NFNetVariant):
        return variant
    key = str(variant).upper()
    if key not in NFNET_VARIANTS:
        raise ValueError(
            f"Unknown NFNet variant {variant!r}. Accepted: {', '.join(NFNET_VARIANTS)}, "
            "or an NFNetVariant."
        )
    return NFNET_VARIANTS[key]


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """Settings of one NF block, derived from a variant (§3.1, §3.3, §3.5)."""

    stage: int
    index: int  # b, within the stage
    k: int  # global block index
    in_channels: int
    out_channels: int
    width: int  # bottleneck width
    groups: int
    stride: int
    projection: bool
    beta: float
    stochdepth_rate: float
    se_hidden: int

    @property
    def name(self) -> str:
        return f"stage{self.stage}_block{self.index}"


def bottleneck_width(out_channels: int, ratio: float, group_width: int) -> tuple[int, int]:
    """§3.1: ``int(out * ratio)`` rounded down to a multiple of the group width (at least one)."""
    groups = max(1, int(out_channels * ratio) // group_width)
    return groups * group_width, groups


def nfnet_plan(
    variant: str | NFNetVariant, stochdepth_rate: float | None = None
) -> list[BlockPlan]:
    """Per-block plan of a variant: the single source of the block shapes, beta and rates.

    Example:
    >>> plan = nfnet_plan("F0")
    >>> len(plan), plan[3].name, plan[3].groups, round(plan[3].beta, 5)
    (12, 'stage2_block0', 6, 0.96225)
    """
    v = get_variant(variant)
    rate = v.stochdepth_rate if stochdepth_rate is None else check_rate(stochdepth_rate)
    betas = beta_schedule(v.depths, v.alpha)
    rates = stochdepth_schedule(v.depths, rate)
    plan = []
    in_channels = v.widths[0] // 2
    k = 0
    for stage, (depth, out_channels, stage_stride) in enumerate(zip(v.depths, v.widths, v.strides)):
        for index in range(depth):
            stride = stage_stride if index == 0 else 1
            width, groups = bottleneck_width(out_channels, v.bottleneck_ratio, v.group_width)
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
                    se_hidden=max(1, int(out_channels * v.se_ratio)),
                )
            )
            in_channels = out_channels
            k += 1
    return plan


def count_nfnet_params(
    variant: str | NFNetVariant, classes: int = 1000, include_top: bool = True
) -> int:
    """Exact parameter count of a variant, from `nfnet_plan`, without allocating weights.

    Example:
    >>> count_nfnet_params("F0")
    71489284
    """
    v = get_variant(variant)
    stem = (3, *v.stem_widths, v.widths[0] // 2)
    total = sum(_ws_params(3, a, b) for a, b in itertools.pairwise(stem))
    for p in nfnet_plan(v):
        total += _ws_params(1, p.in_channels, p.width)
        total += 2 * _ws_params(3, p.width, p.width, p.groups)
        total += _ws_params(1, p.width, p.out_channels)
        total += _ws_params(1, p.in_channels, p.out_channels) if p.projection else 0
        total += 2 * p.out_channels * p.se_hidden + p.se_hidden + p.out_channels
        total += 1  # skip_gain
    features = v.final_conv_mult * v.widths[-1]
    total += _ws_params(1, v.widths[-1], features)
    if include_top:
        total += features * classes + classes
    return total


def _nf_block(x, p: BlockPlan, alpha, numerics, act):
    name = p.name

    def conv(y, filters, kernel, suffix, strides=1, groups=1):
        return WSConv2D(
            filters,
            kernel,
            strides=strides,
            groups=groups,
            standardization=numerics,
            name=f"{name}_{suffix}",
        )(y)

    # §3.2 step 1: phi(x) * beta (activate first, then scale).
    h = act(p.beta, f"{name}_preact")(x)
    if p.stride > 1:
        shortcut = keras.layers.AveragePooling2D(
            2, 2, padding="same", name=f"{name}_shortcut_pool"
        )(h)
        shortcut = conv(shortcut, p.out_channels, 1, "conv_shortcut")
    elif p.projection:
        shortcut = conv(h, p.out_channels, 1, "conv_shortcut")
    else:
        shortcut = x  # the raw, un-activated input
    r = conv(h, p.width, 1, "conv0")
    r = conv(act(1.0, f"{name}_act1")(r), p.width, 3, "conv1", strides=p.stride, groups=p.groups)
    r = conv(act(1.0, f"{name}_act1b")(r), p.width, 3, "conv1b", groups=p.groups)
    r = conv(act(1.0, f"{name}_act2")(r), p.out_channels, 1, "conv2")
    r = SqueezeExcite(p.se_hidden, gate_multiplier=2.0, name=f"{name}_se")(r)
    if 0.0 < p.stochdepth_rate < 1.0:
        r = StochDepth(p.stochdepth_rate, name=f"{name}_drop_path")(r)
    return SkipGain(alpha, name=f"{name}_skip_gain")([shortcut, r])


def NFNet(
    variant: str | NFNetVariant = "F0",
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
    numerics: str = "deepmind",
) -> keras.Model:
    """Instantiate an NFNet-F model (Brock et al., 2021) with the keras.applications signature.

    Inputs are images normalized with `keras_nfnet.preprocess_input` (ImageNet mean and std).
    Any height and width of at least 32 pixels are accepted; the default input shape is
    ``(None, None, 3)``.

    Args:
        variant: ``"F0"``…``"F7"``, ``"F0+"``…``"F7+"``, or an `NFNetVariant`.
        include_top: whether to include global pooling, dropout and the classifier.
        weights: ``None`` (random initialization), ``"imagenet"`` (the published ImageNet
            weights of F0-F6, downloaded once and cached, see `keras_nfnet.weights`; with
            ``include_top=True`` they need ``classes=1000``; with ``include_top=False`` any
            input size works) or the path of a weights file saved from a
            model built with the same arguments.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional ``(height, width, channels)``.
        pooling: with ``include_top=False``: ``None`` (4-D feature map), ``"avg"`` or ``"max"``.
        classes: number of classes when ``include_top=True``.
        classifier_activation: activation of the top layer (``None`` returns logits).
        name: model name (defaults to ``"nfnet_f0"`` etc.).
        dropout_rate: dropout before the classifier (default: the variant's).
        stochdepth_rate: maximum stochastic-depth rate R in [0, 1) (default: the variant's,
            0.25, the ImageNet recipe); block k drops with probability ``R * k / N``.
        numerics: ``"deepmind"`` (tanh GELU, ``max(n var, 1e-4)``; the numerics the DeepMind
            weights were trained with) or ``"timm"`` (exact GELU, ``var + 1e-5``; reproduces
            timm's ``dm_nfnet_*`` outputs).

    Returns:
        A `keras.Model`.

    Example:
    >>> import numpy as np
    >>> from keras_nfnet.models.nfnet import NFNet, NFNetVariant
    >>> tiny = NFNetVariant((1, 1, 1, 1), widths=(32, 64, 64, 64), stem_widths=(4, 8, 16),
    ...                     group_width=16)
    >>> model = NFNet(tiny, input_shape=(32, 32, 3), classes=10)
    >>> model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
    (2, 10)
    """
    v = get_variant(variant)
    if numerics not in NUMERICS:
        raise ValueError(
            f"Unknown numerics {numerics!r}. Accepted: {', '.join(map(repr, NUMERICS))}."
        )
    check_standardization(numerics)
    check_activation(v.activation)
    check_top(include_top, pooling, classes, classifier_activation)
    if weights == "imagenet":
        # Imported here: keras_nfnet.weights builds on the converters, which build on this module.
        from keras_nfnet import weights as pretrained

        pretrained.check_pretrained(variant, include_top, classes)
    else:
        check_weights_path(weights)
    dropout_rate = (
        v.dropout_rate if dropout_rate is None else check_rate(dropout_rate, "dropout_rate")
    )
    plan = nfnet_plan(v, stochdepth_rate)
    gelu_approximate = numerics == "deepmind"

    def act(scale, layer_name):
        return ScaledActivation(v.activation, scale, gelu_approximate, name=layer_name)

    inputs = image_input(input_tensor, input_shape, weights)
    x = inputs
    stem = (*v.stem_widths, v.widths[0] // 2)
    for j, (filters, stride) in enumerate(zip(stem, (2, 1, 1, 2))):
        x = WSConv2D(filters, 3, strides=stride, standardization=numerics, name=f"stem_conv{j}")(x)
        if j < 3:  # §2: no activation after stem_conv3
            x = act(1.0, f"stem_act{j}")(x)
    for p in plan:
        x = _nf_block(x, p, v.alpha, numerics, act)
    x = WSConv2D(v.final_conv_mult * v.widths[-1], 1, standardization=numerics, name="final_conv")(
        x
    )
    x = act(1.0, "final_act")(x)
    outputs = apply_head(
        x,
        include_top,
        pooling,
        classes,
        classifier_activation,
        dropout_rate,
        keras.initializers.RandomNormal(0.0, 0.01),
    )
    if name is None:
        name = "nfnet_" + (
            str(variant).lower().replace("+", "_plus") if isinstance(variant, str) else "custom"
        )
    # AGCModel: the NFNet train_step applies Adaptive Gradient Clipping (§13.5).
    model = AGCModel(model_inputs(input_tensor, inputs), outputs, name=name)
    if weights == "imagenet":
        pretrained.load_pretrained_weights(model, variant, include_top=include_top)
    elif weights is not None:
        load_weights_file(model, weights)
    return model


def _variant_builder(variant: str):
    row = NFNET_VARIANTS[variant]
    doc = (
        f"NFNet-{variant}: depths {row.depths}, widths {row.widths}, trained at {row.train_size} "
        f"px and evaluated at {row.test_size} px, {count_nfnet_params(variant):,} parameters.\n\n"
        "Arguments as `keras_nfnet.NFNet` without `variant`."
    )
    return variant_builder(NFNet, variant, f"NFNet{variant}", doc)


NFNetF0 = _variant_builder("F0")
NFNetF1 = _variant_builder("F1")
NFNetF2 = _variant_builder("F2")
NFNetF3 = _variant_builder("F3")
NFNetF4 = _variant_builder("F4")
NFNetF5 = _variant_builder("F5")
NFNetF6 = _variant_builder("F6")
NFNetF7 = _variant_builder("F7")
