"""Pieces every keras.applications-style builder in this package shares: input and head."""

from __future__ import annotations

import numbers
import os
import types
from collections.abc import Callable, Mapping

import keras

from keras_nfnet.convert.checkpoint import load_weights_file
from keras_nfnet.layers.stoch_depth import check_rate

MIN_INPUT_SIZE = 32  # five stride-2 stages: /32


def check_weights_path(weights) -> None:
    """Accept ``None`` or the path of an existing weights file."""
    if weights is not None and not (
        isinstance(weights, str | os.PathLike) and os.path.exists(weights)
    ):
        raise ValueError(
            "weights must be None or the path to an existing weights file. "
            f"Received: weights={weights!r}."
        )


def check_bool(value, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise ``ValueError`` naming it."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}.")
    return value


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer (not a bool), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}.")
    return int(value)


def check_input_shape(input_shape) -> tuple:
    """``(height, width, channels)``: sizes ``None`` or integers >= 32, channels an integer > 0."""
    accepted = (
        f"(height, width, channels) with height and width None or integers >= {MIN_INPUT_SIZE} "
        "and channels a positive integer"
    )
    if not isinstance(input_shape, tuple | list) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be {accepted}. Received: input_shape={input_shape!r}.")
    *sizes, channels = input_shape
    for size in sizes:
        if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral)):
            raise ValueError(
                f"input_shape must be {accepted}. Received: input_shape={input_shape!r}."
            )
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input height and width must be at least {MIN_INPUT_SIZE} for five stride-2 "
                f"stages. Received: input_shape={tuple(input_shape)}."
            )
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"input_shape must be {accepted}. Received: input_shape={input_shape!r}.")
    return tuple(None if s is None else int(s) for s in input_shape)


def model_inputs(input_tensor, inputs):
    """The inputs to build the Functional model from (keras.applications convention)."""
    if input_tensor is not None:
        return keras.utils.get_source_inputs(input_tensor)
    return inputs


def image_input(input_tensor, input_shape, weights, name: str = "input"):
    """The model's image input, validated like keras.applications (RGB when weights are used,
    at least 32 px for five stride-2 stages)."""
    if input_shape is None:
        input_shape = (None, None, 3)
    input_shape = check_input_shape(input_shape)
    if weights is not None and input_shape[-1] != 3:
        raise ValueError(
            "Pretrained weights need 3 input channels (RGB). "
            f"Received: input_shape={input_shape} with weights={weights!r}."
        )
    if input_tensor is None:
        return keras.Input(shape=input_shape, name=name)
    if not keras.utils.is_keras_tensor(input_tensor):
        return keras.Input(tensor=input_tensor, shape=input_shape, name=name)
    return input_tensor


def check_top(include_top: bool, pooling, classes: int, classifier_activation) -> None:
    """Validate the keras.applications head arguments."""
    check_bool(include_top, "include_top")
    if include_top and pooling is not None:
        raise ValueError(
            "pooling applies only when include_top=False. "
            f"Received: include_top=True, pooling={pooling!r}."
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}.")
    if include_top:
        check_positive_int(classes, "classes")
    if classifier_activation is not None:
        keras.activations.get(classifier_activation)


def check_features_only(features_only, include_top, pooling) -> bool:
    """The ``include_top`` a builder uses: ``False`` with ``features_only=True`` (which returns
    the unpooled feature maps, so a classifier or a pooling contradicts it), else ``include_top``
    (``None``: ``True``, the keras.applications default)."""
    check_bool(features_only, "features_only")
    if not features_only:
        return True if include_top is None else include_top
    if include_top is not None and include_top is not False:
        raise ValueError(
            "features_only=True returns the feature maps without a classifier, so include_top "
            f"must be False or left unset. Received: include_top={include_top!r}, "
            "features_only=True."
        )
    if pooling is not None:
        raise ValueError(
            "features_only=True returns unpooled feature maps, so pooling must be None. "
            f"Received: pooling={pooling!r}, features_only=True."
        )
    return False


def tap_outputs(inputs, features, layers: Mapping[str, str]) -> dict:
    """``{key: output of layer}`` for ``layers`` (``{key: layer name}``) of the graph from
    ``inputs`` to ``features``: the outputs of a features-only model."""
    graph = keras.Model(inputs, features)  # a view of the graph, to find its layers by name
    return {key: graph.get_layer(layer).output for key, layer in layers.items()}


def apply_head(
    x, include_top, pooling, classes, classifier_activation, dropout_rate, classifier_init
):
    """Global pooling, dropout and the classifier (§7). The classifier runs in float32."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
        return keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=classifier_init,
            dtype="float32",
            name="predictions",
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def refuse_imagenet(weights, family: str, timm_row: str) -> None:
    """``weights="imagenet"`` for a family DeepMind published no weights of: name timm's row."""
    if weights == "imagenet":
        raise ValueError(
            f"No pretrained weights exist for DeepMind's {family}. weights='imagenet' serves "
            f"timm's {timm_row} (keras_nfnet.create_model({timm_row!r}, weights='imagenet')); "
            "use weights=None or a weights file here."
        )


