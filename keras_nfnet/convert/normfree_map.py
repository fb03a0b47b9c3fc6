"""The name table of every Normalizer-Free model: one row per Keras weight, one column per layout.

`normfree_weight_map(spec)` lists, from `normfree_plan`, every Keras weight with its name in each
source layout: the Keras layer and attribute, the DeepMind Haiku module and leaf (F models, the
only DeepMind layout with published files, docs/checkpoints.md §1.6), the timm state-dict key,
and the re-layout kind of the timm tensor. Loading a checkpoint is this table plus
`keras_nfnet.convert.nfnet_map.assign_arrays` (DeepMind) or
`keras_nfnet.convert.timm.load_timm_entries` (timm), never a search over names.

=====================================  ====================================  =====================
Keras layer                            DeepMind module                       timm module
=====================================  ====================================  =====================
``stem_conv{j}`` / ``stem_conv``       ``NFNet/~/stem_conv{j}``              ``stem.conv{j+1}`` /
                                                                             ``stem.conv``
``stage{s}_block{b}_conv0/1/1b/2``     ``<blk>/~/conv0/1/1b/2``              ``stages.{s}.{b}.``
                                                                             ``conv1/2/2b/3``
``stage{s}_block{b}_conv_shortcut``    ``<blk>/~/conv_shortcut``             ``....downsample.conv``
``stage{s}_block{b}_se`` (fc0/fc1)     ``<blk>/~/squeeze_excite/~/linear``   ``....attn_last.fc1/2``
                                       (``linear_1``)                        (``attn.`` in RegNets)
``stage{s}_block{b}_eca``              (none)                                ``....attn_last.conv``
``stage{s}_block{b}_skip_gain``        ``<blk>:skip_gain``                   ``....skipinit_gain``
``final_conv``, ``predictions``        ``NFNet/~/final_conv``, ``/~/linear``  ``final_conv``,
                                                                             ``head.fc``
=====================================  ====================================  =====================

``<blk>`` is ``NFNet/~/nf_block`` for the first block and ``NFNet/~/nf_block_{k}`` after, with
``k`` the global block index.
"""

from __future__ import annotations

import dataclasses

from keras_nfnet.architecture.spec import NFSpec, normfree_plan, stem_plan


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    layer: str  # Keras layer name
    attr: str  # attribute path of the variable on that layer, e.g. "fc0.kernel"
    dm_module: str  # "" where DeepMind published no file of this layout
    dm_leaf: str
    timm_key: str
    kind: str  # conv_kernel | gain | vector | scalar | se_kernel | dense_kernel | eca_kernel
    shape: tuple[int, ...] = ()  # the Keras variable's shape (DeepMind arrays have it too)

    @property
    def dm_key(self) -> str:
        return f"{self.dm_module}:{self.dm_leaf}"


def dm_block_module(k: int) -> str:
    """Haiku auto-name of block k: the first block is unsuffixed (docs/checkpoints.md §1.6)."""
    return "NFNet/~/nf_block" if k == 0 else f"NFNet/~/nf_block_{k}"


