"""The recipe's optimizer and schedule, re-exported from `keras_nfnet.optimizers`."""

from keras_nfnet.optimizers import (
    NesterovSGD,
    WarmupCosineDecay,
    ema_decay_at,
    peak_learning_rate,
)

__all__ = ["NesterovSGD", "WarmupCosineDecay", "ema_decay_at", "peak_learning_rate"]
