"""Optimizer, learning-rate schedule and weight EMA of the NFNet recipe (docs/nfnet_reference.md
§14).

They live in the library (not in `training/`) so that a `.keras` file saved compiled by the trainer
loads after a plain ``import keras_nfnet``.

* `NesterovSGD`: SGD with (Nesterov) momentum in the PyTorch/DeepMind form, the learning rate
  **outside** the momentum buffer (§13.4 steps 3-5). Keras' `SGD` keeps the LR inside the buffer
  (``m <- mu m - lr g``), which differs under a changing LR (§14.1). AGC and coupled L2 are not
  here: `keras_nfnet.AGCModel` applies them to the gradient before this optimizer sees it.
* The EMA of the trainable weights with the TF1 warm-up ``d_t = min(decay, (1 + t)/(10 + t))``
  (§14.3) lives in the same optimizer, updated right after each variable's step. Keras'
  ``use_ema`` has no warm-up, so it is not used.
* `WarmupCosineDecay`: linear warm-up from 0, then cosine to ``end_learning_rate``, evaluated at
  the current step (the first update has LR 0).
"""

from __future__ import annotations

import contextlib
import math

import keras
from keras import ops

from keras_nfnet.registry import register


@register
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """§14.1: ``lr(t) = peak·t/w`` while ``t <= w``, then
    ``end + 0.5·(peak - end)·(1 + cos(π·(t - w)/(T - w)))``; ``T`` is the last step.

    ``warmup_steps`` may be fractional (DeepMind's ``5·1,281,167/4096 = 1563.92``). Steps past
    ``total_steps`` keep ``end_learning_rate``.

    Args:
        peak_learning_rate: the LR at the end of the warm-up (``0.1·batch/256`` in the recipe).
        warmup_steps: length of the linear warm-up, in steps (float).
        total_steps: T, the step where the cosine reaches ``end_learning_rate``.
        end_learning_rate: the final LR (0 in the NFNet recipe).

    Example:
    >>> s = WarmupCosineDecay(1.6, warmup_steps=1563.92, total_steps=112602)
    >>> [round(float(s(t)), 6) for t in (0, 1563, 112602)]
    [0.0, 1.599059, 0.0]
    """

    def __init__(
        self,
        peak_learning_rate: float,
        warmup_steps: float,
        total_steps: int,
        end_learning_rate: float = 0.0,
    ):
        if not total_steps > warmup_steps >= 0:
            raise ValueError(
                "Need 0 <= warmup_steps < total_steps. Received: "
                f"warmup_steps={warmup_steps!r}, total_steps={total_steps!r}."
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = float(warmup_steps)
        self.total_steps = int(total_steps)
        self.end_learning_rate = float(end_learning_rate)

    def __call__(self, step):
        t = ops.cast(step, "float32")
        peak, end = self.peak_learning_rate, self.end_learning_rate
        w, total = self.warmup_steps, float(self.total_steps)
        warmup = peak * t / max(w, 1e-12)
        progress = ops.clip((t - w) / (total - w), 0.0, 1.0)
        cosine = end + 0.5 * (peak - end) * (1.0 + ops.cos(math.pi * progress))
        return ops.where(t <= w, warmup, cosine) if w > 0 else cosine

    def get_config(self) -> dict:
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "end_learning_rate": self.end_learning_rate,
        }


def ema_decay_at(step, decay: float):
    """§14.3 TF1 warm-up: ``min(decay, (1 + t) / (10 + t))``.

    Example:
    >>> [round(float(ema_decay_at(t, 0.99999)), 5) for t in (0, 90, 10**7)]
    [0.1, 0.91, 0.99999]
    """
    t = ops.cast(step, "float32")
    return ops.minimum(decay, (1.0 + t) / (10.0 + t))


