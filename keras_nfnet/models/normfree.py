"""One builder for every `NFSpec` row: timm's and DeepMind's NF models as Keras Functional models.

`NormFreeNet(spec, ...)` reads a row of `keras_nfnet.architecture.rows.MODEL_SPECS` (or any
`NFSpec`) and builds it block by block from `normfree_plan`; `keras_nfnet.NFNet`, `NFResNet` and
`NFRegNet` are this builder with DeepMind's rows. Layer names follow
`keras_nfnet.convert.normfree_map`, one Keras layer per checkpoint module, so timm state dicts
and DeepMind files load by table. Weight-free layers: ``stem_gamma``/``final_gamma`` (gamma of
the convs timm scales although no activation precedes them, ``gamma_placement="conv"``),
``stem_act{j}``, ``stem_pool``, ``..._preact`` (phi(x) * beta), ``..._act1/1b/2``, ``..._pad``,
``..._shortcut_pool``, ``..._drop_path``, ``..._scale`` and ``..._add`` (the merge without a skip
gain), ``final_act``, ``avg_pool``, ``top_dropout``.

Numerics: timm folds gamma into each conv's weights; here it multiplies the activation before the
conv instead, which is the same product in another order (equal to float rounding). The convs
that see no activation (the first stem conv, the final conv) get an explicit gamma, and the final
activation is left plain, as in timm.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from keras_nfnet import weights as pretrained
from keras_nfnet.agc_model import AGCModel
from keras_nfnet.architecture.rows import MODEL_SPECS, get_spec
from keras_nfnet.architecture.spec import (
    NFBlockPlan,
    NFSpec,
    count_normfree_params,
    normfree_plan,
    stem_plan,
)
from keras_nfnet.convert.checkpoint import (
    CHECKPOINT_SUFFIXES,
    load_checkpoint_file,
    load_weights_file,
)
from keras_nfnet.layers import (
    EfficientChannelAttention,
    ScaledActivation,
    SkipGain,
    SqueezeExcite,
    StochDepth,
    SymmetricMaxPool2D,
    WSConv2D,
)
from keras_nfnet.layers.activations import GAMMAS, check_activation
from keras_nfnet.layers.stoch_depth import check_rate
from keras_nfnet.models.common import (
    assemble,
    check_features_only,
    check_weights_path,
    variant_builder,
)


class _Ops:
    """The layer factories of one model: a spec's padding rule, numerics and activation."""

    def __init__(self, spec: NFSpec):
        self.spec = spec
        self.gamma = GAMMAS[spec.activation]

    def conv(self, x, filters, kernel, name, strides=1, groups=1, gain_initializer="ones"):
        padding = "same"
        if self.spec.padding == "symmetric" and kernel > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            padding = "valid"
        if not self.spec.weight_standardization:
            # The mean-shift ablation: a plain conv with a bias, the same N(0, 1/fan_in) init.
            return keras.layers.Conv2D(
                filters,
                kernel,
                strides=strides,
                padding=padding,
                groups=groups,
                kernel_initializer=keras.initializers.VarianceScaling(
                    1.0, "fan_in", "untruncated_normal"
                ),
                name=name,
            )(x)
        return WSConv2D(
            filters,
            kernel,
            strides=strides,
            padding=padding,
            groups=groups,
            standardization=self.spec.numerics,
            gain_initializer=gain_initializer,
            name=name,
        )(x)

    def act(self, x, name, scale=1.0):
        return ScaledActivation(
            self.spec.activation,
            scale,
            gelu_approximate=self.spec.numerics == "deepmind",
            name=name,
        )(x)

    def conv_gamma(self, x, name):
        """timm's gamma on a conv that no activation precedes (gamma folded into convs)."""
        if self.spec.gamma_placement != "conv":
            return x
        return ScaledActivation("identity", self.gamma, name=name)(x)


def _stem(x, spec: NFSpec, ops: _Ops):
    x = ops.conv_gamma(x, "stem_gamma")
    stems = stem_plan(spec)
    for j, (filters, kernel, stride) in enumerate(stems):
        x = ops.conv(x, filters, kernel, f"stem_conv{j}" if len(stems) > 1 else "stem_conv", stride)
        if j < len(stems) - 1:
            x = ops.act(x, f"stem_act{j}")
    if spec.stem == "7x7_pool":
        pool = (
            SymmetricMaxPool2D(3, 2, name="stem_pool")
            if spec.padding == "symmetric"
            else keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")
        )
        x = pool(x)
    return x


