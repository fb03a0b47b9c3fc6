"""One switch for every fast path: `reference_paths` runs the plain Keras ops instead.

The fast paths (`keras_nfnet.fast.conv_ops`, `keras_nfnet.fast.pooling`, the fused chains of
`keras_nfnet.fast.fusion`, the torch standardization of `keras_nfnet.fast.torch_ops`) only
change how a value is computed. Inside ``with reference_paths():`` every one of them takes its
reference form (``keras.ops.conv``, ``keras.ops.mean``, unfused ops), which is what
tests/test_fast_paths.py compares them with. Like `set_fusion`, it takes effect for layers called
inside the block; a model already traced into a ``tf.function`` keeps the path it traced.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from keras_nfnet.fast.fusion import fusion_enabled, set_fusion

_enabled = True


def fast_paths_enabled() -> bool:
    """Whether `conv2d`, `spatial_mean` and the torch standardization take their fast paths
    (outside `reference_paths`)."""
    return _enabled


@contextlib.contextmanager
def reference_paths() -> Iterator[None]:
    """Within the block, every fast path takes its reference form; restored on exit.

    Example:
    >>> with reference_paths():
    ...     fast_paths_enabled(), fusion_enabled()
    (False, False)
    >>> fast_paths_enabled()
    True
    """
    global _enabled
    enabled, fused = _enabled, fusion_enabled()
    _enabled = False
    set_fusion(False)
    try:
        yield
    finally:
        _enabled = enabled
        set_fusion(fused)


@functools.cache  # TF's device list is fixed once it is initialized; asked for every layer
def tf_cpu_only() -> bool:
    """Whether TensorFlow sees no GPU and no TPU (the CPU fast paths apply)."""
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU") and not tf.config.list_logical_devices("TPU")
