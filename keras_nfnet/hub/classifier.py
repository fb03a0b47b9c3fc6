"""`NFNetImageClassifier`: keras-hub's image classifier on an `NFNetBackbone`, trained with AGC.

The train step is `keras_nfnet.agc_model.AGCTrainStep`'s (the one the package's `AGCModel`
runs), so ``compile(agc_clipping=..., agc_eps=..., agc_exclude=..., l2_weight_decay=...)`` means
what it means there, on one device or under a `tf.distribute` strategy. The head is the
package's classifier: global average pooling, dropout (the row's rate by default) and a float32
``Dense`` named ``predictions`` started at N(0, 0.01) (zeros for rows that zero-initialise it),
so timm's ``head.fc`` loads into it and AGC leaves its kernel unclipped by default
(docs/nfnet_reference.md §13.3).
"""

from __future__ import annotations

import os

import keras
import keras_hub

from keras_nfnet.agc_model import AGCTrainStep
from keras_nfnet.convert.checkpoint import load_checkpoint_file
from keras_nfnet.hub.backbone import NFNetBackbone
from keras_nfnet.hub.preprocessing import NFNetImageClassifierPreprocessor
from keras_nfnet.hub.timm_loader import timm_loader
from keras_nfnet.registry import register


class _BackboneAndHead:
    """A classifier's layers by the package's layer names, as the strict converter looks them up
    (`keras_nfnet.convert.nfnet_map.assign_arrays`): the backbone's, and ``predictions``."""

    def __init__(self, classifier: NFNetImageClassifier):
        self.classifier = classifier
        self.name = classifier.name
        self.weights = classifier.weights

    def get_layer(self, name: str):
        if name == "predictions":
            return self.classifier.output_dense
        return self.classifier.backbone.get_layer(name)


@register
class NFNetImageClassifier(AGCTrainStep, keras_hub.models.ImageClassifier):
    """An image classifier on an `NFNetBackbone` whose ``fit`` applies Adaptive Gradient Clipping.

    Args:
        backbone: an `NFNetBackbone`.
        num_classes: the number of classes.
        preprocessor: ``None`` or an `NFNetImageClassifierPreprocessor` (`from_preset` makes the
            row's own).
        pooling: ``"avg"`` (the package's head) or ``"max"``.
        activation: of the classifier; ``None`` (default) gives logits, as in keras-hub.
        dropout: before the classifier; ``None``: the row's ``dropout_rate``.
        head_dtype: dtype policy of the head; float32 by default, as the package's classifier.
        **kwargs: `keras_hub.models.ImageClassifier` arguments (``name``, ``compile``).

    `compile` takes keras-hub's defaults (Adam 5e-5, sparse cross-entropy, accuracy) and the AGC
    settings of `keras_nfnet.AGCModel` (``agc_clipping`` default 0.01, ``None`` turns AGC off).

    Example:
    >>> import numpy as np
    >>> backbone = NFNetBackbone(variant="test_nfnet")
    >>> classifier = NFNetImageClassifier(backbone, num_classes=3)
    >>> classifier.compile(optimizer="sgd", agc_clipping=0.02)
    >>> x, y = np.random.default_rng(0).normal(size=(4, 64, 64, 3)), np.array([0, 1, 2, 0])
    >>> history = classifier.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['agc_clip_fraction', 'loss', 'sparse_categorical_accuracy']
    """

    backbone_cls = NFNetBackbone
    preprocessor_cls = NFNetImageClassifierPreprocessor

    def __init__(
        self,
        backbone: NFNetBackbone,
        num_classes: int,
        preprocessor: NFNetImageClassifierPreprocessor | None = None,
        pooling: str = "avg",
        activation=None,
        dropout: float | None = None,
        head_dtype="float32",
        **kwargs,
    ):
        if not isinstance(backbone, NFNetBackbone):
            raise ValueError(
                "NFNetImageClassifier needs an NFNetBackbone. "
                f"Received: backbone={type(backbone).__name__}."
            )
        spec = backbone.spec
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            preprocessor=preprocessor,
            pooling=pooling,
            activation=activation,
            dropout=spec.dropout_rate if dropout is None else dropout,
            head_dtype=head_dtype,
            **kwargs,
        )
        # keras-hub's Dense starts Glorot-uniform; the package's classifier
        # (keras_nfnet.models.common.assemble) starts at N(0, 0.01), or zero where the row says.
        kernel = self.output_dense.kernel
        init = (
            keras.initializers.Zeros()
            if spec.zero_init_classifier
            else keras.initializers.RandomNormal(0.0, 0.01)
        )
        kernel.assign(init(kernel.shape, kernel.dtype))
        self.head_dtype = keras.dtype_policies.get(head_dtype).name

    def get_config(self):
        config = super().get_config()
        config["head_dtype"] = self.head_dtype
        return config

    def load_timm_checkpoint(self, path: str | os.PathLike) -> None:
        """Fill the backbone and the classifier from a timm ``model.safetensors`` (the row's
        state dict with a ``head.fc`` of ``num_classes``), strictly: every tensor must be there
        with its exact shape and dtype, finite, and nothing may be left over."""
        load_checkpoint_file(_BackboneAndHead(self), path, self.backbone.spec)

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs) -> NFNetImageClassifier:
        """keras-hub's `from_preset`, plus timm's Hugging Face repos of NF models, local folders
        in timm's layout and the built-in names (`presets`). Without ``num_classes``, timm's
        classifier is loaded too; with it, a new classifier of that width is made.

        Example:
        >>> classifier = NFNetImageClassifier.from_preset(
        ...     "hf://timm/eca_nfnet_l0.ra2_in1k")  # doctest: +SKIP
        """
        loader = timm_loader(preset, NFNetBackbone)
        if loader is None:
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        return loader.load_task(cls, load_weights, "num_classes" not in kwargs, **kwargs)