def _attention(x, p: NFBlockPlan, spec: NFSpec):
    if spec.attention == "se":
        return SqueezeExcite(p.se_hidden, spec.attention_gain, name=f"{p.name}_se")(x)
    if spec.attention == "eca":
        return EfficientChannelAttention(p.eca_kernel, spec.attention_gain, name=f"{p.name}_eca")(x)
    return x


def _block(x, p: NFBlockPlan, spec: NFSpec, ops: _Ops):
    """``x + alpha * f(phi(x) * beta)``, the pre-activation NF block: activate, then scale."""
    name = p.name
    h = ops.act(x, f"{name}_preact", p.beta)
    shortcut = x
    if p.projection:
        s, stride = h, p.stride
        if p.stride > 1 and spec.shortcut_pool:
            # TF "same" average = PyTorch ceil_mode, count_include_pad=False
            s = keras.layers.AveragePooling2D(
                2, p.stride, padding="same", name=f"{name}_shortcut_pool"
            )(s)
            stride = 1
        shortcut = ops.conv(s, p.out_channels, 1, f"{name}_conv_shortcut", stride)
    r = ops.conv(h, p.width, 1, f"{name}_conv0")
    r = ops.conv(ops.act(r, f"{name}_act1"), p.width, 3, f"{name}_conv1", p.stride, p.groups)
    if spec.extra_conv:
        r = ops.conv(ops.act(r, f"{name}_act1b"), p.width, 3, f"{name}_conv1b", 1, p.groups)
    if spec.regnet:
        r = _attention(r, p, spec)
    # Without a skip gain, the last conv's gain starts at zero: each block starts as identity.
    r = ops.conv(
        ops.act(r, f"{name}_act2"),
        p.out_channels,
        1,
        f"{name}_conv2",
        gain_initializer="ones" if spec.skipinit else "zeros",
    )
    if not spec.regnet:
        r = _attention(r, p, spec)
    if 0.0 < p.stochdepth_rate < 1.0:
        r = StochDepth(p.stochdepth_rate, name=f"{name}_drop_path")(r)
    if spec.skipinit:
        return SkipGain(spec.alpha, name=_merge_name(p, spec))([shortcut, r])
    r = ScaledActivation("identity", spec.alpha, name=f"{name}_scale")(r)
    return keras.layers.Add(name=_merge_name(p, spec))([shortcut, r])


def _merge_name(p: NFBlockPlan, spec: NFSpec) -> str:
    """The block's last layer, ``shortcut + alpha * f(...)``: its output is the block's."""
    return f"{p.name}_skip_gain" if spec.skipinit else f"{p.name}_add"


def _level(reduction: int) -> str:
    return f"P{reduction.bit_length() - 1}"  # P_n is 2^n smaller than the input


def feature_taps(spec: str | NFSpec) -> list[dict]:
    """The pyramid of ``NormFreeNet(spec, features_only=True)``: one dict per level, finest first.

    Each dict has ``level`` (the output key ``"P1"`` … ``"P5"``: ``P_n`` is ``2**n`` times
    smaller than the input, rounded up), ``channels``, ``reduction`` (``2**n``), ``layer`` (the
    Keras layer whose output it is) and ``timm_module`` (where timm's ``feature_info`` taps the
    same tensor; docs/nfnet_reference.md §7.1). The levels are the last stem conv at stride 2
    (before its activation and any max-pool), the output of each stage's last block (before the
    next pre-activation), and, for rows with a head conv, ``final_conv`` (before the final
    activation) in place of the last stage.

    Example:
    >>> [(t["level"], t["channels"], t["layer"]) for t in feature_taps("test_nfnet")]
    [('P1', 64, 'stem_conv2'), ('P2', 32, 'stage0_block0_add'), ('P3', 64, 'stage1_block0_add'),
     ('P4', 96, 'stage2_block0_add'), ('P5', 192, 'final_conv')]
    """
    spec = get_spec(spec)
    stems = stem_plan(spec)
    reduction, stem_tap = 1, 0
    for j, (_, _, stride) in enumerate(stems):
        reduction *= stride
        if reduction == 2:
            stem_tap = j  # deep stems: the last conv before the stem's second stride
    deep = len(stems) > 1
    taps = [
        {
            "level": "P1",
            "channels": stems[stem_tap][0],
            "reduction": 2,
            "layer": f"stem_conv{stem_tap}" if deep else "stem_conv",
            "timm_module": f"stem.conv{stem_tap + 1}" if deep else "stem.conv",
        }
    ]
    plan = normfree_plan(spec)
    reduction = spec.stem_stride
    for p, following in zip(plan, [*plan[1:], None]):
        reduction *= p.stride
        if following is None or following.stage != p.stage:
            taps.append(
                {
                    "level": _level(reduction),
                    "channels": p.out_channels,
                    "reduction": reduction,
                    "layer": _merge_name(p, spec),
                    "timm_module": f"stages.{p.stage}",
                }
            )
    if spec.head_channels:
        taps[-1] = {
            **taps[-1],
            "channels": spec.num_features,
            "layer": "final_conv",
            "timm_module": "final_conv",
        }
    return taps


