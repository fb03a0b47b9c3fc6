"""The tf.distribute strategy of a run, and who writes its files."""

from __future__ import annotations

import tensorflow as tf

from training.configs import STRATEGIES, ConfigError


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """``default`` (no distribution), ``mirrored`` (all local GPUs, else all logical CPUs),
    ``multi_worker`` (MultiWorkerMirroredStrategy from ``TF_CONFIG``) or ``tpu``."""
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {name!r}. Accepted: {', '.join(STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)


def distribute_datasets(strategy, make):
    """``make(input_context)`` as a distributed dataset (``make(None)`` without a strategy)."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return make(None)
    return strategy.distribute_datasets_from_function(make)
