"""Keras serialization registration under the package name."""

import keras

PACKAGE = "keras_nfnet"


def register(cls):
    """Register ``cls`` as Keras-serializable as ``keras_nfnet>ClassName``."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