@register
class NesterovSGD(keras.optimizers.Optimizer):
    """SGD with momentum in the PyTorch/DeepMind form, plus an optional warm-up EMA (§13.4, §14.3).

    Per variable, with gradient ``g`` (already AGC-clipped and L2-decayed by `AGCModel`):

    * ``buf <- momentum·buf + g`` (dampening 0);
    * Nesterov: ``g <- g + momentum·buf``, otherwise ``g <- buf``;
    * ``p <- p - lr·g``;
    * with ``ema_decay``: ``ema <- d_t·ema + (1 - d_t)·p``, ``d_t = min(ema_decay,
      (1 + t)/(10 + t))``, t the step count before this step; the EMA starts as a copy of the
      initial weights.

    Use `swap_ema_weights` to evaluate or save the EMA weights.

    Args:
        learning_rate: float or `LearningRateSchedule` (evaluated at the current step).
        momentum: the momentum coefficient (0.9 in the recipe).
        nesterov: Nesterov momentum (True in the recipe).
        ema_decay: EMA decay (0.99999 in the recipe), or None for no EMA.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments (not ``use_ema``, ``weight_decay``
            or clipping: the recipe's decay is coupled L2 in `AGCModel`, its clipping is AGC).

    Example:
    >>> import numpy as np, keras
    >>> v = keras.Variable(np.ones(2, "float32"))
    >>> opt = NesterovSGD(0.1, momentum=0.9)
    >>> opt.apply([np.ones(2, "float32")], [v])
    >>> [round(float(x), 4) for x in np.asarray(v)]   # 1 - 0.1 * (1 + 0.9 * 1)
    [0.81, 0.81]
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        ema_decay: float | None = None,
        name: str = "nesterov_sgd",
        **kwargs,
    ):
        for key in ("use_ema", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue"):
            if kwargs.get(key):
                raise ValueError(
                    f"NesterovSGD does not take {key}={kwargs[key]!r}: the EMA is `ema_decay` "
                    "(with the §14.3 warm-up), weight decay is AGCModel's coupled "
                    "`l2_weight_decay`, and clipping is AGC (`agc_clipping`)."
                )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if isinstance(momentum, bool) or not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum!r}.")
        if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(
                f"ema_decay must be in (0, 1) or None. Received: ema_decay={ema_decay!r}."
            )
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.ema_decay = None if ema_decay is None else float(ema_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.ema_variables = []
        if self.ema_decay is not None:
            self.ema_variables = self.add_optimizer_variables(variables, "ema")
            for ema, variable in zip(self.ema_variables, variables):
                ema.assign(variable)  # §14.3: the EMA starts as a copy of the initial weights

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        mu = ops.cast(self.momentum, dtype)
        buf = self.momentums[index]
        self.assign(buf, mu * buf + g)
        step = g + mu * buf if self.nesterov else buf.value
        self.assign_sub(variable, lr * step)
        if self.ema_decay is not None:
            ema = self.ema_variables[index]
            # `iterations` is incremented after all variables are updated: it is t here.
            d = ops.cast(ema_decay_at(self.iterations, self.ema_decay), dtype)
            self.assign(ema, d * ema + (1.0 - d) * variable)

    @contextlib.contextmanager
    def swap_ema_weights(self):
        """Inside the context the model's trainable weights hold their EMA; raw ones after.

        Swapping (not copying) needs no extra memory, and swapping twice restores both.

        Example:
        >>> import numpy as np, keras
        >>> v = keras.Variable(np.zeros(1, "float32"))
        >>> opt = NesterovSGD(1.0, momentum=0.0, ema_decay=0.5)
        >>> opt.apply([-np.ones(1, "float32")], [v])  # v: 0 -> 1; ema: 0.1*0 + 0.9*1
        >>> with opt.swap_ema_weights():
        ...     round(float(np.asarray(v)[0]), 4)
        0.9
        >>> float(np.asarray(v)[0])
        1.0
        """
        if self.ema_decay is None or not self.built:
            raise ValueError(
                "swap_ema_weights needs an optimizer built with ema_decay set. Received: "
                f"ema_decay={self.ema_decay!r}, built={self.built}."
            )
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def _swap(self):
        for variable, ema in zip(self._trainable_variables, self.ema_variables):
            raw = ops.copy(variable.value)
            variable.assign(ema)
            ema.assign(raw)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {"momentum": self.momentum, "nesterov": self.nesterov, "ema_decay": self.ema_decay}
        )
        return config


def peak_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """§14.1: ``base·batch/256`` (0.1·4096/256 = 1.6 in the recipe).

    Example:
    >>> peak_learning_rate(0.1, 4096)
    1.6
    """
    return base_learning_rate * global_batch_size / 256.0
