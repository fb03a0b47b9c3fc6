"""NF-RegNets (Brock, De & Smith, ICLR 2021; docs/nfnet_reference.md §10): DeepMind's rows of
the one builder.

EfficientNet-like RegNet-Y blocks without normalization: ``x + alpha * skip_gain *
f(phi(x) * beta)``, where ``f`` is a WS 1x1 expansion, a grouped 3x3 (group size 8, strided),
Squeeze-Excite on the expanded width (x2 gate) and a WS 1x1 projection, with the SiLU gamma and
the beta schedule of NFNets (§3.3). Variants are rows of
`keras_nfnet.architecture.rows.NF_REGNET_VARIANTS`; each row's ``spec()`` is its `NFSpec`, and
`NFRegNet` is `keras_nfnet.models.normfree.NormFreeNet` of it.

Layer names (the DeepMind module in brackets): ``stem_conv`` (``initial_conv``),
``stage{s}_block{b}_conv0/1/2`` and ``stage{s}_block0_conv_shortcut`` (``nf_block[_k]/~/...``),
``stage{s}_block{b}_se``, ``stage{s}_block{b}_skip_gain``, ``final_conv``, ``predictions``.
Weight-free layers: ``..._preact`` (``phi(x) * beta``), ``..._shortcut_pool``, ``..._act1``,
``..._act2``, ``..._drop_path``, ``final_act``.
"""

from __future__ import annotations

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.architecture.rows import (
    NF_REGNET_VARIANTS,
    NFRegNetVariant,
    get_nf_regnet_variant,
)
from keras_nfnet.models.common import refuse_imagenet
from keras_nfnet.models.normfree import NormFreeNet, family_functions, table_builder

__all__ = [
    "NF_REGNET_VARIANTS",
    "NFRegNet",
    "NFRegNetVariant",
    "count_nf_regnet_params",
    "get_nf_regnet_variant",
    "nf_regnet_plan",
]


nf_regnet_plan, count_nf_regnet_params = family_functions(
    get_nf_regnet_variant, "NF-RegNet", "nf_regnet"
)


def NFRegNet(variant: str | NFRegNetVariant = "B0", **kwargs) -> AGCModel:
    """Instantiate an NF-RegNet (docs/nfnet_reference.md §10) with the keras.applications signature.

    Stem: one WS 3x3 stride-2 conv, no activation, no pool. Blocks: as the module docstring;
    the first block of every stage has stride 2 (total /32). Head: WS 1x1 ``final_conv``,
    ``phi``, global mean, dropout, and a zero-initialized classifier (§8).

    Args:
        variant: ``"B0"``…``"B8"`` or an `NFRegNetVariant`.
        **kwargs: the arguments of `keras_nfnet.models.normfree.NormFreeNet`, as keywords: the
            keras.applications ones (``include_top``, ``weights``, ``input_tensor``,
            ``input_shape``, ``pooling``, ``classes``, ``classifier_activation``, ``name``),
            ``dropout_rate``, ``stochdepth_rate`` (default: the variant's) and
            ``features_only`` (the feature pyramid ``{"P1": ..., "P5": ...}`` instead of the
            classifier; `keras_nfnet.feature_info`).
            ``weights`` is ``None`` or a file: no pretrained NF-RegNet weights are published
            (§17). ``name`` defaults to ``"nf_regnet_b0"`` etc.

    Returns:
        An `AGCModel`.

    Example:
    >>> import numpy as np
    >>> model = NFRegNet("B0", input_shape=(32, 32, 3), classes=10)
    >>> model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
    (2, 10)
    """
    v = get_nf_regnet_variant(variant)
    refuse_imagenet(kwargs.get("weights"), "NF-RegNets", "nf_regnet_b1")
    key = next((k for k, row in NF_REGNET_VARIANTS.items() if row == v), "custom")
    kwargs["name"] = kwargs.get("name") or f"nf_regnet_{key.lower()}"
    return NormFreeNet(v.spec(), **kwargs)


_builder = table_builder(NFRegNet, NF_REGNET_VARIANTS, "NFRegNet", "NF-RegNet-")
NFRegNetB0 = _builder("B0")
NFRegNetB1 = _builder("B1")
NFRegNetB2 = _builder("B2")
NFRegNetB3 = _builder("B3")
NFRegNetB4 = _builder("B4")
NFRegNetB5 = _builder("B5")
NFRegNetB6 = _builder("B6")
NFRegNetB7 = _builder("B7")
NFRegNetB8 = _builder("B8")
