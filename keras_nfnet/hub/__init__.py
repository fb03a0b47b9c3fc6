"""keras-hub integration: NF models as keras-hub backbones, classifiers and presets.

Needs the ``hub`` extra (``pip install "keras-nfnet[hub]"``: keras-hub 0.32 and the full
``tensorflow``; not combinable with the ``cpu`` extra). Importing this package registers

* `NFNetBackbone`: any `keras_nfnet.list_models` row as a `keras_hub.models.FeaturePyramidBackbone`
  (``pyramid_outputs`` ``P1`` … ``P5``), usable as the ``image_encoder`` of keras-hub's
  RetinaNet and DeepLabV3;
* `NFNetImageClassifier`: a `keras_hub.models.ImageClassifier` trained with Adaptive Gradient
  Clipping (`keras_nfnet.agc_model.AGCTrainStep`);
* `NFNetImageConverter` and `NFNetImageClassifierPreprocessor`: each row's pretrained
  preprocessing (timm's eval transform, the row's mean and std);
* the built-in presets (`keras_nfnet.hub.presets.PRESETS`: ``nfnet_f0_imagenet``,
  ``eca_nfnet_l0_imagenet`` …), and ``from_preset("hf://timm/<repo>")`` for timm's NF repos;

so that ``save_to_preset`` / ``keras_hub.models.ImageClassifier.from_preset(dir)`` and
``keras_hub.models.Backbone.from_preset(dir)`` return these classes.

Example:
>>> import numpy as np
>>> from keras_nfnet.hub import NFNetBackbone, NFNetImageClassifier
>>> classifier = NFNetImageClassifier(NFNetBackbone(variant="test_nfnet"), num_classes=4)
>>> classifier.predict(np.zeros((1, 64, 64, 3)), verbose=0).shape
(1, 4)
>>> "eca_nfnet_l0_imagenet" in NFNetImageClassifier.presets
True
"""

try:
    import keras_hub  # noqa: F401
except ImportError as error:
    raise ImportError(
        'keras_nfnet.hub needs keras-hub: pip install "keras-nfnet[hub]" (keras-hub 0.32 with '
        f"the full tensorflow package, not tensorflow-cpu). Import failed with: {error}"
    ) from error

# keras-hub exports no public way to register presets; the hub extra pins keras-hub 0.32.
from keras_hub.src.utils.preset_utils import register_presets

from keras_nfnet.hub.backbone import NFNetBackbone
from keras_nfnet.hub.classifier import NFNetImageClassifier
from keras_nfnet.hub.preprocessing import (
    NFNetImageClassifierPreprocessor,
    NFNetImageConverter,
    TimmEvalResizing,
)
from keras_nfnet.hub.presets import PRESETS
from keras_nfnet.hub.recipe import pretrained_preprocessing

register_presets(PRESETS, NFNetBackbone)

__all__ = [
    "PRESETS",
    "NFNetBackbone",
    "NFNetImageClassifier",
    "NFNetImageClassifierPreprocessor",
    "NFNetImageConverter",
    "TimmEvalResizing",
    "pretrained_preprocessing",
]
