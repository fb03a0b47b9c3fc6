"""What the keras-hub tests (tests/hub/) share. Imported by every test module there.

The tests run in the environment of the ``hub`` extra. They turn the package's XLA-fused
elementwise chains off (`keras_nfnet.fast.set_fusion`, and ``KERAS_NFNET_FUSION=0`` for
subprocesses and notebook kernels): compiling them costs about a minute per process on a 2-core
machine, and tests/test_fast_paths.py checks that both paths compute the same.
"""

from __future__ import annotations

import os

import numpy as np

from keras_nfnet import fast

os.environ["KERAS_NFNET_FUSION"] = "0"
fast.set_fusion(False)

ROW = "test_nfnet"  # timm's test model: 1 block per stage, 383 k parameters
IMAGE_SHAPE = (64, 64, 3)


def rel(a, b) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
