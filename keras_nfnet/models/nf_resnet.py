"""NF-ResNets (Brock, De & Smith, ICLR 2021; nfnet_reference.md §9).

A pre-activation bottleneck ResNet without normalization: every block computes
``x + alpha * skip_gain * f(phi(x) * beta)`` with Scaled Weight Standardized convs, the ReLU gamma
and the beta schedule of NFNets (§3.3). Variants are rows of `NF_RESNET_VARIANTS`;
`nf_resnet_plan` turns a row into per-block settings, and both the builder and
`count_nf_resnet_params` read that plan.

Layer names (the DeepMind module in brackets): ``stem_conv`` (``initial_conv``), ``stem_pool``,
``stage{s}_block{b}_conv0/1/2`` and ``stage{s}_block0_conv_shortcut`` (``nf_res_block[_k]/~/conv0``
...), ``stage{s}_block{b}_se`` (``squeeze_excite``), ``stage{s}_block{b}_skip_gain``
(``skip_gain``), ``predictions`` (``linear``). Weight-free layers: ``..._preact``
(``phi(x) * beta``), ``..._act1``, ``..._act2``, ``..._drop_path``, ``final_act``.
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

BASE_WIDTHS = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class NFResNetVariant:
    """One row of the NF-ResNet variant table (nfnet_reference.md §9).

    The BN, unnormalized and SkipInit baselines of `keras_nfnet.models.resnet_v2` read the same
    rows (§11).

    Attributes:
        depths: blocks per stage.
        width: width multiplier: stage outputs are ``(64, 128, 256, 512) * width`` and the stem
            has ``16 * width`` channels (4 gives the standard ResNet widths).
        alpha: residual scale.
        stochdepth_rate: the maximum stochastic-depth rate R (block k of N drops with
            probability ``R * k / N``).
        dropout_rate: dropout before the classifier. The DeepMind variant dict has none (its
            default raises a KeyError, §9); 0 here, as in the BN baseline.
        activation: gamma-scaled activation (§5).
        bottleneck_ratio: bottleneck width as a fraction of the block output width.
        se_ratio: SE hidden width as a fraction of the block output width (when SE is used).
    """

    depths: tuple[int, ...]
    width: int = 4
    alpha: float = 0.2
    stochdepth_rate: float = 0.1
    dropout_rate: float = 0.0
    activation: str = "relu"
    bottleneck_ratio: float = 0.25
    se_ratio: float = 0.25

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(c * self.width for c in BASE_WIDTHS[: len(self.depths)])

    @property
    def stem_width(self) -> int:
        return 16 * self.width

    @property
    def strides(self) -> tuple[int, ...]:
        # The stem already downsamples by 4 (conv + max-pool); stage 0 keeps the resolution.
        return (1,) + (2,) * (len(self.depths) - 1)


# nfnet_reference.md §9. ResNet-26 is not in the DeepMind table: [2, 2, 2, 2] is the standard
# ResNet-26 layout (e.g. timm's resnet26).
NF_RESNET_VARIANTS: dict[str, NFResNetVariant] = {
    "26": NFResNetVariant((2, 2, 2, 2)),
    "50": NFResNetVariant((3, 4, 6, 3)),
    "101": NFResNetVariant((3, 4, 23, 3)),
    "152": NFResNetVariant((3, 8, 36, 3)),
    "200": NFResNetVariant((3, 24, 36, 3)),
    "288": NFResNetVariant((24, 24, 24, 24)),
    "600": NFResNetVariant((50, 50, 50, 50)),
}


def get_nf_resnet_variant(variant: str | int | NFResNetVariant) -> NFResNetVariant:
    """Look up a variant by depth (``50``, ``"50"``…) or pass an `NFResNetVariant` through."""
    if isinstance(variant, NFResNetVariant):
        return variant
    key = str(variant)
    if key not in NF_RESNET_VARIANTS:
        raise ValueError(
            f"Unknown NF-ResNet variant {variant!r}. Accepted: {', '.join(NF_RESNET_VARIANTS)} "
            "(the depth), or an NFResNetVariant."
        )
    return NF_RESNET_VARIANTS[key]


def nf_resnet_plan(
    variant: str | int | NFResNetVariant,
    stochdepth_rate: float | None = None,
    use_se: bool = False,
) -> list[BlockPlan]:
    """Per-block plan of an NF-ResNet (§9): the single source of its shapes, beta and rates.

    ``se_hidden`` is 0 when SE is off. The 3x3 convs are ungrouped (``groups = 1``).

    Example:
    >>> plan = nf_resnet_plan("50")
    >>> len(plan), plan[3].name, plan[3].stride, plan[3].width, round(plan[3].beta, 5)
    (16, 'stage1_block0', 2, 128, 0.94491)
    """
    v = get_nf_resnet_variant(variant)
    rate = v.stochdepth_rate if stochdepth_rate is None else check_rate(stochdepth_rate)
    betas = beta_schedule(v.depths, v.alpha)
    rates = stochdepth_schedule(v.depths, rate)
    plan = []
    in_channels = v.stem_width
    k = 0
    for stage, (depth, out_channels, stage_stride) in enumerate(zip(v.depths, v.widths, v.strides)):
        for index in range(depth):
            stride = stage_stride if index == 0 else 1
            plan.append(
                BlockPlan(
                    stage=stage,
                    index=index,
                    k=k,
                    in_channels=in_channels,
                    out_channels=out_channels,
                    width=int(out_channels * v.bottleneck_ratio),
                    groups=1,
                    stride=stride,
                    projection=stride > 1 or in_channels != out_channels,
                    beta=betas[k],
                    stochdepth_rate=rates[k],
                    se_hidden=max(1, int(out_channels * v.se_ratio)) if use_se else 0,
                )
            )
            in_channels = out_channels
            k += 1
    return plan


def count_nf_resnet_params(
    variant: str | int | NFResNetVariant,
    classes: int = 1000,
    include_top: bool = True,
    use_se: bool = False,
) -> int:
    """Exact parameter count of an NF-ResNet, from `nf_resnet_plan`, without allocating weights.

    Example:
    >>> count_nf_resnet_params("50"), count_nf_resnet_params("50", use_se=True)
    (25557048, 35635704)
    """
    v = get_nf_resnet_variant(variant)
    total = _ws_params(7, 3, v.stem_width)
    for p in nf_resnet_plan(v, use_se=use_se):
        total += _ws_params(1, p.in_channels, p.width)
        total += _ws_params(3, p.width, p.width)
        total += _ws_params(1, p.width, p.out_channels)
        total += _ws_params(1, p.in_channels, p.out_channels) if p.projection else 0
        if p.se_hidden:
            total += 2 * p.out_channels * p.se_hidden + p.se_hidden + p.out_channels
        total += 1  # skip_gain
    if include_top:
        total += v.widths[-1] * classes + classes
    return total


def _conv_factory(weight_standardization: bool):
    """WS convs (§4), or, for the mean-shift ablation of Paper A, plain convs with a bias and the
    same N(0, 1/fan_in) initializer (§8)."""

    def conv(y, filters, kernel, name, strides=1, groups=1):
        if weight_standardization:
            return WSConv2D(filters, kernel, strides=strides, groups=groups, name=name)(y)
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=strides,
            padding="same",
            groups=groups,
            kernel_initializer=keras.initializers.VarianceScaling(
                1.0, "fan_in", "untruncated_normal"
            ),
            name=name,
        )(y)

    return conv


def _nf_res_block(x, p: BlockPlan, alpha: float, activation: str, conv):
    name = p.name
    # §9 step 1: phi(x) * beta (activate first, then scale), as in NFNets (§3.2).
    h = ScaledActivation(activation, p.beta, name=f"{name}_preact")(x)
    if p.projection:
        # §9 step 2: a 1x1 conv that carries the stride itself; no average pool.
        shortcut = conv(h, p.out_channels, 1, f"{name}_conv_shortcut", strides=p.stride)
    else:
        shortcut = x  # the raw, un-activated input
    r = conv(h, p.width, 1, f"{name}_conv0")
    r = ScaledActivation(activation, name=f"{name}_act1")(r)
    r = conv(r, p.width, 3, f"{name}_conv1", strides=p.stride)
    r = ScaledActivation(activation, name=f"{name}_act2")(r)
    r = conv(r, p.out_channels, 1, f"{name}_conv2")
    if p.se_hidden:
        r = SqueezeExcite(p.se_hidden, gate_multiplier=2.0, name=f"{name}_se")(r)
    if 0.0 < p.stochdepth_rate < 1.0:
        r = StochDepth(p.stochdepth_rate, name=f"{name}_drop_path")(r)
    return SkipGain(alpha, name=f"{name}_skip_gain")([shortcut, r])


def NFResNet(
    variant: str | int | NFResNetVariant = "50",
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
    use_se: bool = False,
    weight_standardization: bool = True,
) -> keras.Model:
    """Instantiate an NF-ResNet (nfnet_reference.md §9) with the keras.applications signature.

    Stem: WS 7x7 stride-2 conv to ``16 * width`` channels and a 3x3 stride-2 max-pool, no
    activation. Blocks: ``x + alpha * skip_gain * f(phi(x) * beta)`` with a WS 1x1 - 3x3
    (strided) - 1x1 bottleneck of width ``out / 4``, ReLU scaled by its gamma, optional SE (x2
    gate); the projecting shortcut (first block of each stage) is a WS 1x1 conv carrying the
    stride, with no pool. Head: ``mean(phi(x))``, dropout, classifier initialized N(0, 0.01).

    Args:
        variant: depth ``26``, ``50``, ``101``, ``152``, ``200``, ``288``, ``600`` (int or
            str), or an `NFResNetVariant`. NF-ResNet-26 uses depths [2, 2, 2, 2], the standard
            ResNet-26 layout; the DeepMind table has no ResNet-26.
        include_top: whether to include global pooling, dropout and the classifier.
        weights: ``None`` or the path of a weights file saved from a model built with the same
            arguments (no pretrained NF-ResNet weights are published, §17).
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional ``(height, width, channels)``; default ``(None, None, 3)``.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: number of classes when ``include_top=True``.
        classifier_activation: activation of the top layer (``None`` returns logits).
        name: model name (defaults to ``"nf_resnet50"``, ``"nf_resnet50_se"`` etc.).
        dropout_rate: dropout before the classifier (default: the variant's, 0).
        stochdepth_rate: maximum stochastic-depth rate R in [0, 1) (default: the variant's, 0.1).
        use_se: add Squeeze-Excite (hidden ``out / 4``) after ``conv2``.
        weight_standardization: ``False`` replaces every WS conv by a plain conv with a bias
            (Paper A's ablation: the network then suffers mean shift).

    Returns:
        A `keras.Model`.

    Example:
    >>> import dataclasses, numpy as np
    >>> tiny = dataclasses.replace(NF_RESNET_VARIANTS["26"], width=1, depths=(1, 1, 1, 1))
    >>> model = NFResNet(tiny, input_shape=(32, 32, 3), classes=10)
    >>> model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
    (2, 10)
    """
    v = get_nf_resnet_variant(variant)
    check_activation(v.activation)
    check_top(include_top, pooling, classes, classifier_activation)
    check_weights_path(weights)
    dropout_rate = (
        v.dropout_rate if dropout_rate is None else check_rate(dropout_rate, "dropout_rate")
    )
    plan = nf_resnet_plan(v, stochdepth_rate, use_se)
    conv = _conv_factory(weight_standardization)

    inputs = image_input(input_tensor, input_shape, weights)
    # §9 stem: no activation; the first block activates its input.
    x = conv(inputs, v.stem_width, 7, "stem_conv", strides=2)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for p in plan:
        x = _nf_res_block(x, p, v.alpha, v.activation, conv)
    x = ScaledActivation(v.activation, name="final_act")(x)
    outputs = apply_head(
        x,
        include_top,
        pooling,
        classes,
        classifier_activation,
        dropout_rate,
        keras.initializers.RandomNormal(0.0, 0.01),  # §8: NF-ResNet classifier N(0, 0.01)
    )
    if name is None:
        key = next((k for k, row in NF_RESNET_VARIANTS.items() if row == v), "custom")
        name = f"nf_resnet{key}" + ("_se" if use_se else "")
    # AGCModel: its train_step applies Adaptive Gradient Clipping, as for every builder.
    model = AGCModel(model_inputs(input_tensor, inputs), outputs, name=name)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def _variant_builder(variant: str):
    row = NF_RESNET_VARIANTS[variant]
    doc = (
        f"NF-ResNet-{variant}: depths {row.depths}, widths {row.widths}, "
        f"{count_nf_resnet_params(variant):,} parameters "
        f"({count_nf_resnet_params(variant, use_se=True):,} with SE).\n\n"
        "Arguments as `keras_nfnet.NFResNet` without `variant`."
    )
    return variant_builder(NFResNet, variant, f"NFResNet{variant}", doc)


NFResNet26 = _variant_builder("26")
NFResNet50 = _variant_builder("50")
NFResNet101 = _variant_builder("101")
NFResNet152 = _variant_builder("152")
NFResNet200 = _variant_builder("200")
