"""One entry point for both checkpoint sources: read, load into a model, write a Keras file.

``source`` is ``"timm"`` (safetensors from the Hugging Face hub, checkpoints.md §2) or
``"deepmind"`` (the Haiku pickles, read with the restricted unpickler, §1.4).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from keras_nfnet.atomic import atomic_path
from keras_nfnet.convert.deepmind import (
    expected_deepmind_shapes,
    load_deepmind_arrays,
    read_deepmind,
)
from keras_nfnet.convert.timm import load_timm_arrays, read_safetensors
from keras_nfnet.models.nfnet import NFNetVariant

SOURCES = ("timm", "deepmind")
# The classifier bias of each source, to read the number of classes off a file.
_HEAD_BIAS = {"timm": "head.fc.bias", "deepmind": "NFNet/~/linear:b"}


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(
            f"Unknown checkpoint source {source!r}. Accepted: {', '.join(map(repr, SOURCES))}."
        )
    return source


def read_checkpoint(
    source: str, path: str | os.PathLike, variant: str | NFNetVariant | None = None, classes=1000
) -> dict[str, np.ndarray]:
    """Read every tensor of a checkpoint file, keyed by the source's own names, dtypes kept.

    With ``variant``, a DeepMind pickle is read against that variant's layout with ``classes``
    outputs (`expected_deepmind_shapes`): it can allocate only those arrays. Without it the
    generic bounds of `keras_nfnet.convert.deepmind` apply.
    """
    if check_source(source) == "timm":
        return read_safetensors(path)
    expected = None if variant is None else expected_deepmind_shapes(variant, classes=classes)
    return read_deepmind(path, expected)


def checkpoint_classes(source: str, arrays: Mapping[str, np.ndarray]) -> int:
    """The number of classes of a checkpoint's classifier."""
    key = _HEAD_BIAS[check_source(source)]
    if key not in arrays:
        raise ValueError(f"The checkpoint has no classifier bias {key!r}.")
    return int(arrays[key].shape[0])


def load_checkpoint_arrays(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    source: str,
    variant: str | NFNetVariant,
    include_top: bool = True,
) -> None:
    """Fill every weight of ``model`` from ``arrays``, strictly (see `assign_arrays`)."""
    if check_source(source) == "timm":
        load_timm_arrays(model, dict(arrays), variant, include_top=include_top)
    else:
        load_deepmind_arrays(model, arrays, variant, include_top=include_top)


def save_weights_atomic(model: keras.Model, path: str | os.PathLike) -> str:
    """``model.save_weights(path)``, atomically (`keras_nfnet.atomic`); creates the folder."""
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Keras weights files end in '.weights.h5'. Received: {path!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


def convert_checkpoint(
    source: str,
    variant: str | NFNetVariant,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    include_top: bool = True,
) -> str:
    """Convert a timm or DeepMind NFNet checkpoint into a Keras ``.weights.h5`` file.

    The output loads with ``keras_nfnet.NFNet(variant, include_top=..., weights=output_path)``
    (with ``classes`` equal to the checkpoint's, 1000 for the ImageNet files).

    Example:
    >>> convert_checkpoint("timm", "F0", "model.safetensors", "f0.weights.h5")  # doctest: +SKIP
    'f0.weights.h5'
    """
    from keras_nfnet.models.nfnet import NFNet

    arrays = read_checkpoint(source, input_path)
    model = NFNet(
        variant,
        include_top=include_top,
        classes=checkpoint_classes(source, arrays) if include_top else 1000,
    )
    load_checkpoint_arrays(model, arrays, source, variant, include_top=include_top)
    return save_weights_atomic(model, output_path)
