"""NFNet-F0…F7 and F0+…F7+ (docs/nfnet_reference.md §1-§8): DeepMind's rows of the one builder.

The variants are rows of `keras_nfnet.architecture.rows.NFNET_VARIANTS` (DeepMind's table, in
its own vocabulary); each row's ``spec()`` is its `NFSpec`, and `NFNet` is
`keras_nfnet.models.normfree.NormFreeNet` of that spec with DeepMind's numerics by default.
`nfnet_plan` and `count_nfnet_params` are `normfree_plan` and `count_normfree_params` of it.

Layer names follow docs/checkpoints.md §3.1, one Keras layer per checkpoint module (the table is
`keras_nfnet.convert.normfree_map`): ``stem_conv{j}``, ``stage{s}_block{b}_conv0/1/1b/2``,
``stage{s}_block0_conv_shortcut``, ``stage{s}_block{b}_se``, ``stage{s}_block{b}_skip_gain``,
``final_conv``, ``predictions``. Weight-free layers: ``stem_act{j}``,
``stage{s}_block{b}_preact`` (phi(x) * beta), ``..._act1``, ``..._act1b``, ``..._act2``,
``..._shortcut_pool``, ``..._drop_path``, ``final_act``, ``avg_pool``, ``top_dropout``.
"""

from __future__ import annotations

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.architecture.rows import (
    NFNET_VARIANTS,
    PLUS_WIDTHS,
    NFNetVariant,
    get_variant,
)
from keras_nfnet.architecture.spec import NFBlockPlan
from keras_nfnet.models.normfree import NormFreeNet, family_functions, row_builder

NUMERICS = ("deepmind", "timm")
BlockPlan = NFBlockPlan  # the per-block settings, shared by every family

__all__ = [
    "NFNET_VARIANTS",
    "NUMERICS",
    "PLUS_WIDTHS",
    "BlockPlan",
    "NFNet",
    "NFNetVariant",
    "count_nfnet_params",
    "get_variant",
    "nfnet_plan",
]


nfnet_plan, count_nfnet_params = family_functions(get_variant, "NFNet-F", "nfnet")


def NFNet(variant: str | NFNetVariant = "F0", numerics: str = "deepmind", **kwargs) -> AGCModel:
    """Instantiate an NFNet-F model (Brock et al., 2021) with the keras.applications signature.

    Inputs are images normalized with `keras_nfnet.preprocess_input` (ImageNet mean and std).
    Any height and width of at least 32 pixels are accepted; the default input shape is
    ``(None, None, 3)``.

    Args:
        variant: ``"F0"``…``"F7"``, ``"F0+"``…``"F7+"``, or an `NFNetVariant`.
        **kwargs: the keras.applications arguments below, as keywords (they go to
            `keras_nfnet.models.normfree.NormFreeNet`).
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
        An `AGCModel`.

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
    key = str(variant).lower().replace("+", "_plus") if isinstance(variant, str) else "custom"
    kwargs["name"] = kwargs.get("name") or f"nfnet_{key}"
    return NormFreeNet(v.spec(numerics), **kwargs)


def _variant_builder(variant: str):
    spec = NFNET_VARIANTS[variant].spec()
    name = f"NFNet{variant}"
    return row_builder(NFNet, variant, name, f"NFNet-{variant}", spec, "keras_nfnet.NFNet")


NFNetF0 = _variant_builder("F0")
NFNetF1 = _variant_builder("F1")
NFNetF2 = _variant_builder("F2")
NFNetF3 = _variant_builder("F3")
NFNetF4 = _variant_builder("F4")
NFNetF5 = _variant_builder("F5")
NFNetF6 = _variant_builder("F6")
NFNetF7 = _variant_builder("F7")
