"""Every model as a row: timm's NF rows and DeepMind's F, NF-ResNet and NF-RegNet tables.

`NF_SPECS` holds timm's rows (its ``model_cfgs``, in our words), `DM_SPECS` DeepMind's rows
(``dm_nfnet_f0`` … ``dm_nfnet_f7_plus``, ``dm_nf_resnet26`` …, ``dm_nf_seresnet26`` …,
``dm_nf_regnet_b0`` … ``b8``), and `MODEL_SPECS` both; `get_spec` looks a row up by name. Adding
a model is one line here. DeepMind's rows are written in DeepMind's own vocabulary
(`NFNetVariant`, `NFResNetVariant`, `NFRegNetVariant`: the published tables of
docs/nfnet_reference.md §1.2, §9 and §10), and each variant's ``spec()`` is its `NFSpec`.

Example:
>>> get_spec("dm_nfnet_f0").numerics, get_spec("eca_nfnet_l0").attention
('deepmind', 'eca')
>>> from keras_nfnet.architecture.spec import count_normfree_params
>>> count_normfree_params(get_spec("dm_nfnet_f0")), count_normfree_params(get_spec("nf_resnet50"))
(71489284, 25557032)
"""

from __future__ import annotations

import dataclasses

from keras_nfnet.architecture.spec import NFSpec


def _nfnet(depths, feat_mult=2.0, group_size=128, bottleneck=0.5, **kwargs) -> NFSpec:
    # timm's NFNet rows: deep-quad stem of 128, extra 3x3 conv, head conv of feat_mult x last.
    channels = kwargs.pop("channels", (256, 512, 1536, 1536))
    return NFSpec(
        depths=depths,
        channels=channels,
        stem="deep_quad",
        stem_channels=128,
        group_size=group_size,
        bottleneck_ratio=bottleneck,
        extra_conv=True,
        head_channels=int(channels[-1] * feat_mult),
        **{"activation": "gelu", "attention": "se", "se_ratio": 0.5, **kwargs},
    )


def _light(depths, feat_mult=2.0, **kwargs) -> NFSpec:
    # The "L" rows: NFNet-F with SiLU, groups of 64, bottleneck 0.25.
    defaults = {"group_size": 64, "bottleneck": 0.25, "activation": "silu"}
    return _nfnet(depths, feat_mult, **{**defaults, **kwargs})


def _resnet(depths, **kwargs) -> NFSpec:
    # Pre-activation ResNet-D-like rows: 7x7 stem of 64 and max-pool, bottleneck 0.25, ReLU.
    return NFSpec(
        depths=depths,
        channels=(256, 512, 1024, 2048),
        stem="7x7_pool",
        stem_channels=64,
        bottleneck_ratio=0.25,
        **{"activation": "relu", "train_size": 224, "test_size": 224, **kwargs},
    )


def _regnet(depths, channels=(48, 104, 208, 440), train=224, test=224, **kwargs) -> NFSpec:
    # EfficientNet-influenced RegNets: 3x3 stem, widths x 0.75, SE in the middle, head conv.
    return NFSpec(
        depths=depths,
        channels=channels,
        stem="3x3",
        group_size=8,
        width_factor=0.75,
        bottleneck_ratio=2.25,
        head_channels=1280 * channels[-1] // 440,
        regnet=True,
        attention="se",
        se_ratio=0.5,
        train_size=train,
        test_size=test,
        **kwargs,
    )


_ECA = {"attention": "eca"}
_SE16 = {"attention": "se", "se_ratio": 1 / 16}
_L_SE = {"se_ratio": 0.25}

