"""Strict loading by name table: source layouts -> Keras layouts, and all-or-nothing assignment.

The table itself (`WeightEntry`, one per Keras weight, with its DeepMind and timm names) is
`keras_nfnet.convert.normfree_map`; this module re-lays timm tensors out (`timm_to_keras_layout`,
`timm_shape`) and assigns arrays only when every one of them fits (`assign_arrays`).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from keras_nfnet.architecture.rows import resolve_spec
from keras_nfnet.convert.normfree_map import WeightEntry, dm_block_module, normfree_weight_map

__all__ = [
    "WeightEntry",
    "assign_arrays",
    "check_dtype",
    "dm_block_module",
    "keras_variable",
    "nfnet_weight_map",
    "timm_shape",
    "timm_to_keras_layout",
]


def nfnet_weight_map(model, include_top: bool = True, classes: int = 1000) -> list[WeightEntry]:
    """`normfree_weight_map` of a DeepMind F variant (``"F0"``, an `NFNetVariant`) or any model
    `keras_nfnet.architecture.rows.resolve_spec` accepts.

    Example:
    >>> entries = nfnet_weight_map("F0")
    >>> len(entries), entries[-2].dm_key, entries[-2].timm_key
    (233, 'NFNet/~/linear:w', 'head.fc.weight')
    """
    return normfree_weight_map(resolve_spec(model), include_top, classes)


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
