"""DeepMind's layout of a model: the ``{"module:leaf": shape}`` a file must have, and loading it.

The reader itself (`keras_nfnet.convert.deepmind`) needs only NumPy, so it runs under a memory
cap without Keras; this module joins it to the name table (`keras_nfnet.convert.normfree_map`).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from keras_nfnet.architecture.rows import resolve_spec
from keras_nfnet.convert.nfnet_map import assign_arrays
from keras_nfnet.convert.normfree_map import WeightEntry, normfree_weight_map


def expected_deepmind_shapes(
    model, include_top: bool = True, classes: int = 1000
) -> dict[str, tuple[int, ...]]:
    """The ``{"module:leaf": shape}`` layout of a DeepMind NFNet file, from the name table alone.

    ``model`` is anything `keras_nfnet.architecture.rows.resolve_spec` accepts (``"F0"``, an
    `NFNetVariant`, ``"dm_nfnet_f0"``, an `NFSpec` of DeepMind's F layout). DeepMind arrays have
    the Keras variables' shapes (HWIO kernels, ``(in, out)`` dense kernels, ``(out,)`` gains and
    biases, ``()`` skip gains); no model is built here. The published files always hold the
    ImageNet classifier: to read one, pass ``include_top=True`` and ``classes=1000`` whatever
    model it will fill (`load_deepmind_arrays` drops the head).

    Example:
    >>> shapes = expected_deepmind_shapes("F0")
    >>> len(shapes), shapes["NFNet/~/stem_conv0:w"], shapes["NFNet/~/nf_block:skip_gain"]
    (233, (3, 3, 3, 16), ())
    >>> shapes["NFNet/~/nf_block_3/~/conv1:w"], shapes["NFNet/~/linear:w"]
    ((3, 3, 128, 768), (3072, 1000))
    """
    entries = deepmind_entries(model, include_top, classes)
    return {e.dm_key: e.shape for e in entries}


def deepmind_entries(model, include_top: bool = True, classes: int = 1000) -> list[WeightEntry]:
    """The name table of ``model`` in DeepMind's layout, or a ValueError if it has none."""
    entries = normfree_weight_map(resolve_spec(model), include_top, classes)
    if not all(e.dm_module for e in entries):
        raise ValueError(
            "DeepMind published files of the NFNet-F layout only (deep stem, skip gains, SE): "
            "this model has no DeepMind layout. Use a timm '.safetensors' state dict or a "
            "'.weights.h5' file instead."
        )
    return entries


def load_deepmind_arrays(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    variant,
    include_top: bool = True,
) -> None:
    """Load DeepMind arrays (keys ``"module:leaf"``, from `read_deepmind`) into an NFNet of
    ``variant`` (anything `keras_nfnet.architecture.rows.resolve_spec` accepts).

    No re-layout is needed: DeepMind kernels are already HWIO / (in, out) (docs/checkpoints.md
    §1.9).
    With ``include_top=False`` the classifier ``NFNet/~/linear`` is dropped; every other key
    must match exactly (`assign_arrays`).
    """
    if not include_top:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("NFNet/~/linear:")}
    classes = model.get_layer("predictions").units if include_top else 1000
    assign_arrays(model, deepmind_entries(variant, include_top, classes), arrays)
