"""One entry point for both checkpoint sources: read, load into a model, write a Keras file.

``source`` is ``"timm"`` (safetensors from the Hugging Face hub, docs/checkpoints.md §2) or
``"deepmind"`` (the Haiku pickles, read with the restricted unpickler, §1.4). ``variant`` is
anything `keras_nfnet.architecture.rows.resolve_spec` accepts. Building a model and writing a
Keras file is `keras_nfnet.convert.__main__.convert_checkpoint`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from keras_nfnet.atomic import atomic_path
from keras_nfnet.checks import check_choice
from keras_nfnet.convert.deepmind import read_deepmind
from keras_nfnet.convert.deepmind_layout import expected_deepmind_shapes, load_deepmind_arrays
from keras_nfnet.convert.timm import load_timm_arrays, read_safetensors

SOURCES = ("timm", "deepmind")
# The classifier bias of each source, to read the number of classes off a file.
_HEAD_BIAS = {"timm": "head.fc.bias", "deepmind": "NFNet/~/linear:b"}


def check_source(source: str) -> str:
    return check_choice("checkpoint source", source, SOURCES)


def read_checkpoint(
    source: str, path: str | os.PathLike, variant=None, classes: int = 1000
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
    variant,
    include_top: bool = True,
) -> None:
    """Fill every weight of ``model`` from ``arrays``, strictly (see `assign_arrays`)."""
    if check_source(source) == "timm":
        load_timm_arrays(model, dict(arrays), variant, include_top=include_top)
    else:
        load_deepmind_arrays(model, arrays, variant, include_top=include_top)


def load_weights_file(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.load_weights(path)``, with an error that names the file and what it must be.

    Keras reports an unreadable file as a bare h5py ``OSError`` without the path; this says which
    file failed, why, and what a weights file for this model is.
    """
    path = os.fspath(path)
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Could not load weights from {path!r} into {model.name!r}: "
            f"{type(error).__name__}: {error}. Expected a Keras '.weights.h5' file written by "
            "model.save_weights (or python -m keras_nfnet.convert) from a model built with the "
            "same arguments; the file may be truncated or of another format."
        ) from None


def save_weights_atomic(model: keras.Model, path: str | os.PathLike) -> str:
    """``model.save_weights(path)``, atomically (`keras_nfnet.atomic`); creates the folder."""
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Keras weights files end in '.weights.h5'. Received: {path!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
    return path


# What ``weights=<path>`` reads as a checkpoint of each source (any other path: a Keras file).
CHECKPOINT_SUFFIXES = (".safetensors", ".npz")


def load_checkpoint_file(
    model: keras.Model, path: str | os.PathLike, spec, include_top: bool = True
) -> None:
    """Fill ``model`` (built from ``spec``) from a timm ``.safetensors`` or DeepMind ``.npz``.

    The file is read strictly: a DeepMind file against the model's own layout (only its shapes
    are allocated; without the classifier, whose width the file may choose, under the generic
    bounds), a timm file with exact keys, shapes and dtypes (`load_timm_entries`).
    """
    path = os.fspath(path)
    source = "timm" if path.endswith(".safetensors") else "deepmind"
    if include_top:
        arrays = read_checkpoint(source, path, spec, model.get_layer("predictions").units)
    else:
        arrays = read_checkpoint(source, path)
    load_checkpoint_arrays(model, arrays, source, spec, include_top=include_top)
