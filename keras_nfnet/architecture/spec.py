"""The Normalizer-Free network as data: one frozen spec per model, and the plan it implies.

`NFSpec` holds everything that varies between timm's Normalizer-Free models (``nfnet_l*``,
``eca_nfnet_l*``, ``nf_resnet*``, ``nf_seresnet*``, ``nf_ecaresnet*``, ``nf_regnet_b*``,
``nfnet_f*``, ``test_nfnet``): depths, widths, stem, block kind, groups, attention, activation
and where its gamma sits, padding rule, standardization, skip gain, head width, dropout, sizes and
the pretrained preprocessing, and DeepMind's F, NF-ResNet and NF-RegNet models as well (their
rounding, shortcut and skip-gain rules are fields too). The rows themselves live in
`keras_nfnet.architecture.rows`; `normfree_plan` turns a spec into per-block settings that the
builder (`keras_nfnet.models.normfree`), the converter table (`keras_nfnet.convert.normfree_map`)
and `count_normfree_params` all read. This module imports nothing from the package, so every other
module can import it.

Example:
>>> spec = NFSpec(depths=(1, 1), channels=(32, 64), attention="eca", group_size=8)
>>> [(p.width, p.groups, p.eca_kernel) for p in normfree_plan(spec)], count_normfree_params(spec)
([(16, 2, 3), (32, 4, 3)], 77134)
"""

from __future__ import annotations

import dataclasses
import math