def NormFreeNet(
    spec: str | NFSpec,
    include_top: bool | None = None,
    weights: str | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    dropout_rate: float | None = None,
    stochdepth_rate: float | None = None,
    numerics: str | None = None,
    features_only: bool = False,
) -> AGCModel:
    """Instantiate a Normalizer-Free model with the keras.applications signature.

    Inputs are images normalized with the row's ``mean`` and ``std`` (ImageNet's for all rows but
    ``test_nfnet``); any height and width of at least 32 pixels work.

    Args:
        spec: a row name of `keras_nfnet.architecture.rows.MODEL_SPECS` (``"eca_nfnet_l0"``,
            ``"nf_regnet_b1"``, ``"dm_nfnet_f0"`` …) or an `NFSpec`.
        include_top: whether to include global pooling, dropout and the classifier (default:
            ``True``, or ``False`` with ``features_only=True``).
        weights: ``None`` (random initialization), ``"imagenet"`` (the row's published weights,
            downloaded once, hash-checked and cached, see `keras_nfnet.weights`), the path of a
            timm state dict saved as ``.safetensors`` or of a DeepMind ``.npz`` file (F layout;
            read with the restricted unpickler), converted on the fly and strictly checked, or
            of a ``.weights.h5`` file saved from a model built with the same arguments.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional ``(height, width, channels)``.
        pooling: with ``include_top=False``: ``None``, ``"avg"`` or ``"max"``.
        classes: number of classes when ``include_top=True``.
        classifier_activation: activation of the top layer (``None`` returns logits).
        name: model name (default: the row name).
        dropout_rate: dropout before the classifier (default: the row's).
        stochdepth_rate: maximum stochastic-depth rate in [0, 1) (default: the row's).
        numerics: ``"timm"`` (exact GELU, WS with ``var + 1e-5``) or ``"deepmind"`` (tanh GELU,
            ``max(n var, 1e-4)``); default: the row's (timm's for rows timm trained, DeepMind's
            for DeepMind's rows).
        features_only: return the feature pyramid instead: the model's output is a dict
            ``{"P1": ..., "P5": ...}`` of the maps `feature_taps` lists (``P_n`` is ``2**n``
            times smaller than the input, rounded up), tapped where timm's ``features_only``
            taps them. It has no head: ``include_top=True`` or a ``pooling`` is an error,
            ``classes`` is not used, and ``weights`` fill the backbone (a classifier in the
            file is ignored).

    Returns:
        An `AGCModel` (its ``train_step`` applies Adaptive Gradient Clipping).

    Example:
    >>> import numpy as np
    >>> model = NormFreeNet("test_nfnet", input_shape=(64, 64, 3), classes=10)
    >>> model.count_params(), model.predict(np.zeros((1, 64, 64, 3)), verbose=0).shape
    (192010, (1, 10))
    >>> pyramid = NormFreeNet("test_nfnet", features_only=True)
    >>> {k: v.shape for k, v in pyramid.predict(np.zeros((1, 64, 96, 3)), verbose=0).items()}
    {'P1': (1, 32, 48, 64), 'P2': (1, 16, 24, 32), 'P3': (1, 8, 12, 64), 'P4': (1, 4, 6, 96),
     'P5': (1, 2, 3, 192)}
    """
    include_top = check_features_only(features_only, include_top, pooling)
    row_name = spec if isinstance(spec, str) else None
    spec = get_spec(spec)
    if numerics is not None:
        spec = dataclasses.replace(spec, numerics=numerics)  # NFSpec checks the value
    check_activation(spec.activation)
    if stochdepth_rate is not None:
        stochdepth_rate = check_rate(stochdepth_rate)
    # What weights="imagenet" serves: the row by name, else the registry entry the spec equals.
    key = (row_name or pretrained.registered_key(spec)) if weights == "imagenet" else None

    def check_weights(weights, include_top, classes):
        if weights == "imagenet":
            pretrained.check_pretrained_model(key, include_top, classes)
        else:
            check_weights_path(weights)

    def load(model, weights):
        if weights == "imagenet":
            pretrained.load_pretrained_model(model, key, include_top=include_top)
        elif os.fspath(weights).endswith(CHECKPOINT_SUFFIXES):
            load_checkpoint_file(model, weights, spec, include_top=include_top)
        else:
            load_weights_file(model, weights)

    def body(inputs):
        ops = _Ops(spec)
        x = _stem(inputs, spec, ops)
        for p in normfree_plan(spec, stochdepth_rate):
            x = _block(x, p, spec, ops)
        if spec.head_channels:
            x = ops.conv(ops.conv_gamma(x, "final_gamma"), spec.num_features, 1, "final_conv")
        # timm's final activation is plain when gamma lives in the convs (no conv follows it).
        return ops.act(x, "final_act", 1.0 / ops.gamma if spec.gamma_placement == "conv" else 1.0)

    return assemble(
        body,
        feature_layers={t["level"]: t["layer"] for t in feature_taps(spec)}
        if features_only
        else None,
        default_name=row_name or "nf",
        dropout_rate=spec.dropout_rate if dropout_rate is None else dropout_rate,
        classifier_std=None if spec.zero_init_classifier else 0.01,
        model_class=AGCModel,  # its train_step applies Adaptive Gradient Clipping, every row
        check_weights=check_weights,
        load_weights=load,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
    )


