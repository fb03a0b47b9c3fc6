"""timm ``dm_nfnet_f*`` safetensors -> Keras (checkpoints.md §2). No PyTorch needed."""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_nfnet.convert.nfnet_map import assign_arrays, nfnet_weight_map, timm_to_keras_layout
from keras_nfnet.models.nfnet import NFNetVariant


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file as a float32 NumPy array (executes no code)."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(os.fspath(path))
    except Exception as error:  # safetensors raises its own SafetensorError types
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable safetensors file: {error}"
        ) from error
    return {key: np.asarray(value, dtype="float32") for key, value in tensors.items()}


def load_timm_arrays(
    model: keras.Model,
    arrays: dict[str, np.ndarray],
    variant: str | NFNetVariant,
    include_top: bool = True,
) -> None:
    """Load a timm ``dm_nfnet`` state dict (as NumPy arrays) into an NFNet built for ``variant``.

    With ``include_top=False`` the classifier tensors ``head.fc.*`` are dropped; every other key
    must match exactly.
    """
    entries = nfnet_weight_map(variant, include_top=include_top)
    if not include_top:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("head.fc.")}
    by_key = {e.timm_key: e for e in entries}
    converted = {
        key: (timm_to_keras_layout(value, by_key[key].kind) if key in by_key else value)
        for key, value in arrays.items()
    }
    assign_arrays(model, entries, converted, key_of=lambda e: e.timm_key)
