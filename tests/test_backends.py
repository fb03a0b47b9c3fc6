"""The tiny NFNet on the TensorFlow, JAX and PyTorch backends (one process per backend)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TESTS, TINY_VARIANT, run_python

from keras_nfnet.models.nfnet import NFNet


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weights with non-trivial gains, biases and skip gains, and TF-backend logits."""
    tmp = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    model = NFNet(TINY_VARIANT, classes=10, classifier_activation=None)
    for w in model.weights:
        if w.name in ("gain", "skip_gain"):
            w.assign(rng.uniform(0.5, 1.5, size=w.shape))
        elif w.name == "bias":
            w.assign(rng.normal(scale=0.1, size=w.shape))
    model.save_weights(tmp / "w.weights.h5")
    # 61 px: odd maps, so SAME padding is (1, 1) at stride 2 on some layers and the shortcut
    # average pool sees odd inputs: both must agree across backends.
    # One input shape keeps JAX to two compilations (predict and the train step).
    data = {"x": rng.normal(size=(4, 61, 61, 3)).astype("float32"), "y": np.array([0, 3, 5, 9])}
    np.savez(tmp / "inputs.npz", **data)
    logits = {k: model.predict(v, verbose=0) for k, v in data.items() if k.startswith("x")}
    return tmp, logits


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_forward_and_fit_step_on_backend(backend, reference):
    tmp, logits = reference
    out = tmp / f"{backend}.npz"
    run_python(
        [
            str(TESTS / "backend_check.py"),
            str(tmp / "w.weights.h5"),
            str(tmp / "inputs.npz"),
            str(out),
        ],
        # Unfused on TensorFlow: the reference logits above come from this process's default
        # (fused) path, so each backend is still compared with it; the subprocess is spared the
        # fused chains' XLA compilations (tests/test_fast_paths.py checks both TF paths agree).
        env={
            "KERAS_BACKEND": backend,
            "KERAS_NFNET_FUSION": "0",
            "PYTHONPATH": f"{TESTS.parent}:{TESTS}",
        },
    )
    got = np.load(out)
    assert str(got["backend"]) == backend
    for key, expected in logits.items():
        err = np.abs(got[f"logits_{key}"] - expected).max() / np.abs(expected).max()
        assert err < 1e-4, f"{backend} {key}: {err:.2e}"
    assert np.isfinite(got["loss"]) and got["loss"] > 0
    assert got["moved"] > 0
