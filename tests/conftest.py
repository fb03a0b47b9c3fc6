"""Shared test set-up.

* The main pytest process runs the Keras TensorFlow backend. Other backends, and anything that
  imports torch/timm, run in subprocesses (`run_python`): importing torchvision after TensorFlow
  crashes the process (platform_facts.md), and pytest's collection order must not decide that.
* Two logical CPU devices are configured before any TensorFlow op, so tests can use
  ``tf.distribute.MirroredStrategy`` over 2 replicas.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import pytest
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from keras_nfnet.models.nfnet import NFNetVariant  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# A reduced F-style network: every feature of the F family (deep-quad stem, projection and
# pooled shortcuts, grouped convs with several groups, SE, stochastic depth) at a cost a test can
# afford. tests/timm_reference.py builds the same network in timm.
TINY_VARIANT = NFNetVariant(
    depths=(1, 2, 2, 1),
    widths=(32, 64, 96, 96),
    stem_widths=(2, 4, 8),
    group_width=16,
    train_size=64,
    test_size=64,
    dropout_rate=0.1,
)


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


@pytest.fixture(scope="session")
def tiny_variant() -> NFNetVariant:
    return TINY_VARIANT
