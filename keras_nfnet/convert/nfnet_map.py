"""The checkpoint name table for NFNet-F models (checkpoints.md §3).

One `WeightEntry` per Keras weight: where it lives in the model, its DeepMind module path and
leaf, its timm key, and the kind of re-layout the timm tensor needs. A converter is this table
plus `assign_arrays`, never a search over names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import keras
import numpy as np

from keras_nfnet.models.nfnet import NFNetVariant, get_variant, nfnet_plan


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    layer: str  # Keras layer name
    attr: str  # attribute path of the variable on that layer, e.g. "fc0.kernel"
    dm_module: str
    dm_leaf: str
    timm_key: str
    kind: str  # conv_kernel | gain | vector | scalar | se_kernel | dense_kernel | eca_kernel

    @property
    def dm_key(self) -> str:
        return f"{self.dm_module}:{self.dm_leaf}"


def dm_block_module(k: int) -> str:
    """Haiku auto-name of block k: the first block is unsuffixed (checkpoints.md §1.6)."""
    return "NFNet/~/nf_block" if k == 0 else f"NFNet/~/nf_block_{k}"


def _ws(layer: str, dm_module: str, timm_prefix: str) -> Iterator[WeightEntry]:
    yield WeightEntry(layer, "kernel", dm_module, "w", f"{timm_prefix}.weight", "conv_kernel")
    yield WeightEntry(layer, "gain", dm_module, "gain", f"{timm_prefix}.gain", "gain")
    yield WeightEntry(layer, "bias", dm_module, "bias", f"{timm_prefix}.bias", "vector")


def nfnet_weight_map(variant: str | NFNetVariant, include_top: bool = True) -> list[WeightEntry]:
    """Every weight of an NFNet-F model with its DeepMind and timm names, in model order.

    Example:
    >>> entries = nfnet_weight_map("F0")
    >>> len(entries), entries[-2].dm_key, entries[-2].timm_key
    (233, 'NFNet/~/linear:w', 'head.fc.weight')
    """
    entries: list[WeightEntry] = []
    for j in range(4):
        entries += _ws(f"stem_conv{j}", f"NFNet/~/stem_conv{j}", f"stem.conv{j + 1}")
    for p in nfnet_plan(get_variant(variant)):
        blk, tp, name = dm_block_module(p.k), f"stages.{p.stage}.{p.index}", p.name
        if p.projection:
            entries += _ws(
                f"{name}_conv_shortcut", f"{blk}/~/conv_shortcut", f"{tp}.downsample.conv"
            )
        for keras_conv, timm_conv in (
            ("conv0", "conv1"),
            ("conv1", "conv2"),
            ("conv1b", "conv2b"),
            ("conv2", "conv3"),
        ):
            entries += _ws(f"{name}_{keras_conv}", f"{blk}/~/{keras_conv}", f"{tp}.{timm_conv}")
        for fc, linear, timm_fc in (("fc0", "linear", "fc1"), ("fc1", "linear_1", "fc2")):
            se = f"{blk}/~/squeeze_excite/~/{linear}"
            entries.append(
                WeightEntry(
                    f"{name}_se",
                    f"{fc}.kernel",
                    se,
                    "w",
                    f"{tp}.attn_last.{timm_fc}.weight",
                    "se_kernel",
                )
            )
            entries.append(
                WeightEntry(
                    f"{name}_se", f"{fc}.bias", se, "b", f"{tp}.attn_last.{timm_fc}.bias", "vector"
                )
            )
        entries.append(
            WeightEntry(
                f"{name}_skip_gain", "skip_gain", blk, "skip_gain", f"{tp}.skipinit_gain", "scalar"
            )
        )
    entries += _ws("final_conv", "NFNet/~/final_conv", "final_conv")
    if include_top:
        entries.append(
            WeightEntry(
                "predictions", "kernel", "NFNet/~/linear", "w", "head.fc.weight", "dense_kernel"
            )
        )
        entries.append(
            WeightEntry("predictions", "bias", "NFNet/~/linear", "b", "head.fc.bias", "vector")
        )
    return entries


def timm_to_keras_layout(array: np.ndarray, kind: str) -> np.ndarray:
    """Re-lay a timm (PyTorch: OIHW kernels, (out, 1, 1, 1) gains) tensor out as its Keras weight.

    The tensor must already have the exact timm shape of its Keras weight (`timm_shape`); a
    reshape here would otherwise accept any tensor with the right number of elements.
    """
    if kind == "conv_kernel":
        return array.transpose(2, 3, 1, 0)
    if kind == "gain":
        return array.reshape(-1)
    if kind == "se_kernel":
        return array.reshape(array.shape[0], -1).T
    if kind == "dense_kernel":
        return array.T
    if kind == "eca_kernel":
        return array.reshape(-1)
    return array


def timm_shape(keras_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The exact shape timm stores a Keras weight of ``keras_shape`` and ``kind`` in.

    Example:
    >>> timm_shape((3, 3, 8, 16), "conv_kernel"), timm_shape((16,), "gain")
    ((16, 8, 3, 3), (16, 1, 1, 1))
    >>> timm_shape((256, 128), "se_kernel"), timm_shape((), "scalar")
    ((128, 256, 1, 1), ())
    """
    shape = tuple(int(d) for d in keras_shape)
    if kind == "conv_kernel":
        height, width, fan_in, filters = shape
        return (filters, fan_in, height, width)
    if kind == "gain":
        return (*shape, 1, 1, 1)
    if kind == "se_kernel":
        return (shape[1], shape[0], 1, 1)
    if kind == "dense_kernel":
        return (shape[1], shape[0])
    if kind == "eca_kernel":
        return (1, 1, *shape)
    return shape


