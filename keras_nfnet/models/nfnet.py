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
from keras_nfnet.checks import check_choice
from keras_nfnet.models.normfree import NormFreeNet, family_functions, table_builder

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
        **kwargs: the arguments of `keras_nfnet.models.normfree.NormFreeNet`, as keywords: the
            keras.applications ones (``include_top``, ``weights``, ``input_tensor``,
            ``input_shape``, ``pooling``, ``classes``, ``classifier_activation``, ``name``),
            ``dropout_rate``, ``stochdepth_rate`` (default: the variant's) and
            ``features_only`` (the feature pyramid ``{"P1": ..., "P5": ...}`` instead of the
            classifier; `keras_nfnet.feature_info`).
            ``weights="imagenet"`` loads the published ImageNet weights of F0-F6 (downloaded
            once and cached, see `keras_nfnet.weights`); ``name`` defaults to ``"nfnet_f0"``
            etc.; the variant's ``stochdepth_rate`` is 0.25, the ImageNet recipe.
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
    check_choice("numerics", numerics, NUMERICS)
    key = str(variant).lower().replace("+", "_plus") if isinstance(variant, str) else "custom"
    kwargs["name"] = kwargs.get("name") or f"nfnet_{key}"
    return NormFreeNet(v.spec(numerics), **kwargs)


_builder = table_builder(NFNet, NFNET_VARIANTS, "NFNet", "NFNet-")
NFNetF0 = _builder("F0")
NFNetF1 = _builder("F1")
NFNetF2 = _builder("F2")
NFNetF3 = _builder("F3")
NFNetF4 = _builder("F4")
NFNetF5 = _builder("F5")
NFNetF6 = _builder("F6")
NFNetF7 = _builder("F7")
