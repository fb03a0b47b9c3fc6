"""keras_nfnet: Normalizer-Free Networks (NFNets) for Keras 3."""

import keras_nfnet.quiet  # noqa: F401  (first, before keras: quiets TensorFlow start-up lines)
from keras_nfnet import agc, export, layers, models, optimizers, weights
from keras_nfnet.agc_model import AGCModel
from keras_nfnet.architecture.rows import MODEL_SPECS, NF_SPECS, get_spec
from keras_nfnet.architecture.spec import NFSpec, count_normfree_params
from keras_nfnet.models import *  # noqa: F403  (the builders; models.__all__ lists them)
from keras_nfnet.zoo import create_model, feature_info, list_models

__version__ = "0.1.0"

__all__ = [
    *models.__all__,
    "MODEL_SPECS",
    "NF_SPECS",
    "AGCModel",
    "NFSpec",
    "agc",
    "count_normfree_params",
    "create_model",
    "export",
    "feature_info",
    "get_spec",
    "layers",
    "list_models",
    "models",
    "optimizers",
    "weights",
]