STEMS = ("deep_quad", "3x3", "7x7_pool")
ATTENTIONS = (None, "se", "eca")
PADDINGS = ("symmetric", "same")
GAMMA_PLACEMENTS = ("conv", "activation")
NUMERICS = ("timm", "deepmind")
ROUNDINGS = ("timm", "deepmind")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), one step
    up if rounding lost more than ``1 - round_limit`` of it (timm's channel rounding).

    Example:
    >>> make_divisible(36), make_divisible(10, 8), make_divisible(10, 8, round_limit=0.0)
    (40, 16, 8)
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def beta_schedule(depths: tuple[int, ...] | list[int], alpha: float) -> list[float]:
    """beta of every block, in creation order, for every NF family (DeepMind's and timm's rule).

    beta is ``1 / expected_std`` of the block input, assuming ``skip_gain = 1``: the expected
    variance grows by ``alpha**2`` per block and resets to 1 after each stage's first block,
    whose shortcut is a conv of the normalized input.

    Example:
    >>> [round(b, 5) for b in beta_schedule((1, 2), alpha=0.2)]
    [1.0, 0.98058, 0.98058]
    """
    betas = []
    expected_std = 1.0
    for depth in depths:
        for index in range(depth):
            betas.append(1.0 / expected_std)
            # §3.3: the variance along the identity path resets after each transition block.
            if index == 0:
                expected_std = 1.0
            expected_std = math.sqrt(expected_std**2 + alpha**2)
    return betas


def stochdepth_schedule(depths: tuple[int, ...] | list[int], rate: float) -> list[float]:
    """§3.5: block k of N drops its residual branch with probability ``rate * k / N``.

    Example:
    >>> [round(r, 3) for r in stochdepth_schedule((1, 3), rate=0.2)]
    [0.0, 0.05, 0.1, 0.15]
    """
    total = sum(depths)
    return [rate * k / total for k in range(total)]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA's adaptive 1-D kernel size: the odd number near ``(log2(C) + beta) / gamma``, >= 3.

    Example:
    >>> eca_kernel_size(256), eca_kernel_size(1536)
    (5, 5)
    """
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


@dataclasses.dataclass(frozen=True)
class NFSpec:
    """Everything that varies between Normalizer-Free models; a model is one row of these.

    Attributes:
        depths: blocks per stage.
        channels: output channels per stage, before ``width_factor`` and rounding.
        stem: ``"deep_quad"`` (four 3x3 convs, strides 2-1-1-2, NFNet), ``"3x3"`` (one stride-2
            conv, RegNet) or ``"7x7_pool"`` (7x7 stride-2 conv and 3x3 stride-2 max-pool, ResNet).
        stem_channels: stem output width (``None``: ``channels[0]``), before ``width_factor``;
            a tuple gives the width of every stem conv (DeepMind's F stems: 16, 32, 64, C/2).
        group_size: channels per group of the 3x3 convs (``None``: ungrouped).
        attention: ``"se"``, ``"eca"`` or ``None``.
        se_ratio: SE hidden width as a fraction of the channels it gates (rounded to
            ``se_divisor``).
        se_divisor: rounding of the SE hidden width.
        attention_gain: constant multiplied into the attention gate (2 undoes sigmoid's 0.5).
        width_factor: multiplier of every width (RegNet rows: 0.75).
        bottleneck_ratio: bottleneck width as a fraction of the block output (``regnet``: input).
        head_channels: width of the final 1x1 conv (0: none).
        channel_divisor: every width is rounded to a multiple of this.
        regnet: RegNet-style blocks: bottleneck from the input width (ratio 1 in the very first
            block) and attention between the 3x3 and the last 1x1 conv, not after it.
        extra_conv: a second grouped 3x3 conv in the bottleneck (NFNets).
        activation: the gamma-scaled activation (`keras_nfnet.layers.GAMMAS`).
        gamma_placement: ``"conv"`` (timm's default: gamma folded into every conv, so the convs
            of the image and of the last stage output are scaled too and the final activation is
            plain) or ``"activation"`` (DeepMind's and timm's ``gamma_in_act``).
        padding: ``"symmetric"`` (PyTorch's ``k // 2`` on both sides) or ``"same"`` (TF's rule).
        numerics: ``"timm"`` (exact GELU, WS with ``var + 1e-5``) or ``"deepmind"`` (tanh GELU,
            WS with ``max(n var, 1e-4)``), as `keras_nfnet.NFNet`'s argument of that name.
        rounding: ``"timm"`` (`make_divisible` to ``channel_divisor``) or ``"deepmind"``
            (``int()`` of every width; grouped widths rounded down to whole groups, at least
            one; SE hidden ``max(1, int(C * se_ratio))``).
        shortcut_pool: the projecting shortcut of a strided block average-pools, then applies a
            1x1 conv (NFNets, NF-RegNets, all timm rows); ``False``: the 1x1 conv carries the
            stride itself (DeepMind's NF-ResNets).
        weight_standardization: ``False`` swaps every WS conv for a plain conv with a bias and
            the same He-normal initializer (the mean-shift ablation of the NF-ResNet paper).
        skipinit: a trainable zero-initialized skip gain per block; without it the last conv's
            gain starts at zero instead.
        zero_init_classifier: the classifier kernel starts at zero (DeepMind's NF-RegNets);
            otherwise N(0, 0.01).
        alpha: residual scale.
        dropout_rate: dropout before the classifier.
        stochdepth_rate: maximum stochastic-depth rate.
        train_size / test_size: the resolutions the published weights were trained and tested at.
        crop_pct / crop_mode / interpolation / mean / std: the pretrained preprocessing
            (timm's ``pretrained_cfg``).
    """

    depths: tuple[int, ...]
    channels: tuple[int, ...]
    stem: str = "3x3"
    stem_channels: int | tuple[int, ...] | None = None
    group_size: int | None = None
    attention: str | None = None
    se_ratio: float = 0.0625
    se_divisor: int = 8
    attention_gain: float = 2.0
    width_factor: float = 1.0
    bottleneck_ratio: float = 0.5
    head_channels: int = 0
    channel_divisor: int = 8
    regnet: bool = False
    extra_conv: bool = False
    activation: str = "silu"
    gamma_placement: str = "conv"
    padding: str = "symmetric"
    numerics: str = "timm"
    rounding: str = "timm"
    shortcut_pool: bool = True
    weight_standardization: bool = True
    skipinit: bool = False
    zero_init_classifier: bool = False
    alpha: float = 0.2
    dropout_rate: float = 0.0
    stochdepth_rate: float = 0.0
    train_size: int = 224
    test_size: int = 224
    crop_pct: float = 0.9
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        for field, accepted in (
            ("stem", STEMS),
            ("attention", ATTENTIONS),
            ("padding", PADDINGS),
            ("gamma_placement", GAMMA_PLACEMENTS),
            ("numerics", NUMERICS),
            ("rounding", ROUNDINGS),
        ):
            if getattr(self, field) not in accepted:
                raise ValueError(
                    f"NFSpec.{field} must be one of {accepted}. "
                    f"Received: {field}={getattr(self, field)!r}."
                )
        if len(self.depths) != len(self.channels) or not self.depths:
            raise ValueError(
                "NFSpec needs one depth per stage width. "
                f"Received: depths={self.depths}, channels={self.channels}."
            )

    def width(self, channels: float) -> int:
        """A width of the table, multiplied by ``width_factor`` and rounded by ``rounding``."""
        if self.rounding == "deepmind":
            return int(channels * self.width_factor)
        return make_divisible(channels * self.width_factor, self.channel_divisor)

    def bottleneck(self, channels: int, ratio: float) -> tuple[int, int]:
        """``(width, groups)`` of a bottleneck of ``channels * ratio``, whole groups."""
        size = self.group_size
        if self.rounding == "deepmind":
            width = int(channels * ratio)
            groups = max(1, width // size) if size else 1
            return (groups * size if size else width), groups
        width = make_divisible(channels * ratio, self.channel_divisor)
        groups = width // size if size else 1
        if size and size % self.channel_divisor == 0:
            width = size * groups
        return width, groups

    def se_width(self, channels: int) -> int:
        """Hidden width of the Squeeze-Excite that gates ``channels``."""
        if self.rounding == "deepmind":
            return max(1, int(channels * self.se_ratio))
        return make_divisible(channels * self.se_ratio, self.se_divisor, round_limit=0.0)

    @property
    def stem_widths(self) -> tuple[int, ...]:
        """The output width of every stem conv."""
        if isinstance(self.stem_channels, tuple):
            return self.stem_channels
        width = self.width(self.stem_channels or self.channels[0])
        if self.stem == "deep_quad":
            return (width // 8, width // 4, width // 2, width)
        return (width,)

    @property
    def stem_width(self) -> int:
        return self.stem_widths[-1]

    @property
    def stem_stride(self) -> int:
        return 2 if self.stem == "3x3" else 4

    @property
    def num_features(self) -> int:
        """Channels into the classifier."""
        if self.head_channels:
            return self.width(self.head_channels)
        return self.width(self.channels[-1])


@dataclasses.dataclass(frozen=True)
class NFBlockPlan:
    """Settings of one block, derived from a spec (`normfree_plan`)."""

    stage: int
    index: int
    k: int  # global block index
    in_channels: int
    out_channels: int
    width: int  # bottleneck width
    groups: int
    stride: int
    projection: bool
    beta: float
    stochdepth_rate: float
    attention_channels: int  # the channels the attention gates (mid for RegNet, out otherwise)
    se_hidden: int  # SE hidden width (0 without SE)
    eca_kernel: int  # ECA kernel size (0 without ECA)

    @property
    def name(self) -> str:
        return f"stage{self.stage}_block{self.index}"


def normfree_plan(spec: NFSpec, stochdepth_rate: float | None = None) -> list[NFBlockPlan]:
    """Per-block plan of a spec: the single source of block shapes, beta and drop rates.

    Example:
    >>> spec = NFSpec(depths=(2, 1), channels=(48, 104), regnet=True, attention="se",
    ...               se_ratio=0.5, group_size=8, bottleneck_ratio=2.25)
    >>> [(p.width, p.groups, p.stride, p.se_hidden) for p in normfree_plan(spec)]
    [(48, 6, 2, 24), (112, 14, 1, 56), (112, 14, 2, 56)]
    """
    rate = spec.stochdepth_rate if stochdepth_rate is None else stochdepth_rate
    betas = beta_schedule(spec.depths, spec.alpha)
    rates = stochdepth_schedule(spec.depths, rate)
    plan, in_channels, k = [], spec.stem_width, 0
    for stage, depth in enumerate(spec.depths):
        out_channels = spec.width(spec.channels[stage])
        stage_stride = 1 if stage == 0 and spec.stem_stride > 2 else 2
        for index in range(depth):
            stride = stage_stride if index == 0 else 1
            ratio = 1.0 if spec.regnet and k == 0 else spec.bottleneck_ratio
            width, groups = spec.bottleneck(in_channels if spec.regnet else out_channels, ratio)
            gated = width if spec.regnet else out_channels
            plan.append(
                NFBlockPlan(
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
                    attention_channels=gated,
                    se_hidden=spec.se_width(gated) if spec.attention == "se" else 0,
                    eca_kernel=eca_kernel_size(gated) if spec.attention == "eca" else 0,
                )
            )
            in_channels = out_channels
            k += 1
    return plan


def stem_plan(spec: NFSpec) -> list[tuple[int, int, int]]:
    """``(filters, kernel, stride)`` of each stem conv.

    Example:
    >>> stem_plan(NFSpec(depths=(1,), channels=(128,), stem="deep_quad"))
    [(16, 3, 2), (32, 3, 1), (64, 3, 1), (128, 3, 2)]
    """
    widths = spec.stem_widths
    if spec.stem == "deep_quad":
        return [(w, 3, s) for w, s in zip(widths, (2, 1, 1, 2))]
    return [(widths[0], 3 if spec.stem == "3x3" else 7, 2)]


def _ws_params(kernel: int, in_channels: int, out_channels: int, groups: int = 1) -> int:
    # kernel, per-channel gain and bias
    return kernel * kernel * (in_channels // groups) * out_channels + 2 * out_channels


def count_normfree_params(spec: NFSpec, classes: int = 1000, include_top: bool = True) -> int:
    """Exact parameter count of a spec, from `normfree_plan`, without allocating weights.

    Example:
    >>> count_normfree_params(NFSpec(depths=(1, 1), channels=(32, 64)), classes=10)
    20842
    """

    def conv(kernel, in_channels, out_channels, groups=1):
        params = _ws_params(kernel, in_channels, out_channels, groups)
        return params if spec.weight_standardization else params - out_channels  # no gain

    total, in_channels = 0, 3
    for filters, kernel, _ in stem_plan(spec):
        total += conv(kernel, in_channels, filters)
        in_channels = filters
    for p in normfree_plan(spec):
        total += conv(1, p.in_channels, p.width)
        total += (2 if spec.extra_conv else 1) * conv(3, p.width, p.width, p.groups)
        total += conv(1, p.width, p.out_channels)
        total += conv(1, p.in_channels, p.out_channels) if p.projection else 0
        if p.se_hidden:
            c = p.attention_channels
            total += 2 * c * p.se_hidden + p.se_hidden + c
        total += p.eca_kernel
        total += 1 if spec.skipinit else 0
    last = spec.width(spec.channels[-1])
    if spec.head_channels:
        total += conv(1, last, spec.num_features)
    if include_top:
        total += spec.num_features * classes + classes
    return total
