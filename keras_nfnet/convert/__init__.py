"""Checkpoint converters (timm safetensors and DeepMind Haiku pickles) and their name table."""

from keras_nfnet.convert.nfnet_map import WeightEntry, assign_arrays, nfnet_weight_map
from keras_nfnet.convert.timm import load_timm_arrays, read_safetensors

__all__ = [
    "WeightEntry",
    "assign_arrays",
    "load_timm_arrays",
    "nfnet_weight_map",
    "read_safetensors",
]