def family_functions(get_variant, title: str, prefix: str):
    """``(plan, count)`` of a DeepMind variant table: `normfree_plan` and
    `count_normfree_params` of ``get_variant(variant).spec(**spec_args)`` (``use_se`` … for
    NF-ResNets), the one source of every family's block shapes and parameter counts, named
    ``{prefix}_plan`` and ``count_{prefix}_params``."""

    def plan(variant, stochdepth_rate: float | None = None, **spec_args) -> list[NFBlockPlan]:
        rate = None if stochdepth_rate is None else check_rate(stochdepth_rate)
        return normfree_plan(get_variant(variant).spec(**spec_args), rate)

    def count(variant, classes: int = 1000, include_top: bool = True, **spec_args) -> int:
        return count_normfree_params(get_variant(variant).spec(**spec_args), classes, include_top)

    plan.__doc__ = (
        f"Per-block plan of an {title} variant (`normfree_plan` of its spec): the single source "
        "of its block shapes, beta and stochastic-depth rates."
    )
    count.__doc__ = (
        f"Exact parameter count of an {title} variant (`count_normfree_params` of its spec), "
        "without allocating weights."
    )
    plan.__name__ = plan.__qualname__ = f"{prefix}_plan"
    count.__name__ = count.__qualname__ = f"count_{prefix}_params"
    return plan, count


def row_builder(family, variant, public_name: str, title: str, spec: NFSpec, family_name: str):
    """The keras.applications-style function of one table row, its docstring made from the
    row's spec (`keras_nfnet.models.common.variant_builder`)."""
    doc = (
        f"{title}: depths {spec.depths}, widths {tuple(spec.width(c) for c in spec.channels)}, "
        f"{spec.activation}, {spec.attention or 'no'} attention, trained at {spec.train_size} px "
        f"and tested at {spec.test_size} px, {count_normfree_params(spec):,} parameters.\n\n"
        f"Arguments as `{family_name}` without its first argument."
    )
    return variant_builder(family, variant, public_name, doc)


def table_builder(family, table: dict, prefix: str, title: str):
    """``make(variant)``: the public function of one row of a DeepMind variant table, named
    ``prefix + variant`` (``NFNetF0``, ``NFResNet50`` …) and passing through to ``family``."""

    def make(variant: str):
        spec = table[variant].spec()
        name = prefix + variant
        return row_builder(family, variant, name, title + variant, spec, f"keras_nfnet.{prefix}")

    return make


def _row_builder(row: str, public_name: str):
    spec = MODEL_SPECS[row]
    return row_builder(NormFreeNet, row, public_name, f"timm's ``{row}``", spec, "NormFreeNet")


NFNetL0 = _row_builder("nfnet_l0", "NFNetL0")
ECANFNetL0 = _row_builder("eca_nfnet_l0", "ECANFNetL0")
ECANFNetL1 = _row_builder("eca_nfnet_l1", "ECANFNetL1")
ECANFNetL2 = _row_builder("eca_nfnet_l2", "ECANFNetL2")
ECANFNetL3 = _row_builder("eca_nfnet_l3", "ECANFNetL3")
