"""`AGCTrainStep`: the Adaptive Gradient Clipping train step for any `keras.Model` subclass, and
`AGCModel`, the Functional model with it.

The step follows docs/nfnet_reference.md §13.4-§13.5 on every backend:

1. gradients of the loss (on the TF backend, Keras already scales the loss by 1/N replicas);
2. unscale them if the optimizer is a `keras.optimizers.LossScaleOptimizer`;
3. TF: ``all_reduce(SUM)`` across replicas, giving the global-batch mean gradient
   (JAX computes the global gradient directly under `keras.distribution`; torch has no replicas);
4. skip the step when a loss-scaled gradient is not finite, exactly as Keras'
   LossScaleOptimizer does (the loss scale halves; weights, optimizer state and iterations stay);
5. AGC on the mean gradient against the current weights (`keras_nfnet.agc.clip_gradients`);
6. optional coupled L2: ``g <- g + l2_weight_decay * w`` except for `decay_exempt` variables;
7. TF: divide by N, since the optimizer SUM-reduces the N identical copies again;
8. the optimizer update. The update is never multiplied or divided by the loss scale: with a
   LossScaleOptimizer the step calls its inner optimizer with the unscaled gradients and keeps the
   loss-scale state as Keras does.

AGC's built-in alternative in Keras (``clipnorm``/``global_clipnorm`` on the optimizer) runs
before the cross-replica reduction, so it clips per replica (§13.5); do not combine them.
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

from keras_nfnet import distribute_compat, fast, loss_scale
from keras_nfnet.agc import (
    DEFAULT_CLIPPING,
    DEFAULT_EPS,
    DEFAULT_EXCLUDE,
    check_agc_args,
    check_exclude,
    clip_gradients_with_stats,
    decay_exempt,
    unitwise_norm,
    unitwise_norm_tf_fused,
    unitwise_norm_torch_fused,
)
from keras_nfnet.registry import register

_AGC_KEYS = ("agc_clipping", "agc_eps", "agc_exclude", "l2_weight_decay")


def _first_batch_size(x):
    return ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]


class AGCTrainStep:
    """Mixin: a `keras.Model` subclass whose `train_step` applies Adaptive Gradient Clipping.

    Put it before the Keras base: ``class MyModel(AGCTrainStep, keras.Model)`` (or a keras-hub
    task), and `compile` takes the AGC settings of `AGCModel`, which is this mixin on a
    Functional model. The step is the one documented in this module, on every backend. Build a
    subclassed model before `fit` (a Functional one is built already): the optimizer is built
    for the model's variables before the first step.

    Example:
    >>> import numpy as np, keras
    >>> class Tiny(AGCTrainStep, keras.Model):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dense = keras.layers.Dense(3, name="predictions")
    ...     def call(self, x):
    ...         return self.dense(x)
    >>> model = Tiny()
    >>> _ = model(np.ones((1, 4)))  # builds its variables
    >>> model.compile(optimizer="sgd", loss="mse", agc_clipping=0.01)
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=1, verbose=0)
    >>> "agc_clip_fraction" in history.history
    True
    """

    def __init__(self, *args, **kwargs):
        # Keep this signature: Keras revives a Model subclass as Functional only when its
        # __init__ takes (*args, **kwargs).
        super().__init__(*args, **kwargs)
        self.agc_clipping = DEFAULT_CLIPPING
        self.agc_eps = DEFAULT_EPS
        self.agc_exclude = None
        self.l2_weight_decay = 0.0
        self._agc_exclude_checked = False

    def compile(
        self,
        *args,
        agc_clipping: float | None = DEFAULT_CLIPPING,
        agc_eps: float = DEFAULT_EPS,
        agc_exclude=None,
        l2_weight_decay: float = 0.0,
        **kwargs,
    ):
        """`keras.Model.compile` plus the AGC settings (see the class docstring).

        Raises:
            ValueError: for ``agc_clipping <= 0``, ``agc_eps <= 0``, ``l2_weight_decay < 0``, an
                ``agc_exclude`` pattern that matches no trainable variable, or an optimizer
                setting AGC cannot honour (a static ``loss_scale_factor``,
                ``gradient_accumulation_steps``).
        """
        check_agc_args(agc_clipping, agc_eps)
        if (
            isinstance(l2_weight_decay, bool)
            or not isinstance(l2_weight_decay, int | float)
            or not l2_weight_decay >= 0
        ):
            raise ValueError(
                "l2_weight_decay must be a number >= 0 (coupled L2, e.g. 2e-5; 0 turns it off). "
                f"Received: l2_weight_decay={l2_weight_decay!r}"
            )
        exclude = None
        if agc_exclude is not None:
            exclude = check_exclude(agc_exclude, self.trainable_variables)
        super().compile(*args, **kwargs)
        self._check_optimizer(agc_clipping)
        self.agc_clipping = None if agc_clipping is None else float(agc_clipping)
        self.agc_eps = float(agc_eps)
        self.agc_exclude = exclude
        self.l2_weight_decay = float(l2_weight_decay)
        self._agc_exclude_checked = bool(self.trainable_variables)

    def _check_optimizer(self, agc_clipping) -> None:
        optimizer = self.optimizer
        if optimizer is None:
            return
        inner = (
            optimizer.inner_optimizer
            if loss_scale.is_loss_scale_optimizer(optimizer)
            else optimizer
        )
        if (
            not loss_scale.is_loss_scale_optimizer(optimizer)
            and optimizer.loss_scale_factor is not None
        ):
            raise ValueError(
                "AGCModel needs unscaled gradients and cannot undo a static loss_scale_factor "
                "without rescaling the update. Use keras.optimizers.LossScaleOptimizer (or the "
                "mixed_float16 policy, which wraps the optimizer) instead. Received: "
                f"loss_scale_factor={optimizer.loss_scale_factor!r}"
            )
        if inner.gradient_accumulation_steps:
            raise ValueError(
                "AGCModel clips each step's global gradient, so optimizer gradient accumulation "
                "would clip micro-batches instead; use a larger batch. Received: "
                f"gradient_accumulation_steps={inner.gradient_accumulation_steps!r}"
            )
        if agc_clipping is not None and (
            inner.clipnorm or inner.global_clipnorm or inner.clipvalue
        ):
            warnings.warn(
                "The optimizer also clips (clipnorm/global_clipnorm/clipvalue). Keras applies that "
                "clipping before the cross-replica reduction, i.e. per replica, and on top of AGC "
                "(docs/nfnet_reference.md §13.5).",
                stacklevel=3,
            )

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config.update(
                agc_clipping=self.agc_clipping,
                agc_eps=self.agc_eps,
                agc_exclude=None if self.agc_exclude is None else list(self.agc_exclude),
                l2_weight_decay=self.l2_weight_decay,
            )
        return config

    def compile_from_config(self, config):
        config = dict(config)
        agc = {key: config.pop(key) for key in _AGC_KEYS if key in config}
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config, **agc)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ---------------------------------------------------------------- gradient processing

    def _clip_and_decay(self, grads, values, norm=unitwise_norm):
        """Steps 5-6: AGC (`keras_nfnet.agc.clip_gradients_with_stats`, the one clip loop) then
        coupled L2; returns (grads, fraction of units clipped)."""
        variables = self.trainable_variables
        fraction = ops.zeros((), "float32")
        if self.agc_clipping is not None:
            if self.agc_exclude is not None and not self._agc_exclude_checked:
                check_exclude(self.agc_exclude, variables)
                self._agc_exclude_checked = True
            exclude = DEFAULT_EXCLUDE if self.agc_exclude is None else self.agc_exclude
            grads, n_clipped, n_units = clip_gradients_with_stats(
                grads, variables, self.agc_clipping, self.agc_eps, exclude, norm=norm, values=values
            )
            fraction = n_clipped / max(n_units, 1)
        if self.l2_weight_decay > 0:
            grads = [
                g
                if g is None or decay_exempt(v)
                else g + ops.cast(w, g.dtype) * self.l2_weight_decay
                for g, v, w in zip(grads, variables, values)
            ]
        return grads, fraction

    def _unscale(self, grads, scale):
        """Step 2 (LossScaleOptimizer only), skipping variables it does not unscale either."""
        return [
            g
            if g is None or getattr(v, "overwrite_with_gradient", False)
            else ops.divide(g, ops.cast(scale, g.dtype))
            for g, v in zip(grads, self.trainable_variables)
        ]

    def _ensure_optimizer_built(self):
        # As `Optimizer.apply` does on its first call; needed here because the step reads the
        # LossScaleOptimizer's dynamic scale before it calls the optimizer.
        optimizer = self.optimizer
        if not optimizer.built:
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(self.trainable_variables)
            optimizer.built = True

    # ---------------------------------------------------------------- train steps

    def train_step(self, *args, **kwargs):
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tf_train_step(*args, **kwargs)
        if backend == "jax":
            return self._jax_train_step(*args, **kwargs)
        if backend == "torch":
            return self._torch_train_step(*args, **kwargs)
        raise NotImplementedError(f"AGCModel does not support the {backend!r} backend.")

    def _tf_train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        optimizer = self.optimizer
        self._ensure_optimizer_built()
        strategy = tf.distribute.get_strategy()
        num_replicas = strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True) if self._call_has_training_arg else self(x)
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            # The loss carries Keras' 1/N replica scaling; the tracker wants the replica mean.
            self._loss_tracker.update_state(
                loss * ops.cast(num_replicas, loss.dtype) if num_replicas > 1 else loss,
                sample_weight=_first_batch_size(x),
            )
            loss = optimizer.scale_loss(loss)

        variables = self.trainable_variables
        if not variables:
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)
            return self._tf_logs(x, y, y_pred, sample_weight, ops.zeros(()), strategy)
        grads = [
            None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)
        ]
        fraction = self._tf_update(grads, variables, optimizer, num_replicas)
        return self._tf_logs(x, y, y_pred, sample_weight, fraction, strategy)

    def _tf_update(self, grads, variables, optimizer, num_replicas):
        import tensorflow as tf

        lso = optimizer if loss_scale.is_loss_scale_optimizer(optimizer) else None
        if lso is not None:
            grads = self._unscale(grads, lso.dynamic_scale)
        if num_replicas > 1:
            # §13.5 step 3: the SUM of the 1/N-scaled replica gradients is the global mean.
            present = [i for i, g in enumerate(grads) if g is not None]
            reduced = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
            )
            for i, g in zip(present, reduced):
                grads[i] = g
        finite = lso.check_finite(grads) if lso is not None else None
        # TF has no XLA kernel for the one-pass norm; use it only when the step is not compiled.
        norm = unitwise_norm if self.jit_compile else unitwise_norm_tf_fused
        grads, fraction = self._clip_and_decay(grads, variables, norm)
        if num_replicas > 1:
            # §13.5 step 5: the optimizer SUM-reduces the N identical copies once more.
            grads = [None if g is None else g / num_replicas for g in grads]
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        fast.gate_updates(inner)
        # Decoupled weight decay runs for every variable before the first ``update_step``: with
        # it the whole update waits for every gradient.
        present = [g for g in grads if g is not None]
        barrier = [tf.group(*present)] if inner.weight_decay else []
        with tf.control_dependencies(barrier):
            if lso is None:
                optimizer.apply_gradients(zip(grads, variables))
            else:
                loss_scale.tf_apply(lso, grads, variables, finite)
        return fraction

    def _tf_logs(self, x, y, y_pred, sample_weight, fraction, strategy):
        logs = dict(self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
        logs["agc_clip_fraction"] = fraction
        return distribute_compat.fix_step_logs(logs, strategy)

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (_, aux), grads = grad_fn(
            trainable,
            non_trainable,
            metrics_vars,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_vars,
        )
        unscaled_loss, y_pred, non_trainable, metrics_vars = aux
        optimizer = self.optimizer
        if loss_scale.is_loss_scale_optimizer(optimizer):
            index = [id(v) for v in optimizer.variables].index(id(optimizer.dynamic_scale))
            grads = self._unscale(grads, optimizer_vars[index])
            grads, fraction = self._clip_and_decay(grads, trainable)
            trainable, optimizer_vars = loss_scale.stateless_apply(
                optimizer, optimizer_vars, grads, trainable
            )
        else:
            grads, fraction = self._clip_and_decay(grads, trainable)
            trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        logs, metrics_vars = self._update_metrics_variables(
            metrics_vars, unscaled_loss, x, y, y_pred, sample_weight
        )
        logs = dict(logs)
        logs["agc_clip_fraction"] = fraction
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    def _torch_train_step(self, data):
        import torch

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=True) if self._call_has_training_arg else self(x)
        self.zero_grad()
        loss = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        self._loss_tracker.update_state(loss, sample_weight=_first_batch_size(x))
        optimizer = self.optimizer
        self._ensure_optimizer_built()
        loss = optimizer.scale_loss(loss)
        fraction = ops.zeros(())
        if self.trainable_weights:
            loss.backward()
            variables = self.trainable_weights[:]
            grads = [v.value.grad for v in variables]
            norm = unitwise_norm_torch_fused if fast.fast_paths_enabled() else unitwise_norm
            with torch.no_grad():
                if loss_scale.is_loss_scale_optimizer(optimizer):
                    grads = self._unscale(grads, optimizer.dynamic_scale)
                    grads, fraction = self._clip_and_decay(grads, variables, norm)
                    loss_scale.stateful_apply(optimizer, grads, variables)
                else:
                    grads, fraction = self._clip_and_decay(grads, variables, norm)
                    optimizer.apply(grads, variables)
        else:
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        logs = dict(self.compute_metrics(x, y, y_pred, sample_weight=sample_weight))
        logs["agc_clip_fraction"] = fraction
        return logs

    # ---------------------------------------------------------------- MWMS workaround hooks

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # TF trainer hook; see keras_nfnet/distribute_compat.py (keras-team/keras issue 20585).
        iterator, data_batch = distribute_compat.symbolic_build_batch(
            self._distribute_strategy, iterator, data_batch
        )
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def test_step(self, *args, **kwargs):
        logs = super().test_step(*args, **kwargs)
        if keras.backend.backend() != "tensorflow":
            return logs
        import tensorflow as tf

        return distribute_compat.fix_step_logs(logs, tf.distribute.get_strategy())


@register
class AGCModel(AGCTrainStep, keras.Model):
    """A Functional model trained with Adaptive Gradient Clipping in its `train_step`.

    Build it like `keras.Model(inputs, outputs)`; `keras_nfnet.NFNet` returns one. AGC is
    configured in `compile`:

    * ``agc_clipping``: lambda (default 0.01, DeepMind's value at batch 4096 with SGD; see the
      README for other batch sizes and optimizers). ``None`` turns AGC off.
    * ``agc_eps``: the floor on parameter norms (default 1e-3).
    * ``agc_exclude``: regular expressions searched in ``variable.path``; matching variables are
      not clipped. ``None`` (default): the classifier kernel ``predictions/kernel`` only, as
      DeepMind does (docs/nfnet_reference.md §13.3; no error when the model has no such layer).
    * ``l2_weight_decay``: coupled L2 added to the gradient after AGC, skipping gains, biases and
      skip gains (`keras_nfnet.agc.decay_exempt`). Keras' decoupled ``weight_decay=`` on the
      optimizer stays available.

    `fit` logs ``agc_clip_fraction``, the fraction of clipped units in the last step.

    Example:
    >>> import numpy as np, keras
    >>> from keras_nfnet import AGCModel
    >>> inputs = keras.Input((4,))
    >>> outputs = keras.layers.Dense(3, name="predictions")(keras.layers.Dense(8)(inputs))
    >>> model = AGCModel(inputs, outputs)
    >>> model.compile(optimizer="sgd", loss="mse", agc_clipping=0.01)
    >>> history = model.fit(np.ones((8, 4)), np.zeros((8, 3)), epochs=1, verbose=0)
    >>> 0.0 < history.history["agc_clip_fraction"][0] <= 1.0
    True
    """
