"""Loss-scale bookkeeping for a train step that hands the optimizer already unscaled gradients.

These mirror `keras.optimizers.LossScaleOptimizer` (Keras 3.15.1) with one difference: AGC
needs the gradients unscaled before it clips them, so the inner optimizer receives them as they
are instead of divided by the loss scale a second time. A non-finite step halves the scale and
changes nothing else; ``dynamic_growth_steps`` finite steps in a row double it.
"""

from __future__ import annotations

import keras
from keras import ops


def is_loss_scale_optimizer(optimizer) -> bool:
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def _upscale(lso):
    lso.step_counter.assign(0)
    lso.dynamic_scale.assign(ops.multiply(lso.dynamic_scale, 2.0))


def _count(lso):
    lso.step_counter.assign_add(1)


def _grows(lso):
    """Whether this finite step is the one that doubles the scale."""
    return ops.equal(lso.step_counter, lso.dynamic_growth_steps - 1)


def _grow_or_count(lso):
    ops.cond(_grows(lso), lambda: _upscale(lso), lambda: _count(lso))


def _shrink(lso):
    lso.step_counter.assign(0)
    lso.dynamic_scale.assign(ops.multiply(lso.dynamic_scale, 0.5))


def _apply_finite(lso, grads, variables):
    lso.inner_optimizer.apply(grads, trainable_variables=variables)
    _grow_or_count(lso)


def stateful_apply(lso, grads, variables, finite=None):
    """LossScaleOptimizer._common_apply for already unscaled gradients."""
    finite = lso.check_finite(grads) if finite is None else finite
    ops.cond(finite, lambda: _apply_finite(lso, grads, variables), lambda: _shrink(lso))


def tf_apply(lso, grads, variables, finite):
    """LossScaleOptimizer._tf_apply (merge_call for MirroredStrategy) for unscaled gradients.

    ``finite`` was computed from the all-reduced gradients, so every replica agrees on it.
    """
    import tensorflow as tf

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        stateful_apply(lso, grads, variables, finite)
        return

    def cross_replica(distribution, grads, finite):
        finite = distribution.experimental_local_results(finite)[0]

        def apply_fn():
            distribution.extended.call_for_each_replica(_apply_finite, args=(lso, grads, variables))

        # As in Keras: the cond must run in cross-replica context because the inner optimizer's
        # apply calls merge_call.
        ops.cond(finite, apply_fn, lambda: _shrink(lso))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, finite))


def stateless_apply(lso, optimizer_variables, grads, trainable_variables):
    """LossScaleOptimizer.stateless_apply (JAX) for already unscaled gradients."""
    n_own = len(lso.variables) - len(lso.inner_optimizer.variables)
    own = lso.variables[:n_own]
    mapping = list(zip(lso.variables, optimizer_variables))

    def own_values(update):
        with keras.StatelessScope(state_mapping=mapping) as scope:
            update()
        return [scope.get_current_value(v) for v in own]

    def on_finite():
        with keras.StatelessScope(state_mapping=mapping):
            new_own = ops.cond(
                _grows(lso),
                lambda: own_values(lambda: _upscale(lso)),
                lambda: own_values(lambda: _count(lso)),
            )
        new_trainable, new_inner = lso.inner_optimizer.stateless_apply(
            list(optimizer_variables[n_own:]), grads, trainable_variables
        )
        return list(new_trainable), list(new_own) + list(new_inner)

    def on_non_finite():
        new_own = own_values(lambda: _shrink(lso))
        return list(trainable_variables), new_own + list(optimizer_variables[n_own:])

    return ops.cond(lso.check_finite(grads), on_finite, on_non_finite)
