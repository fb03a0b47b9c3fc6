"""The timm name table of every `NFSpec` model (``keras_nfnet.models.spec``).

One `WeightEntry` per Keras weight, from `normfree_plan`: the Keras layer and attribute, the
timm state-dict key and the re-layout kind. Loading a timm state dict is this table plus
`keras_nfnet.convert.timm.load_timm_entries`, never a search over names.

=====================================  ===============================================
Keras layer                            timm module
=====================================  ===============================================
``stem_conv{j}`` / ``stem_conv``       ``stem.conv{j+1}`` (deep stem) / ``stem.conv``
``stage{s}_block{b}_conv0/1/1b/2``     ``stages.{s}.{b}.conv1/conv2/conv2b/conv3``
``stage{s}_block{b}_conv_shortcut``    ``stages.{s}.{b}.downsample.conv``
``stage{s}_block{b}_se`` (fc0/fc1)     ``....attn_last.fc1/fc2`` (``attn.`` in RegNets)
``stage{s}_block{b}_eca``              ``....attn_last.conv`` (``attn.`` in RegNets)
``stage{s}_block{b}_skip_gain``        ``....skipinit_gain``
``final_conv``, ``predictions``        ``final_conv``, ``head.fc``
=====================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterator

from keras_nfnet.convert.nfnet_map import WeightEntry
from keras_nfnet.models.spec import NFSpec, get_spec, normfree_plan, stem_plan


def _ws(layer: str, timm_prefix: str) -> Iterator[WeightEntry]:
    yield WeightEntry(layer, "kernel", "", "", f"{timm_prefix}.weight", "conv_kernel")
    yield WeightEntry(layer, "gain", "", "", f"{timm_prefix}.gain", "gain")
    yield WeightEntry(layer, "bias", "", "", f"{timm_prefix}.bias", "vector")


def normfree_weight_map(spec: str | NFSpec, include_top: bool = True) -> list[WeightEntry]:
    """Every weight of an `NFSpec` model with its timm key, in model order.

    Example:
    >>> entries = normfree_weight_map("eca_nfnet_l0")
    >>> len(entries), entries[-3].layer, entries[-3].timm_key
    (185, 'final_conv', 'final_conv.bias')
    """
    spec = get_spec(spec)
    stems = stem_plan(spec)
    entries: list[WeightEntry] = []
    for j in range(len(stems)):
        deep = len(stems) > 1
        entries += _ws(
            f"stem_conv{j}" if deep else "stem_conv", f"stem.conv{j + 1}" if deep else "stem.conv"
        )
    attn = "attn" if spec.regnet else "attn_last"
    for p in normfree_plan(spec):
        name, tp = p.name, f"stages.{p.stage}.{p.index}"
        if p.projection:
            entries += _ws(f"{name}_conv_shortcut", f"{tp}.downsample.conv")
        convs = [("conv0", "conv1"), ("conv1", "conv2")]
        convs += [("conv1b", "conv2b")] if spec.extra_conv else []
        for keras_conv, timm_conv in [*convs, ("conv2", "conv3")]:
            entries += _ws(f"{name}_{keras_conv}", f"{tp}.{timm_conv}")
        if spec.attention == "se":
            for fc, timm_fc in (("fc0", "fc1"), ("fc1", "fc2")):
                key = f"{tp}.{attn}.{timm_fc}"
                entries.append(
                    WeightEntry(f"{name}_se", f"{fc}.kernel", "", "", f"{key}.weight", "se_kernel")
                )
                entries.append(
                    WeightEntry(f"{name}_se", f"{fc}.bias", "", "", f"{key}.bias", "vector")
                )
        elif spec.attention == "eca":
            entries.append(
                WeightEntry(
                    f"{name}_eca", "kernel", "", "", f"{tp}.{attn}.conv.weight", "eca_kernel"
                )
            )
        if spec.skipinit:
            entries.append(
                WeightEntry(
                    f"{name}_skip_gain", "skip_gain", "", "", f"{tp}.skipinit_gain", "scalar"
                )
            )
    if spec.head_channels:
        entries += _ws("final_conv", "final_conv")
    if include_top:
        entries.append(
            WeightEntry("predictions", "kernel", "", "", "head.fc.weight", "dense_kernel")
        )
        entries.append(WeightEntry("predictions", "bias", "", "", "head.fc.bias", "vector"))
    return entries
