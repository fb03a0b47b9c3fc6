"""The step arithmetic of a run (docs/nfnet_reference.md §14.1): steps, loops, warm-up, peak LR."""

from __future__ import annotations

import dataclasses
import math

from keras_nfnet.optimizers import peak_learning_rate
from training.configs import ConfigError, ExperimentConfig


@dataclasses.dataclass
class Schedule:
    total_steps: int
    steps_per_loop: int
    steps_per_epoch: float
    warmup_steps: float
    peak_learning_rate: float

    @property
    def num_loops(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_loop)


def make_schedule(cfg: ExperimentConfig, num_train_examples: int) -> Schedule:
    """§14.1 step arithmetic: ``steps_per_epoch = N / B`` (a float), ``T = N·epochs // B``,
    ``w = warmup_epochs·N / B``."""
    batch = cfg.train_data.global_batch_size
    steps_per_epoch = num_train_examples / batch
    total = cfg.trainer.train_steps or int(num_train_examples * cfg.trainer.train_epochs // batch)
    if total < 1:
        raise ConfigError(
            f"trainer.train_epochs={cfg.trainer.train_epochs:g} gives {total} training steps "
            f"({num_train_examples} examples, train_data.global_batch_size={batch}). Accepted: "
            "at least one step; raise trainer.train_epochs or set trainer.train_steps."
        )
    spl = cfg.trainer.steps_per_loop or max(1, math.ceil(steps_per_epoch))
    opt = cfg.optimizer
    warmup = min(opt.warmup_epochs * steps_per_epoch, total - 1)
    lr = (
        peak_learning_rate(opt.base_learning_rate, batch)
        if opt.scale_by_batch_size
        else opt.base_learning_rate
    )
    return Schedule(total, min(spl, total), steps_per_epoch, warmup, lr)
