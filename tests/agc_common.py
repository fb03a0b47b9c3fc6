"""A tiny AGC test model and data, identical in every process and on every Keras backend.

Imported by tests/test_agc*.py and by the subprocess scripts tests/agc_*.py (which set
KERAS_BACKEND before importing it). Weights come from NumPy, not from Keras initializers, so
each backend and process starts from the same numbers.
"""

from __future__ import annotations

import numpy as np

IMAGE_SHAPE = (6, 6, 3)
CLASSES = 5


def build_model(dtype=None):
    """Conv2D (rank-4 kernel) -> Dense (rank-2) -> Dense ``predictions`` with fixed weights."""
    import keras

    from keras_nfnet import AGCModel

    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, activation="tanh", name="conv", dtype=dtype)(inputs)
    x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
    x = keras.layers.Dense(8, activation="tanh", name="hidden", dtype=dtype)(x)
    outputs = keras.layers.Dense(CLASSES, name="predictions", dtype=dtype)(x)
    model = AGCModel(inputs, outputs, name="agc_tiny")
    model.set_weights(initial_weights(model))
    return model


def initial_weights(model) -> list[np.ndarray]:
    """Kernels ~ N(0, 0.3^2); biases zero, so AGC clips them (their norm floor is eps)."""
    rng = np.random.default_rng(1234)
    return [
        np.zeros(w.shape, "float32")
        if w.path.endswith("bias")
        else rng.normal(0.0, 0.3, w.shape).astype("float32")
        for w in model.weights
    ]


def make_data(n: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, *IMAGE_SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, (n,)).astype("int32")
    return x, y


def compile_model(model, optimizer=None, **agc):
    import keras

    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(learning_rate=0.5, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **{"agc_clipping": 0.05, **agc},
    )
    return model
