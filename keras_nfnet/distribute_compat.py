"""Workaround for `model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` (TF backend).

Keras 3.15.1 breaks `fit` under MultiWorkerMirroredStrategy (MWMS) in two places
(keras-team/keras issue 20585, tensorflow/tensorflow issue 72388; docs/platform_facts.md):

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from
   ``strategy.reduce("MEAN", batch)`` of the first distributed batch, which MWMS cannot do. The
   build only needs shapes and dtypes, so the workaround builds from the first local replica's
   batch instead.
2. ``reduce_per_replica`` reduces every log value with ``strategy.reduce("MEAN", v, axis=0)``,
   which fails for the rank-0 values every train/test step returns. The workaround returns
   the log values with shape ``[1]``; the reduction along axis 0 then gives the usual scalar mean.

Both fixes touch Keras internals, so they live here, are applied only by
`keras_nfnet.AGCModel`, only under multi-worker MWMS and only for the Keras versions in
`WORKAROUND_KERAS_VERSIONS` (verified broken on 3.15.1, and fixed by this module:
``tests/test_agc_multiworker.py``). On an upgrade, re-run that test and widen or drop the range.

Example:
>>> from keras_nfnet import distribute_compat
>>> isinstance(distribute_compat.workaround_enabled(), bool)
True
"""

from __future__ import annotations

import re
import warnings

import keras

# Half-open range [low, high) of Keras (major, minor) versions the workaround applies to.
WORKAROUND_KERAS_VERSIONS: tuple[tuple[int, int], tuple[int, int]] = ((3, 0), (3, 16))


def keras_version_tuple(version: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of a Keras version string (the installed Keras by default).

    Example:
    >>> keras_version_tuple("3.15.1")
    (3, 15)
    """
    version = keras.version() if version is None else version
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"Cannot parse a Keras version from {version!r}; expected 'X.Y[.Z]'.")
    return int(match.group(1)), int(match.group(2))


def workaround_enabled(version: str | None = None) -> bool:
    """Whether the MWMS `fit` workaround applies to this Keras version (and TF backend).

    Example:
    >>> workaround_enabled("3.15.1"), workaround_enabled("4.0.0")
    (True, False)
    """
    if version is None and keras.backend.backend() != "tensorflow":
        return False
    low, high = WORKAROUND_KERAS_VERSIONS
    return low <= keras_version_tuple(version) < high


def in_multi_worker_mode(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy spanning more than one worker.

    Mirrors Keras' own test (``_collective_all_reduce_multi_worker``) of when it reduces log
    values with ``strategy.reduce(..., axis=0)``.

    Example:
    >>> import tensorflow as tf
    >>> in_multi_worker_mode(tf.distribute.get_strategy())
    False
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return bool(strategy.extended._in_multi_worker_mode())


def _needs_fix(strategy) -> bool:
    if strategy is None or not in_multi_worker_mode(strategy):
        return False
    if workaround_enabled():
        return True
    warnings.warn(
        f"keras_nfnet's MultiWorkerMirroredStrategy fit workaround is verified for Keras "
        f"versions in {WORKAROUND_KERAS_VERSIONS} and is not applied to Keras {keras.version()}.",
        stacklevel=3,
    )
    return False


def symbolic_build_batch(strategy, iterator, data_batch):
    """Replace the distributed first batch by one replica's batch under multi-worker MWMS.

    Called from ``AGCModel._maybe_symbolic_build`` with that method's arguments; returns the
    ``(iterator, data_batch)`` to pass on to Keras. Elsewhere they are returned unchanged.

    Example:
    >>> symbolic_build_batch(None, None, None)
    (None, None)
    """
    if iterator is None or not _needs_fix(strategy):
        return iterator, data_batch
    import tensorflow as tf

    for _, _, it in iterator:
        batch = next(it)
        break
    else:
        return iterator, data_batch

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return None, tf.nest.map_structure(local, batch)


def fix_step_logs(logs: dict, strategy) -> dict:
    """Give rank-0 log values shape ``[1]`` under multi-worker MWMS (see module docstring).

    Example:
    >>> fix_step_logs({"loss": 1.0}, None)
    {'loss': 1.0}
    """
    if not _needs_fix(strategy):
        return logs
    import tensorflow as tf

    def reshape(value):
        value = tf.convert_to_tensor(value)
        return tf.reshape(value, [1]) if value.shape.rank == 0 else value

    return tf.nest.map_structure(reshape, logs)
