"""Inference export: folded weight standardization, SavedModel, TFLite and ONNX parity.

Every check runs a reduced NFNet (`TINY_VARIANT`) on real photographs bundled with scikit-image
(astronaut, chelsea the cat, coffee), resized to 64x64 and normalized with
`keras_nfnet.preprocess_input`. Skip gains are set non-zero so the residual branches, with
their grouped convs and SE, contribute to the logits.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_nfnet
from keras_nfnet.export import fold_weight_standardization, to_tflite
from keras_nfnet.fast.conv_ops import GroupedConv2D
from keras_nfnet.layers import StochDepth, WSConv2D

SIZE = 64
CLASSES = 10
FOLD_TOLERANCE = 1e-5  # relative to the largest logit magnitude (the bound)
# Converted artifacts run other kernels (TF graph, TFLite/XNNPACK, onnxruntime); measured
# differences are below 1e-6 relative.
ARTIFACT_TOLERANCE = 1e-5


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee()]
    resized = [tf.image.resize(p.astype("float32"), (SIZE, SIZE), antialias=True) for p in photos]
    return np.asarray(keras_nfnet.preprocess_input(np.stack(resized)))


def _tiny_nfnet(tiny_variant, numerics: str = "deepmind") -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras_nfnet.NFNet(
        tiny_variant,
        input_shape=(SIZE, SIZE, 3),
        classes=CLASSES,
        classifier_activation=None,
        numerics=numerics,
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.name.endswith("skip_gain"):
            layer.set_weights([np.array(0.5, "float32")])
        if isinstance(layer, WSConv2D):  # gains and biases other than their 1 / 0 init
            kernel, bias, gain = layer.get_weights()
            layer.set_weights(
                [
                    kernel,
                    rng.normal(0, 0.05, bias.shape).astype("float32"),
                    rng.normal(1, 0.1, gain.shape).astype("float32"),
                ]
            )
    return model


@pytest.fixture(scope="module")
def tiny_model(tiny_variant) -> keras.Model:
    return _tiny_nfnet(tiny_variant)


@pytest.fixture(scope="module")
def folded(tiny_model) -> keras.Model:
    return fold_weight_standardization(tiny_model)


@pytest.fixture(scope="module")
def keras_logits(tiny_model, images) -> np.ndarray:
    return np.asarray(tiny_model.predict_on_batch(images))


def test_folded_model_has_plain_convs_and_no_training_only_layers(tiny_model, folded):
    source_types = {type(layer) for layer in tiny_model.layers}
    assert {WSConv2D, StochDepth, keras.layers.Dropout} <= source_types  # something to fold
    ws_convs = [layer for layer in tiny_model.layers if isinstance(layer, WSConv2D)]
    for layer in ws_convs:
        folded_layer = folded.get_layer(layer.name)
        expected = GroupedConv2D if layer.groups > 1 else keras.layers.Conv2D
        assert type(folded_layer) is expected, (layer.name, type(folded_layer))
        np.testing.assert_array_equal(
            folded_layer.kernel.numpy(), layer.standardized_kernel().numpy()
        )
    folded_types = {type(layer) for layer in folded.layers}
    assert not folded_types & {WSConv2D, StochDepth, keras.layers.Dropout}
    dropped = sum(
        isinstance(layer, StochDepth | keras.layers.Dropout) for layer in tiny_model.layers
    )
    assert len(folded.layers) == len(tiny_model.layers) - dropped
    assert folded.count_params() == tiny_model.count_params() - sum(
        layer.filters
        for layer in ws_convs  # the gains are baked into the kernels
    )


@pytest.mark.parametrize("numerics", ["deepmind", "timm"])
def test_folded_model_equals_source_model(tiny_variant, images, numerics):
    model = _tiny_nfnet(tiny_variant, numerics)
    expected = np.asarray(model.predict_on_batch(images))
    actual = np.asarray(fold_weight_standardization(model).predict_on_batch(images))
    assert _relative_error(actual, expected) <= FOLD_TOLERANCE


def test_folded_model_ignores_training_flag(folded, images):
    # StochDepth and Dropout are gone: training=True gives the inference outputs.
    np.testing.assert_array_equal(folded(images, training=True), folded(images, training=False))


def test_folding_leaves_the_source_model_unchanged(tiny_variant, images):
    model = _tiny_nfnet(tiny_variant)
    before = [w.copy() for w in model.get_weights()]
    fold_weight_standardization(model)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_folded_model_saves_and_loads_in_safe_mode(folded, images, tmp_path):
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict_on_batch(images), folded.predict_on_batch(images))


def test_fold_rejects_non_functional_models():
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Functional"):
        fold_weight_standardization(sequential)


def test_saved_model_reproduces_keras_outputs(folded, images, keras_logits, tmp_path):
    path = str(tmp_path / "saved_model")
    folded.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)  # keep a reference: it owns the variables
    served = reloaded.serve(tf.constant(images)).numpy()
    assert _relative_error(served, keras_logits) <= ARTIFACT_TOLERANCE


def test_tflite_reproduces_keras_outputs(folded, images, keras_logits, tmp_path):
    path = tmp_path / "model.tflite"
    flatbuffer = to_tflite(folded, path)
    assert path.read_bytes() == flatbuffer
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    assert _relative_error(interpreter.get_tensor(out["index"]), keras_logits) <= ARTIFACT_TOLERANCE


def test_onnx_reproduces_keras_outputs(folded, images, keras_logits, tmp_path):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    path = str(tmp_path / "model.onnx")
    folded.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images})
    assert _relative_error(logits, keras_logits) <= ARTIFACT_TOLERANCE
