"""The TF optimizer-update patch: each variable's update waits for its own clipped gradient.

Without it TF's executor runs the optimizer's variable-only ops (e.g. SGD's ``momentum * m``)
at the start of the step and keeps their outputs alive through the forward and backward passes.
`gate_updates` is applied once per optimizer by `keras_nfnet.agc_model.AGCModel` on the TF
backend; it changes no value (a control dependency on a tensor the update reads).
"""

from __future__ import annotations

import threading
import types

_GATING_LOCK = threading.Lock()


def gate_updates(optimizer) -> None:
    """Make each variable's TF update wait for its own (clipped) gradient; once per optimizer.

    Without it TF's executor runs the optimizer's variable-only ops (e.g. SGD's ``momentum * m``)
    at the start of the step and keeps their outputs alive through the forward and backward
    passes. Gating each ``update_step`` on its gradient, rather than the whole update on every
    gradient, lets a gradient be freed once its variable is updated, while the backward pass is
    still running. Outside any ``tf.distribute`` strategy there is one replica, so the
    optimizer's all-reduce of the gradients (a single op over all of them, which would hold every
    update until the last gradient) is skipped: the sum over one replica is the gradient itself.
    A control dependency on a tensor the update reads changes no value. MirroredStrategy may
    trace replicas in parallel threads, hence the lock.
    """
    with _GATING_LOCK:
        if getattr(optimizer, "_keras_nfnet_gated", False):
            return
        # Bound methods, so `copy.deepcopy(optimizer)` rebinds them to the copy.
        optimizer.update_step = types.MethodType(_gated_update_step, optimizer)
        if hasattr(optimizer, "_all_reduce_sum_gradients"):
            optimizer._all_reduce_sum_gradients = types.MethodType(_replica_sum, optimizer)
        optimizer._keras_nfnet_gated = True


def _gated_update_step(self, gradient, variable, learning_rate):
    import tensorflow as tf

    with tf.control_dependencies([gradient]):
        return type(self).update_step(self, gradient, variable, learning_rate)


def _replica_sum(self, grads_and_vars):
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return grads_and_vars
    return type(self)._all_reduce_sum_gradients(self, grads_and_vars)
