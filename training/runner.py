"""Run an experiment: strategy, model, optimizer, `fit` with periodic evaluation, checkpoints and
resume, TensorBoard, `.keras` exports and ``metrics.json``.

The pieces live in their own modules: `training.checkpoints` (checkpoint I/O),
`training.strategy` (tf.distribute), `training.task` (the network of any `create_model` row),
`training.schedule` (step arithmetic); this module is the loop that joins them.

Training runs as Model Garden does, in **loops** of ``steps_per_loop`` steps: one Keras "epoch"
of `fit` is one loop (so the progress bar shows loops), each ending with an optional evaluation
(raw and EMA weights, §14.3) and a checkpoint. The checkpoint (``model_dir/checkpoint.npz``:
model variables including RNG states, optimizer variables including the step counter, momentum
and EMA, and the loop/best-metric state) is written to a temporary file in the same directory and
moved into place with `os.replace`, so a process killed at any moment leaves the previous
complete checkpoint. Restarting the same command restores it and rebuilds the input stream at
the restored step (`training.data.train_dataset` is a pure function of its start step), so a
deterministic configuration ends with the weights an uninterrupted run would have.

Files in ``model_dir``: ``config.yaml`` (the config actually used), ``checkpoint.npz``,
``logs/`` (TensorBoard: loss, accuracy, learning_rate, agc_clip_fraction, eval metrics),
``best.keras`` (the evaluated weights with the best ``best_metric``), ``final.keras`` (raw
weights at the end), ``final_ema.keras`` (EMA weights, when configured), ``metrics.json``, and
``history.json`` / ``curves.png`` (per-loop train and eval metrics, `training.curves`).
Under MultiWorkerMirroredStrategy only the chief writes there; other workers write to
``model_dir/.worker-<id>/``, which is deleted at the end.

Nothing is written before the run is known to proceed: the config is checked by
`training.configs.validate` (when the `Runner` is made, and again once the strategy's replica
count and the dataset's class count are known), and an existing checkpoint is checked against the
model (and read) before ``config.yaml`` is written, so a refused run, fresh or resumed, leaves
``model_dir`` as it was. Each refusal is a `training.configs.ConfigError` (a `CheckpointError`
for the checkpoint).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from typing import Any

import keras
import tensorflow as tf

from keras_nfnet.atomic import atomic_write_text
from keras_nfnet.optimizers import NesterovSGD, WarmupCosineDecay
from training import data as data_lib
from training.checkpoints import (
    CHECKPOINT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    save_keras_atomic,
)
from training.configs import (
    EVAL_WEIGHTS,  # noqa: F401  (re-exported: the accepted values live in training.configs)
    PRECISIONS,  # noqa: F401
    ConfigError,
    ExperimentConfig,
    best_metric_key,
    dump_yaml,
    metric_names,
    validate,
)
from training.curves import plot_curves
from training.schedule import make_schedule
from training.strategy import distribute_datasets, is_chief, make_strategy
from training.task import build_model, model_spec

MODES = ("train", "eval", "train_and_eval")


# ----------------------------------------------------------------------------- callbacks


class LoopEnd(keras.callbacks.Callback):
    """At the end of every loop: learning rate into the logs, periodic evaluation (raw and EMA),
    best-model export and the checkpoint (in that order, so the checkpoint has the best metric)."""

    def __init__(self, runner: Runner):
        super().__init__()
        self.runner = runner

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        r = self.runner
        optimizer = r.model.optimizer
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(optimizer.learning_rate)
        )  # the LR the next step uses
        loop = epoch + 1
        if r.eval_ds is not None and (
            loop % r.cfg.trainer.validation_interval == 0 or loop == r.schedule.num_loops
        ):
            results = r.evaluate()
            logs.update({f"val_{k}": v for k, v in results.items()})
            r.update_best(results)
        r.state["loop"] = loop
        r.state["train_logs"] = {k: float(v) for k, v in logs.items()}
        # The curves' data (history.json, curves.png); in the checkpoint, so resuming keeps it.
        r.state.setdefault("history", []).append(
            {"loop": loop, "step": r.step, **r.state["train_logs"]}
        )
        r.write_checkpoint()


class LoopProgress(keras.callbacks.Callback):
    """Keras' progress display, counted in the run's loops: ``Epoch k/N`` with N the loops the
    config asks for, across the one or two `fit` calls of a run (a last, shorter loop included)
    and across a resume. ``verbose`` 1: a bar per loop; 2: one line per loop."""

    def __init__(self, num_loops: int, steps_of_loop, verbose: int):
        super().__init__()
        self.num_loops, self.steps_of_loop, self.verbose = num_loops, steps_of_loop, verbose

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.num_loops}", flush=True)
        self.bar = keras.utils.Progbar(self.steps_of_loop(epoch), verbose=self.verbose)

    def _update(self, step, logs, finalize=False):
        logs = logs or {}
        self.bar.stateful_metrics = set(logs)  # shown as they are, not averaged again
        self.bar.update(step, list(logs.items()), finalize=finalize)

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose == 1:
            self._update(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose:
            self._update(self.steps_of_loop(epoch), logs, finalize=True)


# ----------------------------------------------------------------------------- runner


class Runner:
    """Holds one run's strategy, data, model and state. `run_experiment` is the entry point."""

    def __init__(self, cfg: ExperimentConfig, model_dir: str, mode: str):
        if mode not in MODES:
            raise ConfigError(f"Unknown mode {mode!r}. Accepted: {', '.join(MODES)}.")
        validate(cfg)  # before the strategy connects to anything
        # A copy: setup resolves values (model.num_classes=0 -> the dataset's) in the run's own
        # config, never in the one it was given.
        cfg = copy.deepcopy(cfg)
        self.cfg, self.mode = cfg, mode
        self.strategy = make_strategy(cfg.runtime.strategy, cfg.runtime.tpu)
        validate(cfg, num_replicas=self.strategy.num_replicas_in_sync)
        self.chief = is_chief(self.strategy)
        self.model_dir = model_dir
        self.out_dir = model_dir if self.chief else self._worker_dir()
        self.state: dict[str, Any] = {"loop": 0, "best": None, "best_loop": None}
        self.eval_ds = None
        # Corrupt image files each split's source skipped, and all of them (each file once).
        self.skipped_by_split: dict[str, tuple[str, ...]] = {}
        self.skipped_files: tuple[str, ...] = ()

    def _worker_dir(self) -> str:
        resolver = self.strategy.cluster_resolver
        return os.path.join(self.model_dir, f".worker-{resolver.task_type}-{resolver.task_id}")

    # ---------------------------------------------------------------- setup

    def _set_precision(self) -> None:
        precision = self.cfg.trainer.precision
        if precision == "auto":
            accelerated = tf.config.list_logical_devices("GPU") or isinstance(
                self.strategy, tf.distribute.TPUStrategy
            )
            precision = "bfloat16" if accelerated else "float32"
        # §14.4: bf16 compute, float32 master weights, no loss scaling.
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if precision == "bfloat16" else "float32"
        )

    def setup(self) -> None:
        cfg = self.cfg
        keras.utils.set_random_seed(cfg.trainer.seed)
        self._set_precision()
        spec, _ = model_spec(cfg.model)  # image_size None: the network's own sizes
        cfg.train_data.image_size = cfg.train_data.image_size or spec.train_size
        cfg.eval_data.image_size = cfg.eval_data.image_size or spec.test_size
        training = self.mode != "eval"
        self.train_source = data_lib.make_source(cfg.train_data) if training else None
        self.eval_source = data_lib.make_source(cfg.eval_data) if self.mode != "train" else None
        for split, source in (("train", self.train_source), ("eval", self.eval_source)):
            if source is not None:
                self.skipped_by_split[split] = source.skipped_files
        self.skipped_files = tuple(
            dict.fromkeys(f for files in self.skipped_by_split.values() for f in files)
        )
        source = self.train_source or self.eval_source
        self.num_classes = cfg.model.num_classes or source.num_classes
        if cfg.model.num_classes == 0:
            cfg.model.num_classes = self.num_classes
        for src in (self.train_source, self.eval_source):
            if src is not None and src.num_classes > self.num_classes:
                raise ConfigError(
                    f"model.num_classes must be at least the dataset's {src.num_classes} "
                    f"classes (or 0: from the dataset). Received: {self.num_classes}."
                )
        # Again, now that the class count (which metrics are reported) is known.
        validate(cfg, num_replicas=self.strategy.num_replicas_in_sync)
        num_train = cfg.trainer.num_train_examples or (
            self.train_source.num_examples if self.train_source else 1
        )
        self.schedule = make_schedule(cfg, num_train)
        opt = cfg.optimizer
        with self.strategy.scope():
            self.model = build_model(cfg, self.num_classes)
            optimizer = NesterovSGD(
                WarmupCosineDecay(
                    self.schedule.peak_learning_rate,
                    self.schedule.warmup_steps,
                    self.schedule.total_steps,
                    opt.end_learning_rate,
                ),
                momentum=opt.momentum,
                nesterov=opt.nesterov,
                ema_decay=opt.ema_decay,
            )
            factories = {
                "accuracy": lambda: keras.metrics.CategoricalAccuracy(name="accuracy"),
                "top5_accuracy": lambda: keras.metrics.TopKCategoricalAccuracy(
                    5, name="top5_accuracy"
                ),
            }
            metrics = [factories[n]() for n in metric_names(self.num_classes) if n != "loss"]
            self.model.compile(
                optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=opt.label_smoothing
                ),
                metrics=metrics,
                agc_clipping=opt.agc_clipping,
                agc_eps=opt.agc_eps,
                agc_exclude=opt.agc_exclude,
                l2_weight_decay=opt.weight_decay,
            )
            optimizer.build(self.model.trainable_variables)
        if self.eval_source is not None:
            self.eval_ds = distribute_datasets(
                self.strategy,
                lambda ctx: data_lib.eval_dataset(
                    cfg.eval_data, self.eval_source, self.num_classes, ctx
                ),
            )

    def write_config(self) -> None:
        """Create the output folder and (chief) write ``config.yaml``: the first writes of a
        run, made once `setup` and `restore` have accepted it."""
        os.makedirs(self.out_dir, exist_ok=True)
        if self.chief:
            path = os.path.join(self.model_dir, "config.yaml")
            atomic_write_text(path, dump_yaml(self.cfg, applicable=True))

    # ---------------------------------------------------------------- state

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.out_dir, CHECKPOINT)

    def restore(self) -> bool:
        """Load ``model_dir/checkpoint.npz`` if there is one (False if not).

        Raises:
            CheckpointError: it cannot be read, does not fit the model, or (when training) ends
                off a loop boundary of the current ``steps_per_loop``.
        """
        path = os.path.join(self.model_dir, CHECKPOINT)
        if not os.path.exists(path):
            return False
        saved = load_checkpoint(path, self.model, self.model.optimizer)
        saved.pop("paths", None)
        self.state.update(saved)
        schedule, loop = self.schedule, int(self.state["loop"])
        if (
            self.mode != "eval"
            and self.step != loop * schedule.steps_per_loop
            and self.step < schedule.total_steps
        ):
            raise CheckpointError(
                f"Checkpoint {path!r} is at step {self.step}, not at the end of loop {loop} "
                f"of trainer.steps_per_loop={schedule.steps_per_loop}: steps_per_loop changed "
                "since it was written. Use the original steps_per_loop or a new model_dir."
            )
        print(
            f"Restored {path} at step {self.step} (loop {self.state['loop']}).",
            flush=True,
        )
        return True

    @property
    def step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def write_checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, self.model, self.model.optimizer, self.state)

    def evaluate(self) -> dict[str, float]:
        """Metrics of the raw and/or EMA weights (EMA metrics get the ``ema_`` prefix)."""
        which = self.cfg.trainer.eval_weights
        has_ema = self.cfg.optimizer.ema_decay is not None
        steps = self.cfg.trainer.validation_steps
        results: dict[str, float] = {}
        if which in ("raw", "both") or not has_ema:
            out = self.model.evaluate(self.eval_ds, steps=steps, verbose=0, return_dict=True)
            results.update({k: float(v) for k, v in out.items()})
        if which in ("ema", "both") and has_ema:
            with self.model.optimizer.swap_ema_weights():
                out = self.model.evaluate(self.eval_ds, steps=steps, verbose=0, return_dict=True)
            results.update({f"ema_{k}": float(v) for k, v in out.items()})
        return results

    def update_best(self, results: dict[str, float]) -> None:
        """Keep ``best.keras`` at the best `training.configs.best_metric_key` so far (``*loss``
        metrics: the lowest; others: the highest). A best recorded for another metric (the
        config changed between runs) is replaced."""
        key = best_metric_key(self.cfg)
        if key not in results:  # validate() refuses such a best_metric up front
            raise ConfigError(
                f"trainer.best_metric {self.cfg.trainer.best_metric!r} is not an evaluation "
                f"metric. Available: {', '.join(sorted(results))}."
            )
        value, best = results[key], self.state["best"]
        lower = key.endswith("loss")
        if (
            best is None
            or best.get("metric") != key
            or (value < best["value"] if lower else value > best["value"])
        ):
            self.state["best"] = {"metric": key, "value": value, "step": self.step}
            if self.chief:
                self.save_model("best.keras", ema=key.startswith("ema_"))

    def save_model(self, name: str, ema: bool = False) -> None:
        path = os.path.join(self.out_dir, name)
        if ema:
            with self.model.optimizer.swap_ema_weights():
                save_keras_atomic(self.model, path)
        else:
            save_keras_atomic(self.model, path)

    # ---------------------------------------------------------------- run

    def train(self) -> None:
        cfg, schedule = self.cfg, self.schedule
        start_loop = int(self.state["loop"])
        full_loops = schedule.total_steps // schedule.steps_per_loop
        remainder = schedule.total_steps - full_loops * schedule.steps_per_loop
        log_dir = os.path.join(self.out_dir, "logs")
        callbacks = [
            LoopEnd(self),
            keras.callbacks.TensorBoard(log_dir, write_graph=False),
            LoopProgress(
                schedule.num_loops,
                lambda loop: schedule.steps_per_loop if loop < full_loops else remainder,
                cfg.trainer.verbose,
            ),
        ]

        def fit(first_loop, last_loop, steps_per_loop):
            start_step = first_loop * schedule.steps_per_loop
            ds = distribute_datasets(
                self.strategy,
                lambda ctx: data_lib.train_dataset(
                    cfg.train_data, self.train_source, self.num_classes, start_step, ctx
                ),
            )
            self.model.fit(
                ds,
                initial_epoch=first_loop,
                epochs=last_loop,
                steps_per_epoch=steps_per_loop,
                callbacks=callbacks,
                verbose=0,  # LoopProgress shows the loops of the whole run
                shuffle=False,  # the stream is shuffled by the pipeline, deterministically
            )

        if start_loop < full_loops:
            fit(start_loop, full_loops, schedule.steps_per_loop)
        if remainder and self.step < schedule.total_steps:
            fit(full_loops, full_loops + 1, remainder)

    def run(self) -> dict:
        """Set up, restore, train and evaluate; return the metrics (also ``metrics.json``).

        Besides the train/eval metrics and ``best``, the metrics hold ``skipped_images``, the
        number of distinct corrupt image files skipped (a file read by both splits counts once),
        and ``skipped_images_per_split``, e.g. ``{"train": 2, "eval": 2}`` for the splits read.
        """
        started = time.time()
        self.setup()
        restored = self.restore()
        self.write_config()
        if self.mode != "eval":
            self.train()
        metrics: dict[str, Any] = {
            "experiment_steps": self.schedule.total_steps,
            "step": self.step,
            "restored": restored,
            "skipped_images": len(self.skipped_files),
            "skipped_images_per_split": {k: len(v) for k, v in self.skipped_by_split.items()},
        }
        if self.mode != "eval":
            metrics["train"] = self.state.get("train_logs", {})
        if self.eval_ds is not None:
            metrics["eval"] = self.evaluate()
            if self.mode == "train_and_eval" and self.state["best"] is None:
                self.update_best(metrics["eval"])
        metrics["best"] = self.state["best"]
        metrics["wall_time_s"] = round(time.time() - started, 1)
        if self.chief:
            if self.mode != "eval":
                self.save_model("final.keras")
                if self.cfg.optimizer.ema_decay is not None:
                    self.save_model("final_ema.keras", ema=True)
                history = self.state.get("history", [])
                atomic_write_text(
                    os.path.join(self.model_dir, "history.json"), json.dumps(history, indent=2)
                )
                plot_curves(history, os.path.join(self.model_dir, "curves.png"))
            atomic_write_text(
                os.path.join(self.model_dir, "metrics.json"), json.dumps(metrics, indent=2)
            )
        else:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        return metrics


def run_experiment(cfg: ExperimentConfig, model_dir: str, mode: str = "train_and_eval") -> dict:
    """Run ``cfg`` in ``model_dir`` (resuming from its checkpoint if any); return the metrics
    also written to ``model_dir/metrics.json``."""
    return Runner(cfg, model_dir, mode).run()