def normfree_weight_map(spec: NFSpec, include_top: bool = True, classes: int = 1000):
    """Every weight of an `NFSpec` model with its names and shape, in model order.

    ``classes`` sets the classifier's shape (the names do not depend on it).

    Example:
    >>> from keras_nfnet.architecture.rows import get_spec
    >>> entries = normfree_weight_map(get_spec("eca_nfnet_l0"))
    >>> len(entries), entries[-3].layer, entries[-3].timm_key, entries[-3].shape
    (185, 'final_conv', 'final_conv.bias', (2304,))
    >>> f0 = normfree_weight_map(get_spec("dm_nfnet_f0"))
    >>> len(f0), f0[-2].dm_key, f0[-2].timm_key, f0[-2].shape
    (233, 'NFNet/~/linear:w', 'head.fc.weight', (3072, 1000))
    """
    deepmind = spec.stem == "deep_quad" and spec.skipinit  # DeepMind's published F layout
    entries: list[WeightEntry] = []

    def dm(module: str) -> str:
        return module if deepmind else ""

    def ws(layer, dm_module, timm_prefix, kernel, fan_in, filters) -> None:
        dm_module = dm(dm_module)
        entries.append(
            WeightEntry(
                layer,
                "kernel",
                dm_module,
                "w",
                f"{timm_prefix}.weight",
                "conv_kernel",
                (kernel, kernel, fan_in, filters),
            )
        )
        if spec.weight_standardization:
            entries.append(
                WeightEntry(
                    layer, "gain", dm_module, "gain", f"{timm_prefix}.gain", "gain", (filters,)
                )
            )
        entries.append(
            WeightEntry(
                layer, "bias", dm_module, "bias", f"{timm_prefix}.bias", "vector", (filters,)
            )
        )

    def dense(layer, attr, dm_module, leaf, timm_key, kind, shape) -> None:
        entries.append(WeightEntry(layer, attr, dm(dm_module), leaf, timm_key, kind, shape))

    stems = stem_plan(spec)
    in_channels = 3
    for j, (filters, kernel, _) in enumerate(stems):
        deep = len(stems) > 1
        ws(
            f"stem_conv{j}" if deep else "stem_conv",
            f"NFNet/~/stem_conv{j}",
            f"stem.conv{j + 1}" if deep else "stem.conv",
            kernel,
            in_channels,
            filters,
        )
        in_channels = filters
    attn = "attn" if spec.regnet else "attn_last"
    for p in normfree_plan(spec):
        blk, tp, name = dm_block_module(p.k), f"stages.{p.stage}.{p.index}", p.name
        if p.projection:
            ws(
                f"{name}_conv_shortcut",
                f"{blk}/~/conv_shortcut",
                f"{tp}.downsample.conv",
                1,
                p.in_channels,
                p.out_channels,
            )
        convs = [("conv0", "conv1", 1, p.in_channels), ("conv1", "conv2", 3, p.width // p.groups)]
        if spec.extra_conv:
            convs.append(("conv1b", "conv2b", 3, p.width // p.groups))
        for keras_conv, timm_conv, kernel, fan_in in convs:
            ws(
                f"{name}_{keras_conv}",
                f"{blk}/~/{keras_conv}",
                f"{tp}.{timm_conv}",
                kernel,
                fan_in,
                p.width,
            )
        ws(f"{name}_conv2", f"{blk}/~/conv2", f"{tp}.conv3", 1, p.width, p.out_channels)
        c = p.attention_channels
        if spec.attention == "se":
            for fc, linear, timm_fc, shape in (
                ("fc0", "linear", "fc1", (c, p.se_hidden)),
                ("fc1", "linear_1", "fc2", (p.se_hidden, c)),
            ):
                se, key = f"{blk}/~/squeeze_excite/~/{linear}", f"{tp}.{attn}.{timm_fc}"
                dense(f"{name}_se", f"{fc}.kernel", se, "w", f"{key}.weight", "se_kernel", shape)
                dense(f"{name}_se", f"{fc}.bias", se, "b", f"{key}.bias", "vector", shape[-1:])
        elif spec.attention == "eca":
            dense(
                f"{name}_eca",
                "kernel",
                "",
                "",
                f"{tp}.{attn}.conv.weight",
                "eca_kernel",
                (p.eca_kernel,),
            )
        if spec.skipinit:
            dense(
                f"{name}_skip_gain",
                "skip_gain",
                blk,
                "skip_gain",
                f"{tp}.skipinit_gain",
                "scalar",
                (),
            )
    if spec.head_channels:
        last = spec.width(spec.channels[-1])
        ws("final_conv", "NFNet/~/final_conv", "final_conv", 1, last, spec.num_features)
    if include_top:
        shape = (spec.num_features, int(classes))
        dense(
            "predictions", "kernel", "NFNet/~/linear", "w", "head.fc.weight", "dense_kernel", shape
        )
        dense("predictions", "bias", "NFNet/~/linear", "b", "head.fc.bias", "vector", shape[-1:])
    return entries