CHECKPOINT_DTYPE = np.dtype("float32")  # both sources publish float32 arrays only


def check_dtype(key: str, array: np.ndarray) -> None:
    """Refuse a checkpoint tensor that is not float32, naming its key and dtype."""
    if array.dtype != CHECKPOINT_DTYPE:
        raise ValueError(
            f"Tensor {key!r} has dtype {array.dtype}; checkpoint tensors must be "
            f"{CHECKPOINT_DTYPE} (the dtype both sources publish)."
        )


def keras_variable(model: keras.Model, entry: WeightEntry):
    obj = model.get_layer(entry.layer)
    for part in entry.attr.split("."):
        obj = getattr(obj, part)
    return obj


def assign_arrays(
    model: keras.Model,
    entries: list[WeightEntry],
    arrays: Mapping[str, np.ndarray],
    key_of=lambda e: e.dm_key,
) -> None:
    """Assign ``arrays[key_of(entry)]`` to every entry's variable, strictly.

    Raises ``ValueError`` naming the key for a missing, extra, mis-shaped, non-float32 or
    non-finite tensor, and if any weight of the model would be left unfilled. Nothing is
    assigned unless every check passes. Arrays are never cast: a checkpoint of another dtype is
    refused, not silently converted.
    """
    expected = {key_of(e): e for e in entries}
    missing = [k for k in expected if k not in arrays]
    extra = [k for k in arrays if k not in expected]
    if missing or extra:
        raise ValueError(
            "Checkpoint does not match the model. "
            + (f"Missing {len(missing)} tensor(s), first: {missing[:5]}. " if missing else "")
            + (f"Unexpected {len(extra)} tensor(s), first: {extra[:5]}." if extra else "")
        )
    pending = []
    for key, entry in expected.items():
        variable = keras_variable(model, entry)
        value = np.asarray(arrays[key])
        check_dtype(key, value)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Shape mismatch for {key!r} -> {entry.layer}/{entry.attr}: checkpoint has "
                f"{tuple(value.shape)}, the model expects {tuple(variable.shape)}."
            )
        if not np.isfinite(value).all():
            raise ValueError(f"Tensor {key!r} contains non-finite values.")
        pending.append((variable, value))
    filled = {id(v) for v, _ in pending}
    unfilled = [w.path for w in model.weights if id(w) not in filled]
    if unfilled:
        raise ValueError(f"The checkpoint leaves model weights unfilled: {unfilled[:5]}.")
    for variable, value in pending:
        variable.assign(value)
