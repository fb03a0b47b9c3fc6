"""timm safetensors state dicts -> Keras, by name table (docs/checkpoints.md §2). No PyTorch."""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from keras_nfnet.convert.nfnet_map import (
    WeightEntry,
    assign_arrays,
    check_dtype,
    keras_variable,
    nfnet_weight_map,
    timm_shape,
    timm_to_keras_layout,
)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file as a NumPy array, dtype kept (executes no code)."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(os.fspath(path))
    except Exception as error:  # safetensors raises its own SafetensorError types
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable safetensors file: {error}"
        ) from error
    return {key: np.asarray(value) for key, value in tensors.items()}


def load_timm_arrays(
    model: keras.Model,
    arrays: dict[str, np.ndarray],
    variant,
    include_top: bool = True,
) -> None:
    """Load a timm state dict (as NumPy arrays) into a model built for ``variant`` (anything
    `keras_nfnet.architecture.rows.resolve_spec` accepts: ``"F0"``, ``"eca_nfnet_l0"`` …).

    With ``include_top=False`` the classifier tensors ``head.fc.*`` are dropped; every other key
    must match exactly, and every tensor must have its exact timm shape (`timm_shape`) and dtype
    before it is re-laid out.
    """
    load_timm_entries(model, arrays, nfnet_weight_map(variant, include_top=include_top))


def load_timm_entries(
    model: keras.Model, arrays: Mapping[str, np.ndarray], entries: list[WeightEntry]
) -> None:
    """Fill every weight of ``model`` from a timm state dict, by the name table ``entries``.

    Without a classifier in ``entries`` the state dict's ``head.fc.*`` tensors are dropped; every
    other key must match exactly, and every tensor must have its exact timm shape (`timm_shape`)
    and dtype before it is re-laid out (`assign_arrays` then checks values and completeness).
    """
    if not any(e.layer == "predictions" for e in entries):
        arrays = {k: v for k, v in arrays.items() if not k.startswith("head.fc.")}
    converted = dict(arrays)
    for entry in entries:
        if entry.timm_key not in arrays:
            continue  # assign_arrays names every missing key at once
        value = np.asarray(arrays[entry.timm_key])
        check_dtype(entry.timm_key, value)
        want = timm_shape(keras_variable(model, entry).shape, entry.kind)
        if tuple(value.shape) != want:
            raise ValueError(
                f"Shape mismatch for {entry.timm_key!r} -> {entry.layer}/{entry.attr}: "
                f"checkpoint has {tuple(value.shape)}, timm's layout of this model is {want}."
            )
        converted[entry.timm_key] = timm_to_keras_layout(value, entry.kind)
    assign_arrays(model, entries, converted, key_of=lambda e: e.timm_key)
