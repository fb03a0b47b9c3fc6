"""Shared test set-up.

* The main pytest process runs the Keras TensorFlow backend. Other backends, and anything that
  imports torch/timm, run in subprocesses (`run_python`): importing torchvision after TensorFlow
  crashes the process (docs/platform_facts.md), and pytest's collection order must not decide that.
* Two logical CPU devices are configured before any TensorFlow op, so tests can use
  ``tf.distribute.MirroredStrategy`` over 2 replicas.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np
import pytest
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from loopback import Server  # noqa: E402
from tiny import TINY_VARIANT  # noqa: E402

import training.registry_imports  # noqa: E402, F401  (the built-in experiments)
from keras_nfnet import weights  # noqa: E402
from keras_nfnet.models.nfnet import NFNetVariant  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
# tests/hub needs keras-hub (the ``hub`` extra; CI runs it in `.venv-hub`, where an empty collection
# fails the run): without keras-hub, ``pytest tests`` leaves that folder out.
collect_ignore = [] if importlib.util.find_spec("keras_hub") else ["hub"]


def run_python(args, env=None, timeout=900, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a fresh interpreter; fail the test with its output on error."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [sys.executable, *args],
        env=full_env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"subprocess {args} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def reference_path():
    """The unfused path for a module (``pytestmark = pytest.mark.usefixtures("reference_path")``):
    the fused chains compile an XLA kernel per conv and input shape (seconds per model on CPU)
    and equal this path (tests/test_fast_paths.py). For tests whose point is not fusion."""
    from keras_nfnet import fast

    enabled = fast.fusion_enabled()
    fast.set_fusion(False)
    yield
    fast.set_fusion(enabled)


@pytest.fixture(scope="session")
def tiny_variant() -> NFNetVariant:
    return TINY_VARIANT


@pytest.fixture(scope="session")
def timm_reference(tmp_path_factory):
    """``get(config, sizes)`` -> directory with timm's ``model.safetensors`` and ``reference.npz``.

    Built once per (config, sizes) per session by tests/timm_reference.py in a subprocess.
    """
    cache: dict = {}

    def get(config: str, sizes: tuple[int, ...]) -> Path:
        key = (config, tuple(sizes))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"timm_{config}")
            run_python([str(TESTS / "timm_reference.py"), config, str(out), *map(str, sizes)])
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture
def server():
    """A loopback HTTP server (tests/loopback.py) serving ``server.files``."""
    s = Server()
    yield s
    s.close()


@pytest.fixture
def tiny_files(timm_reference):
    ref_dir = timm_reference("tiny", (64, 61))
    return (ref_dir / "model.safetensors").read_bytes(), np.load(ref_dir / "reference.npz")


@pytest.fixture
def registry(server, tmp_path, monkeypatch):
    """Point the Keras cache at tmp_path and register the tiny network's checkpoint."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def register(sha256=None, source="timm"):
        entry = weights.PretrainedCheckpoint(
            variant=TINY_VARIANT,
            urls={source: f"{server.url}/tiny/model.{source}"},
            sha256={source: sha256},
            classes=10,
        )
        monkeypatch.setitem(weights.PRETRAINED_WEIGHTS, "TINY", entry)
        return f"/tiny/model.{source}"

    return register