# timm's rows (timm/models/nfnet.py model_cfgs and default_cfgs, in our words): one line each.
NF_SPECS: dict[str, NFSpec] = {
    "nfnet_l0": _light((1, 2, 6, 3), 1.5, train_size=224, test_size=288, **_L_SE),
    "eca_nfnet_l0": _light((1, 2, 6, 3), 1.5, train_size=224, test_size=288, **_ECA),
    "eca_nfnet_l1": _light((2, 4, 12, 6), train_size=256, test_size=320, **_ECA),
    "eca_nfnet_l2": _light((3, 6, 18, 9), train_size=320, test_size=384, **_ECA),
    "eca_nfnet_l3": _light((4, 8, 24, 12), train_size=352, test_size=448, **_ECA),
    "nf_resnet26": _resnet((2, 2, 2, 2)),
    "nf_resnet50": _resnet((3, 4, 6, 3), train_size=256, test_size=288, crop_pct=0.94),
    "nf_resnet101": _resnet((3, 4, 23, 3)),
    "nf_seresnet26": _resnet((2, 2, 2, 2), **_SE16),
    "nf_seresnet50": _resnet((3, 4, 6, 3), **_SE16),
    "nf_seresnet101": _resnet((3, 4, 23, 3), **_SE16),
    "nf_ecaresnet26": _resnet((2, 2, 2, 2), **_ECA),
    "nf_ecaresnet50": _resnet((3, 4, 6, 3), **_ECA),
    "nf_ecaresnet101": _resnet((3, 4, 23, 3), **_ECA),
    "nf_regnet_b0": _regnet((1, 3, 6, 6), train=192, test=256),
    "nf_regnet_b1": _regnet((2, 4, 7, 7), train=256, test=288),
    "nf_regnet_b2": _regnet((2, 4, 8, 8), (56, 112, 232, 488), train=240, test=272),
    "nf_regnet_b3": _regnet((2, 5, 9, 9), (56, 128, 248, 528), train=288, test=320),
    "nf_regnet_b4": _regnet((2, 6, 11, 11), (64, 144, 288, 616), train=320, test=384),
    "nf_regnet_b5": _regnet((3, 7, 14, 14), (80, 168, 336, 704), train=384, test=456),
    "test_nfnet": _light(
        (1, 1, 1, 1),
        1.5,
        channels=(32, 64, 96, 128),
        group_size=8,
        train_size=160,
        test_size=160,
        crop_pct=0.95,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        **_L_SE,
    ),
    **{
        f"nfnet_f{i}": _nfnet(depths, train_size=train, test_size=test)
        for i, (depths, train, test) in enumerate(
            [
                ((1, 2, 6, 3), 192, 256),
                ((2, 4, 12, 6), 224, 320),
                ((3, 6, 18, 9), 256, 352),
                ((4, 8, 24, 12), 320, 416),
                ((5, 10, 30, 15), 384, 512),
                ((6, 12, 36, 18), 416, 544),
                ((7, 14, 42, 21), 448, 576),
                ((8, 16, 48, 24), 480, 608),
            ]
        )
    },
}


def _dm_preprocessing(test_size: int) -> dict:
    # docs/nfnet_reference.md §15: squash-resize to S + 32, centre-crop S, bicubic.
    return {"crop_pct": test_size / (test_size + 32), "crop_mode": "squash"}


_DM_RULES = {
    "padding": "same",
    "numerics": "deepmind",
    "rounding": "deepmind",
    "gamma_placement": "activation",
    "skipinit": True,
    "channel_divisor": 1,
}


def _dm_spec(variant, **fields) -> NFSpec:
    """An `NFSpec` in DeepMind's layout: the fields every DeepMind variant table has, DeepMind's
    rules (`_DM_RULES`) and preprocessing, and ``fields``."""
    test_size = getattr(variant, "test_size", 224)
    shared = {
        "depths": variant.depths,
        "channels": variant.widths,
        "activation": variant.activation,
        "alpha": variant.alpha,
        "dropout_rate": variant.dropout_rate,
        "stochdepth_rate": variant.stochdepth_rate,
        "train_size": getattr(variant, "train_size", 224),
        "test_size": test_size,
        **_DM_RULES,
        **_dm_preprocessing(test_size),
    }
    return NFSpec(**{**shared, **fields})


