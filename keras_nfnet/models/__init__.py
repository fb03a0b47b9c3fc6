"""Model builders: they know layers, not training."""

from keras_nfnet.models.imagenet_utils import decode_predictions, preprocess_input
from keras_nfnet.models.nfnet import (
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
    nfnet_plan,
)

__all__ = [
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
    "count_nfnet_params",
    "decode_predictions",
    "nfnet_plan",
    "preprocess_input",
]
