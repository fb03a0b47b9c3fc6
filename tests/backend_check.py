"""Run the tiny NFNet on the Keras backend named by KERAS_BACKEND (a subprocess of the tests).

``python tests/backend_check.py WEIGHTS.weights.h5 INPUTS.npz OUT.npz``: loads the weights,
records the logits for every ``x*`` input, runs one ``fit`` step and records the loss and how
much the weights moved.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
from tiny import TINY_VARIANT

from keras_nfnet.models.nfnet import NFNet


def main() -> None:
    weights, inputs, out = sys.argv[1:4]
    data = np.load(inputs)
    model = NFNet(TINY_VARIANT, classes=10, classifier_activation=None)
    model.load_weights(weights)
    record = {"backend": np.array(keras.backend.backend())}
    for key in data.files:
        if key.startswith("x"):
            record[f"logits_{key}"] = np.asarray(model.predict(data[key], verbose=0))
    before = [np.array(w) for w in model.trainable_weights]
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(data["x"], data["y"], batch_size=len(data["y"]), epochs=1, verbose=0)
    record["loss"] = np.array(history.history["loss"][0])
    record["moved"] = np.array(
        sum(float(np.abs(np.array(w) - b).sum()) for w, b in zip(model.trainable_weights, before))
    )
    np.savez(out, **record)


if __name__ == "__main__":
    main()
