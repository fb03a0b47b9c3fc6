"""Inference export: fold weight standardization into plain convolutions (docs/nfnet_reference.md
§4.4).

A `WSConv2D` recomputes its standardized kernel on every call. For inference the kernel is a
constant, so `fold_weight_standardization` bakes ``WSConv2D.standardized_kernel()`` into a plain
`keras.layers.Conv2D` with the same bias, and drops the training-only layers (`StochDepth`,
`Dropout`, both identities at inference). The folded model computes the same function with fewer
ops, and its graph exports where the standardization ops do not (timm's WS convs broke ONNX
export: huggingface/pytorch-image-models issues #442 and #522).

Exporting the folded model (see the README, "Deployment / export"):

* TensorFlow SavedModel: ``folded.export(path)`` (Keras' ``format="tf_saved_model"``).
* TFLite: `to_tflite`, which converts that SavedModel with ``tf.lite.TFLiteConverter``.
* ONNX: ``folded.export(path, format="onnx")`` needs ``tf2onnx`` + ``onnx`` on the TF backend
  (see the README for the versions it was checked with).
"""

from __future__ import annotations

import os
import tempfile

import keras

from keras_nfnet.atomic import atomic_write_bytes
from keras_nfnet.fast import GroupedConv2D
from keras_nfnet.layers.activations import ScaledActivation
from keras_nfnet.layers.stoch_depth import StochDepth
from keras_nfnet.layers.ws_conv import WSConv2D

# Layers that are the identity at inference and are left out of the folded graph.
INFERENCE_IDENTITIES = (StochDepth, keras.layers.Dropout)


def fold_weight_standardization(model: keras.Model, name: str | None = None) -> keras.Model:
    """Return an inference copy of ``model`` with every `WSConv2D` folded into a `Conv2D`.

    Each `WSConv2D` becomes a ``keras.layers.Conv2D`` (for ``groups > 1`` its subclass
    `keras_nfnet.fast.conv_ops.GroupedConv2D`, which differs only in emitting TF's native
    grouped op; see there) with the same name, shape, strides, padding, groups and dtype
    policy, whose kernel is the source layer's
    ``standardized_kernel()`` (float32, computed once) and whose bias is the source bias.
    `StochDepth` and `Dropout` layers are removed (their inputs pass straight through), and
    `ScaledActivation` layers run as plain ops (``fuse=False``) so exporters see no XLA calls.
    Every other layer is cloned from its config with its weights copied. The source model is not
    modified, and the copy is a plain Functional ``keras.Model`` meant for inference: the
    folded kernels are no longer weight-standardized, so do not train it.

    Args:
        model: a Functional model, e.g. from `keras_nfnet.NFNet`.
        name: name of the folded model (default: ``model.name + "_folded"``).

    Returns:
        The folded ``keras.Model``. Its outputs equal the source model's inference outputs up to
        float32 rounding (1e-5 relative; tests/test_export.py).

    Example:
    >>> import numpy as np, keras
    >>> from keras_nfnet.layers import WSConv2D
    >>> inputs = keras.Input((8, 8, 4))
    >>> model = keras.Model(inputs, WSConv2D(6, 3, groups=2, name="conv")(inputs))
    >>> folded = fold_weight_standardization(model)
    >>> isinstance(folded.get_layer("conv"), keras.layers.Conv2D)
    True
    >>> x = np.random.default_rng(0).normal(size=(1, 8, 8, 4)).astype("float32")
    >>> bool(np.allclose(folded(x), model(x), rtol=1e-5, atol=1e-5))
    True
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "fold_weight_standardization needs a Functional keras.Model. "
            f"Received: model={model!r}."
        )

    def clone_layer(layer):
        if isinstance(layer, WSConv2D):
            return _plain_conv(layer)
        config = layer.get_config()
        if isinstance(layer, ScaledActivation):
            config["fuse"] = False  # plain ops: exporters (tf2onnx) reject XLA function calls
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        if isinstance(layer, INFERENCE_IDENTITIES):
            return args[0]
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)
    # clone_model keeps the source's class (AGCModel for NFNets); the folded copy is for
    # inference, so wrap its graph in a plain Functional Model with the source's input and
    # output structure (a single tensor stays a single tensor, so exported signatures take one).
    folded = keras.Model(
        _unwrap(clone.inputs), _unwrap(clone.outputs), name=name or f"{model.name}_folded"
    )
    for layer in folded.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name)
        if isinstance(source, WSConv2D):
            kernel = keras.ops.convert_to_numpy(source.standardized_kernel())
            layer.set_weights([kernel, keras.ops.convert_to_numpy(source.bias)])
        else:
            layer.set_weights(source.get_weights())
    return folded


def _unwrap(tensors):
    return tensors[0] if len(tensors) == 1 else tensors


def _plain_conv(layer: WSConv2D) -> keras.layers.Conv2D:
    # Keras' own Conv2D wraps grouped convs in XLA on the TF backend: slower on CPU and not
    # convertible to ONNX. GroupedConv2D is a Conv2D subclass that emits the native op instead.
    conv_class = GroupedConv2D if layer.groups > 1 else keras.layers.Conv2D
    return conv_class(
        filters=layer.filters,
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        groups=layer.groups,
        activation=layer.activation,
        use_bias=True,
        dtype=layer.dtype_policy,
        name=layer.name,
    )


def to_tflite(model: keras.Model, path: str | os.PathLike | None = None) -> bytes:
    """Convert ``model`` (typically folded) to a TFLite flatbuffer, float32, no quantization.

    The model is exported to a temporary SavedModel with ``model.export`` and converted with
    ``tf.lite.TFLiteConverter.from_saved_model``. When ``path`` is given the flatbuffer is
    also written there, atomically (`keras_nfnet.atomic`).
    Needs the TensorFlow backend's ``tensorflow`` package (any Keras backend can call it, as
    Keras' SavedModel export does).

    Example:
    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    >>> flatbuffer = to_tflite(model)
    >>> flatbuffer[4:8]
    b'TFL3'
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        flatbuffer = converter.convert()
    if path is not None:
        atomic_write_bytes(path, flatbuffer)
    return flatbuffer