# The keras.applications arguments and their defaults, in keras.applications' order.
APPLICATION_DEFAULTS = {
    "include_top": True,
    "weights": None,
    "input_tensor": None,
    "input_shape": None,
    "pooling": None,
    "classes": 1000,
    "classifier_activation": "softmax",
    "name": None,
}
APPLICATION_ARGS = tuple(APPLICATION_DEFAULTS)


def assemble(
    body: Callable,
    *,
    default_name: str,
    dropout_rate: float,
    classifier_std: float | None = None,
    model_class: type = keras.Model,
    check_weights: Callable | None = None,
    load_weights: Callable | None = None,
    feature_layers: Mapping[str, str] | None = None,
    **application,
) -> keras.Model:
    """A keras.applications-style model: validated arguments, input, ``body``, head, weights.

    Every builder of the package is this function around its own ``body(inputs) -> features``;
    the keras.applications arguments (`APPLICATION_ARGS`) are written here once.

    Args:
        body: maps the image input to the last feature map.
        default_name: the model name when ``name`` is None.
        dropout_rate: dropout before the classifier (checked to lie in [0, 1)).
        classifier_std: the classifier kernel starts N(0, std²); ``None``: at zero. (The
            initializer is made after ``body``, so that seeded runs draw the same weights as
            builders that create their head last.)
        model_class: ``keras.Model`` or a subclass (`keras_nfnet.AGCModel`).
        check_weights: ``check_weights(weights, include_top, classes)`` before anything is
            built (default: ``None`` or an existing file, `check_weights_path`).
        load_weights: ``load_weights(model, weights)`` for ``weights`` not None (default: a
            Keras weights file, `keras_nfnet.convert.checkpoint.load_weights_file`).
        feature_layers: ``{output key: layer name}``: the model outputs these layers' outputs
            (a dict) instead of the head (the builders' ``features_only=True``; ``include_top``
            must then be False and ``pooling`` None, `check_features_only`).
        **application: the keras.applications arguments (`APPLICATION_DEFAULTS` for those not
            given).
    """
    unknown = sorted(set(application) - set(APPLICATION_DEFAULTS))
    if unknown:
        raise TypeError(
            f"Unexpected keyword argument(s) {', '.join(unknown)}. Accepted: "
            f"{', '.join(APPLICATION_ARGS)} and the builder's own arguments."
        )
    a = types.SimpleNamespace(**{**APPLICATION_DEFAULTS, **application})
    check_top(a.include_top, a.pooling, a.classes, a.classifier_activation)
    if check_weights is None:
        check_weights_path(a.weights)
    else:
        check_weights(a.weights, a.include_top, a.classes)
    dropout_rate = check_rate(dropout_rate, "dropout_rate")
    inputs = image_input(a.input_tensor, a.input_shape, a.weights)
    features = body(inputs)
    if feature_layers is not None:
        outputs = tap_outputs(model_inputs(a.input_tensor, inputs), features, feature_layers)
    else:
        init = (
            "zeros"
            if classifier_std is None
            else keras.initializers.RandomNormal(0.0, classifier_std)
        )
        outputs = apply_head(
            features,
            a.include_top,
            a.pooling,
            a.classes,
            a.classifier_activation,
            dropout_rate,
            init,
        )
    model = model_class(model_inputs(a.input_tensor, inputs), outputs, name=a.name or default_name)
    if a.weights is not None:
        (load_weights or load_weights_file)(model, a.weights)
    return model


def variant_builder(
    family: Callable[..., keras.Model], variant: str, public_name: str, doc: str
) -> Callable[..., keras.Model]:
    """A keras.applications-style function for one row of a family's variant table.

    The returned function takes the keras.applications arguments (positionally in their usual
    order, `APPLICATION_ARGS`, or by keyword) and passes any family-specific keyword
    (``dropout_rate``, ``stochdepth_rate``, ``numerics``, ``use_se`` …) through to
    ``family(variant, ...)``.
    """

    def builder(*args, **kwargs) -> keras.Model:
        if len(args) > len(APPLICATION_ARGS):
            raise TypeError(
                f"{public_name}() takes at most {len(APPLICATION_ARGS)} positional "
                f"arguments ({', '.join(APPLICATION_ARGS)}); {len(args)} were given."
            )
        return family(variant, **dict(zip(APPLICATION_ARGS, args)), **kwargs)

    builder.__name__ = builder.__qualname__ = public_name
    builder.__doc__ = doc
    return builder
