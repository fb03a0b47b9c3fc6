"""`NFNetBackbone`: any NF row as a keras-hub `FeaturePyramidBackbone`.

The backbone is `keras_nfnet.create_model(variant, include_top=False)`: its output is the
feature map the row's classifier pools (after the final activation), and its
``pyramid_outputs`` ``P1`` … ``P5`` (level Pn at 1/2^n of the input) are the tensors of
``create_model(variant, features_only=True)``, at the layers `keras_nfnet.feature_info` lists
(timm's ``feature_info`` taps), for keras-hub's task heads (RetinaNet, DeepLabV3 …). The
features-only model stops at timm's last tap (``final_conv``, before the final activation), so
the backbone is the include-top-less model, which holds both. Layer names are the package's, so
the strict timm and DeepMind converters load it by table.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import keras_hub

from keras_nfnet.architecture.rows import get_spec
from keras_nfnet.architecture.spec import NFSpec
from keras_nfnet.hub.timm_loader import timm_loader
from keras_nfnet.registry import register
from keras_nfnet.zoo import MODELS, SPEC_OVERRIDES, create_model, feature_info, list_models

# keras.Model arguments; every other keyword is an override of the row (create_model's).
_MODEL_KWARGS = ("name", "trainable")
# create_model arguments that make no sense for a backbone (a head, or the input, set here).
_NOT_BACKBONE = (
    "include_top",
    "pooling",
    "classes",
    "classifier_activation",
    "dropout_rate",
    "features_only",
    "input_shape",
    "input_tensor",
)


@contextlib.contextmanager
def _dtype_policy(dtype):
    """Build under ``dtype`` (the layers of `create_model` take the global policy)."""
    if dtype is None or isinstance(dtype, keras.dtype_policies.DTypePolicyMap):
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _tuples(value):
    """JSON configs hold lists; `NFSpec` fields are tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


@register
class NFNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A Normalizer-Free network (any `keras_nfnet.list_models` row) as a keras-hub backbone.

    Inputs are images normalized with the row's mean and std (`NFNetImageConverter` does it);
    the output is the last feature map (what the classifier pools), and ``pyramid_outputs``
    holds ``P1`` … ``P5``.

    Args:
        variant: a `keras_nfnet.list_models` name (``"eca_nfnet_l0"``, ``"dm_nfnet_f0"`` …).
        image_shape: ``(height, width, 3)``; ``None`` sizes accept any image of at least 32 px.
        weights: ``None``, ``"imagenet"`` or a weights file, as `keras_nfnet.create_model`
            takes it (not part of the config: a preset stores the weights themselves).
        dtype: the dtype policy of every layer (default: the global policy).
        **kwargs: ``name``, ``trainable``, and the overrides `keras_nfnet.create_model` takes:
            ``numerics``, ``stochdepth_rate``, or `NFSpec` fields (``depths``, ``channels`` …;
            `keras_nfnet.zoo.SPEC_OVERRIDES`).

    Example:
    >>> import numpy as np
    >>> backbone = NFNetBackbone(variant="test_nfnet", image_shape=(64, 64, 3))
    >>> [(level, t.shape[1], t.shape[-1]) for level, t in backbone.pyramid_outputs.items()]
    [('P1', 32, 64), ('P2', 16, 32), ('P3', 8, 64), ('P4', 4, 96), ('P5', 2, 192)]
    >>> tuple(backbone.predict(np.zeros((1, 64, 64, 3)), verbose=0).shape)
    (1, 2, 2, 192)
    """

    def __init__(
        self,
        variant: str,
        image_shape: tuple = (None, None, 3),
        weights: str | None = None,
        dtype=None,
        **kwargs,
    ):
        if variant not in MODELS:
            raise ValueError(
                f"Unknown NF model {variant!r}. NFNetBackbone builds any of: "
                f"{', '.join(list_models())}. Received: variant={variant!r}."
            )
        refused = sorted(set(kwargs) & set(_NOT_BACKBONE))
        if refused:
            raise ValueError(
                f"NFNetBackbone has no head and takes its input shape as image_shape, so it "
                f"does not take {', '.join(refused)} (NFNetImageClassifier(dropout=...) sets "
                "the classifier's dropout)."
            )
        model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
        overrides = {k: _tuples(v) for k, v in kwargs.items()}
        image_shape = tuple(image_shape)
        with _dtype_policy(dtype):
            model = create_model(
                variant, include_top=False, input_shape=image_shape, weights=weights, **overrides
            )
        spec_overrides = {k: v for k, v in overrides.items() if k in SPEC_OVERRIDES}
        pyramid = {
            level["level"]: model.get_layer(level["layer"]).output
            for level in feature_info(variant, **spec_overrides)
        }
        super().__init__(inputs=model.input, outputs=model.output, dtype=dtype, **model_kwargs)
        self.pyramid_outputs = pyramid
        self.variant = variant
        self.image_shape = image_shape
        self.overrides = overrides
        self.spec: NFSpec = dataclasses.replace(get_spec(variant), **spec_overrides)

    def get_config(self):
        config = super().get_config()
        config.update(variant=self.variant, image_shape=self.image_shape, **self.overrides)
        return config

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs) -> NFNetBackbone:
        """keras-hub's `from_preset` (a saved preset, a Kaggle or Hugging Face handle), plus
        timm's Hugging Face repos of NF models (``"hf://timm/eca_nfnet_l0.ra2_in1k"``), local
        folders in timm's layout, and the built-in names (`presets`), which are timm repos.

        Example:
        >>> backbone = NFNetBackbone.from_preset("eca_nfnet_l0_imagenet")  # doctest: +SKIP
        """
        loader = timm_loader(preset, cls)
        if loader is None:
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        return loader.load_backbone(cls, load_weights, **kwargs)