@dataclasses.dataclass(frozen=True)
class NFNetVariant:
    """One row of DeepMind's NFNet-F table (docs/nfnet_reference.md §1.1-§1.4).

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

    def spec(self, numerics: str = "deepmind") -> NFSpec:
        """This variant as an `NFSpec` (DeepMind's layout; ``numerics`` as `keras_nfnet.NFNet`)."""
        return _dm_spec(
            self,
            stem="deep_quad",
            stem_channels=(*self.stem_widths, self.widths[0] // 2),
            group_size=self.group_width,
            attention="se",
            se_ratio=self.se_ratio,
            bottleneck_ratio=self.bottleneck_ratio,
            head_channels=self.final_conv_mult * self.widths[-1],
            extra_conv=True,
            numerics=numerics,
        )


PLUS_WIDTHS = (384, 768, 2048, 2048)


def _f(depths, train_size, test_size, dropout_rate, randaugment) -> NFNetVariant:
    return NFNetVariant(
        depths, (256, 512, 1536, 1536), train_size, test_size, dropout_rate, randaugment
    )


# docs/nfnet_reference.md §1.2. F_k has depths [1, 2, 6, 3] x (k + 1).
NFNET_VARIANTS: dict[str, NFNetVariant] = {
    "F0": _f((1, 2, 6, 3), 192, 256, 0.2, 405),
    "F1": _f((2, 4, 12, 6), 224, 320, 0.3, 410),
    "F2": _f((3, 6, 18, 9), 256, 352, 0.4, 410),
    "F3": _f((4, 8, 24, 12), 320, 416, 0.4, 415),
    "F4": _f((5, 10, 30, 15), 384, 512, 0.5, 415),
    "F5": _f((6, 12, 36, 18), 416, 544, 0.5, 415),
    "F6": _f((7, 14, 42, 21), 448, 576, 0.5, 415),
    "F7": _f((8, 16, 48, 24), 480, 608, 0.5, 415),
}
# §1.3: each plus variant copies its base row with wider stages.
NFNET_VARIANTS.update(
    {
        f"{name}+": dataclasses.replace(row, widths=PLUS_WIDTHS)
        for name, row in list(NFNET_VARIANTS.items())
    }
)


def _lookup(table: dict, variant, family: str, key: str):
    """``table[key]`` for a variant name, or the variant itself if it is already a row."""
    row_type = type(next(iter(table.values())))
    if isinstance(variant, row_type):
        return variant
    if key not in table:
        raise ValueError(
            f"Unknown {family} variant {variant!r}. Accepted: {', '.join(table)}, "
            f"or an {row_type.__name__}."
        )
    return table[key]


def get_variant(variant: str | NFNetVariant) -> NFNetVariant:
    """Look up a variant by name (``"F0"``…``"F7"``, ``"F0+"``…``"F7+"``) or pass one through."""
    return _lookup(NFNET_VARIANTS, variant, "NFNet", str(variant).upper())


BASE_WIDTHS = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class NFResNetVariant:
    """One row of DeepMind's NF-ResNet table (docs/nfnet_reference.md §9).

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

    def spec(self, use_se: bool = False, weight_standardization: bool = True) -> NFSpec:
        """This variant as an `NFSpec`: 7x7 stem and max-pool, strided 1x1 shortcuts, ReLU."""
        return _dm_spec(
            self,
            stem="7x7_pool",
            stem_channels=(self.stem_width,),
            attention="se" if use_se else None,
            se_ratio=self.se_ratio,
            bottleneck_ratio=self.bottleneck_ratio,
            shortcut_pool=False,
            weight_standardization=weight_standardization,
        )


# docs/nfnet_reference.md §9. ResNet-26 is not in the DeepMind table: [2, 2, 2, 2] is the
# standard ResNet-26 layout (e.g. timm's resnet26).
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
    return _lookup(NF_RESNET_VARIANTS, variant, "NF-ResNet", str(variant))


@dataclasses.dataclass(frozen=True)
class NFRegNetVariant:
    """One row of DeepMind's NF-RegNet table (docs/nfnet_reference.md §10).

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

    def spec(self) -> NFSpec:
        """This variant as an `NFSpec`: 3x3 stem, expanded RegNet blocks, zero-init head."""
        return _dm_spec(
            self,
            stem="3x3",
            group_size=self.group_size,
            attention="se",
            se_ratio=self.se_ratio,
            bottleneck_ratio=self.expansion,
            head_channels=self.final_conv_width,
            regnet=True,
            zero_init_classifier=True,
        )


# docs/nfnet_reference.md §10 (`base.nf_regnet_params`).
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
    return _lookup(NF_REGNET_VARIANTS, variant, "NF-RegNet", str(variant).upper())


def dm_nfnet_name(variant: str) -> str:
    """The `create_model` name of a DeepMind F variant: ``"F0+"`` -> ``"dm_nfnet_f0_plus"``."""
    return "dm_nfnet_" + variant.lower().replace("+", "_plus")


# DeepMind's rows, by the names timm uses for them where timm has them.
DM_SPECS: dict[str, NFSpec] = {
    **{dm_nfnet_name(v): row.spec() for v, row in NFNET_VARIANTS.items()},
    **{f"dm_nf_resnet{v}": row.spec() for v, row in NF_RESNET_VARIANTS.items()},
    **{f"dm_nf_seresnet{v}": row.spec(use_se=True) for v, row in NF_RESNET_VARIANTS.items()},
    **{f"dm_nf_regnet_{v.lower()}": row.spec() for v, row in NF_REGNET_VARIANTS.items()},
}

MODEL_SPECS: dict[str, NFSpec] = {**NF_SPECS, **DM_SPECS}


def get_spec(spec: str | NFSpec) -> NFSpec:
    """Look up a row of `MODEL_SPECS` by name, or pass an `NFSpec` through."""
    if isinstance(spec, NFSpec):
        return spec
    if spec not in MODEL_SPECS:
        raise ValueError(f"Unknown model {spec!r}. Accepted: {', '.join(MODEL_SPECS)}.")
    return MODEL_SPECS[spec]


def resolve_spec(model) -> NFSpec:
    """The `NFSpec` of a row name, a DeepMind F variant name (``"F0"``, ``"f1+"``), a variant
    (`NFNetVariant`, `NFResNetVariant`, `NFRegNetVariant`) or an `NFSpec`.

    Example:
    >>> resolve_spec("F0") == get_spec("dm_nfnet_f0") == resolve_spec(NFNET_VARIANTS["F0"])
    True
    """
    if isinstance(model, NFSpec):
        return model
    if isinstance(model, NFNetVariant | NFResNetVariant | NFRegNetVariant):
        return model.spec()
    if isinstance(model, str) and model.upper() in NFNET_VARIANTS and model not in MODEL_SPECS:
        return NFNET_VARIANTS[model.upper()].spec()
    return get_spec(model)
