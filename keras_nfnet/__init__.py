"""keras_nfnet: Normalizer-Free Networks (NFNets) for Keras 3."""

from keras_nfnet import agc, layers
from keras_nfnet.agc_model import AGCModel
from keras_nfnet.models import (
    NFNET_VARIANTS,
    NFNet,
    NFNetF0,
    NFNetF1,
    NFNetF2,
    NFNetF3,
    NFNetF4,
    NFNetF5,
    NFNetF6,
    NFNetF7,
    NFNetVariant,
    count_nfnet_params,
    decode_predictions,
    nfnet_plan,
    preprocess_input,
)

__version__ = "0.1.0"

__all__ = [
    "AGCModel",
    "NFNET_VARIANTS",
    "NFNet",
    "NFNetF0",
    "NFNetF1",
    "NFNetF2",
    "NFNetF3",
    "NFNetF4",
    "NFNetF5",
    "NFNetF6",
    "NFNetF7",
    "NFNetVariant",
    "agc",
    "count_nfnet_params",
    "decode_predictions",
    "layers",
    "nfnet_plan",
    "preprocess_input",
]
