"""The network of a run: any `keras_nfnet.create_model` row, or a DeepMind F variant, from
`training.configs.ModelConfig`, with a logits head for the dataset and an optional backbone.

``model.name`` picks a row (``eca_nfnet_l0``, ``nf_resnet50``, ``dm_nf_regnet_b0`` …) and
``model.variant_overrides`` replaces `NFSpec` fields of it (``depths``, ``channels`` …); without
a name, ``model.variant`` picks a DeepMind F variant and the overrides are `NFNetVariant`
fields. Either way the model is built by `keras_nfnet.models.normfree.NormFreeNet`, the one
builder, and is an `AGCModel`.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from keras_nfnet.architecture.rows import MODEL_SPECS, get_spec, get_variant
from keras_nfnet.models.normfree import NormFreeNet
from training.configs import ExperimentConfig, ModelConfig


def _replace(row, overrides: dict, what: str):
    fields = {f.name for f in dataclasses.fields(row)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"Unknown model.variant_overrides key(s) {unknown} for {what}. Accepted: "
            f"{', '.join(sorted(fields))}."
        )
    return dataclasses.replace(
        row, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    )


def model_spec(m: ModelConfig):
    """``(spec, weights_source)``: the `NFSpec` of the configured network (overrides applied)
    and what ``init_checkpoint="imagenet"`` loads from (the row name or the F variant)."""
    if m.name:
        spec = _replace(get_spec(m.name), m.variant_overrides, m.name)
        source = m.name
    else:
        variant = _replace(get_variant(m.variant), m.variant_overrides, f"NFNet-{m.variant}")
        spec, source = variant.spec(), variant
    if m.numerics is not None:
        spec = dataclasses.replace(spec, numerics=m.numerics)
    return spec, source


def build_model(cfg: ExperimentConfig, num_classes: int) -> keras.Model:
    """The network of ``cfg.model`` (an `AGCModel`) with a ``num_classes`` logits head."""
    m = cfg.model
    spec, source = model_spec(m)
    model = NormFreeNet(
        spec,
        input_shape=(None, None, 3),
        classes=num_classes,
        classifier_activation=None,
        dropout_rate=m.dropout_rate,
        stochdepth_rate=m.stochdepth_rate,
        name=m.name or "nfnet",
    )
    if m.init_checkpoint:
        load_backbone(model, m.init_checkpoint, source, spec.numerics)
    return model


def load_backbone(model: keras.Model, path: str, variant=None, numerics: str = "deepmind") -> int:
    """Copy the weights of every same-named, same-shaped layer of a source model into ``model``
    (the classifier is left re-initialized when its class count differs).

    ``path`` is ``"imagenet"`` (the published weights of ``variant``: a DeepMind F variant or a
    `create_model` row name, downloaded and converted by `keras_nfnet.weights`, without their
    classifier) or an existing `.keras` model file. Returns the number of layers copied.
    """
    if path == "imagenet":
        if isinstance(variant, str) and variant in MODEL_SPECS:  # a row, by its own name
            source = NormFreeNet(variant, include_top=False, weights="imagenet", numerics=numerics)
        else:  # a DeepMind F variant (or a registered NFNetVariant)
            spec = get_variant(variant).spec(numerics)
            source = NormFreeNet(spec, include_top=False, weights="imagenet")
        return _copy_layers(source, model, path)
    if not path.endswith(".keras") or not os.path.exists(path):
        raise ValueError(
            "model.init_checkpoint must be 'imagenet' or an existing .keras model file. "
            f"Received: {path!r}."
        )
    source = keras.saving.load_model(path, compile=False, safe_mode=True)
    return _copy_layers(source, model, path)


def _copy_layers(source: keras.Model, model: keras.Model, path: str) -> int:
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        values = other.get_weights()
        if [v.shape for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            copied += 1
    if copied == 0:
        raise ValueError(f"No layer of {path!r} matches the model being trained.")
    return copied
