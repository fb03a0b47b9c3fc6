"""Checkpoint converters (timm safetensors and DeepMind Haiku pickles) and their name table.

Building a model from a checkpoint file is `keras_nfnet.convert.__main__.convert_checkpoint`
(it needs the builders, which need this package).
"""

from keras_nfnet.convert.checkpoint import (
    SOURCES,
    load_checkpoint_arrays,
    read_checkpoint,
)
from keras_nfnet.convert.deepmind import RestrictedUnpickler, read_deepmind
from keras_nfnet.convert.deepmind_layout import load_deepmind_arrays
from keras_nfnet.convert.nfnet_map import WeightEntry, assign_arrays, nfnet_weight_map
from keras_nfnet.convert.timm import load_timm_arrays, read_safetensors

__all__ = [
    "SOURCES",
    "RestrictedUnpickler",
    "WeightEntry",
    "assign_arrays",
    "load_checkpoint_arrays",
    "load_deepmind_arrays",
    "load_timm_arrays",
    "nfnet_weight_map",
    "read_checkpoint",
    "read_deepmind",
    "read_safetensors",
]
