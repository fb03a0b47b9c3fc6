"""NF-ResNets (Brock, De & Smith, ICLR 2021; docs/nfnet_reference.md §9): DeepMind's rows of
the one builder.

A pre-activation bottleneck ResNet without normalization: every block computes
``x + alpha * skip_gain * f(phi(x) * beta)`` with Scaled Weight Standardized convs, the ReLU gamma
and the beta schedule of NFNets (§3.3). Variants are rows of
`keras_nfnet.architecture.rows.NF_RESNET_VARIANTS`; each row's ``spec(use_se,
weight_standardization)`` is its `NFSpec`, and `NFResNet` is
`keras_nfnet.models.normfree.NormFreeNet` of it.

Layer names (the DeepMind module in brackets): ``stem_conv`` (``initial_conv``), ``stem_pool``,
``stage{s}_block{b}_conv0/1/2`` and ``stage{s}_block0_conv_shortcut`` (``nf_res_block[_k]/~/conv0``
...), ``stage{s}_block{b}_se`` (``squeeze_excite``), ``stage{s}_block{b}_skip_gain``
(``skip_gain``), ``predictions`` (``linear``). Weight-free layers: ``..._preact``
(``phi(x) * beta``), ``..._act1``, ``..._act2``, ``..._drop_path``, ``final_act``.
"""

from __future__ import annotations

from keras_nfnet.agc_model import AGCModel
from keras_nfnet.architecture.rows import (
    BASE_WIDTHS,
    NF_RESNET_VARIANTS,
    NFResNetVariant,
    get_nf_resnet_variant,
)
from keras_nfnet.models.common import refuse_imagenet
from keras_nfnet.models.normfree import NormFreeNet, family_functions, table_builder

__all__ = [
    "BASE_WIDTHS",
    "NF_RESNET_VARIANTS",
    "NFResNet",
    "NFResNetVariant",
    "count_nf_resnet_params",
    "get_nf_resnet_variant",
    "nf_resnet_plan",
]


nf_resnet_plan, count_nf_resnet_params = family_functions(
    get_nf_resnet_variant, "NF-ResNet", "nf_resnet"
)


def NFResNet(
    variant: str | int | NFResNetVariant = "50",
    use_se: bool = False,
    weight_standardization: bool = True,
    **kwargs,
) -> AGCModel:
    """Instantiate an NF-ResNet (docs/nfnet_reference.md §9) with the keras.applications signature.

    Stem: WS 7x7 stride-2 conv to ``16 * width`` channels and a 3x3 stride-2 max-pool, no
    activation. Blocks: ``x + alpha * skip_gain * f(phi(x) * beta)`` with a WS 1x1 - 3x3
    (strided) - 1x1 bottleneck of width ``out / 4``, ReLU scaled by its gamma, optional SE (x2
    gate); the projecting shortcut (first block of each stage) is a WS 1x1 conv carrying the
    stride, with no pool. Head: ``mean(phi(x))``, dropout, classifier initialized N(0, 0.01).

    Args:
        variant: depth ``26``, ``50``, ``101``, ``152``, ``200``, ``288``, ``600`` (int or
            str), or an `NFResNetVariant`. NF-ResNet-26 uses depths [2, 2, 2, 2], the standard
            ResNet-26 layout; the DeepMind table has no ResNet-26.
        **kwargs: the arguments of `keras_nfnet.models.normfree.NormFreeNet`, as keywords: the
            keras.applications ones (``include_top``, ``weights``, ``input_tensor``,
            ``input_shape``, ``pooling``, ``classes``, ``classifier_activation``, ``name``),
            ``dropout_rate``, ``stochdepth_rate`` (default: the variant's) and
            ``features_only`` (the feature pyramid ``{"P1": ..., "P5": ...}`` instead of the
            classifier; `keras_nfnet.feature_info`).
            ``weights`` is ``None`` or a file: no pretrained NF-ResNet weights are published
            (§17). ``name`` defaults to ``"nf_resnet50"``, ``"nf_resnet50_se"`` etc.
        use_se: add Squeeze-Excite (hidden ``out / 4``) after ``conv2``.
        weight_standardization: ``False`` replaces every WS conv by a plain conv with a bias
            (Paper A's ablation: the network then suffers mean shift).

    Returns:
        An `AGCModel`.

    Example:
    >>> import dataclasses, numpy as np
    >>> tiny = dataclasses.replace(NF_RESNET_VARIANTS["26"], width=1, depths=(1, 1, 1, 1))
    >>> model = NFResNet(tiny, input_shape=(32, 32, 3), classes=10)
    >>> model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
    (2, 10)
    """
    v = get_nf_resnet_variant(variant)
    refuse_imagenet(kwargs.get("weights"), "NF-ResNets", "nf_resnet50")
    key = next((k for k, row in NF_RESNET_VARIANTS.items() if row == v), "custom")
    kwargs["name"] = kwargs.get("name") or f"nf_resnet{key}" + ("_se" if use_se else "")
    return NormFreeNet(v.spec(use_se, weight_standardization), **kwargs)


_builder = table_builder(NFResNet, NF_RESNET_VARIANTS, "NFResNet", "NF-ResNet-")
NFResNet26 = _builder("26")
NFResNet50 = _builder("50")
NFResNet101 = _builder("101")
NFResNet152 = _builder("152")
NFResNet200 = _builder("200")
