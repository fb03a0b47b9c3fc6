"""Run an experiment: strategy, model, optimizer, `fit` with periodic evaluation, checkpoints and
resume, TensorBoard, `.keras` exports and ``metrics.json``.

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
weights at the end), ``final_ema.keras`` (EMA weights, when configured) and ``metrics.json``.
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

import dataclasses
import json
import math
import os
import shutil
import time
import zipfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_nfnet.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from keras_nfnet.models.nfnet import NFNet, get_variant
from keras_nfnet.optimizers import NesterovSGD, WarmupCosineDecay, peak_learning_rate
from training import data as data_lib
from training.configs import (
    EVAL_WEIGHTS,  # noqa: F401  (re-exported: the accepted values live in training.configs)
    PRECISIONS,  # noqa: F401
    STRATEGIES,
    ConfigError,
    ExperimentConfig,
    best_metric_key,
    dump_yaml,
    metric_names,
    validate,
)

MODES = ("train", "eval", "train_and_eval")
CHECKPOINT = "checkpoint.npz"


class CheckpointError(ConfigError):
    """``checkpoint.npz`` cannot be read, or was written by a run whose model or optimizer does
    not match the current one."""


# ----------------------------------------------------------------------------- files


def save_keras_atomic(model: keras.Model, path: str) -> None:
    """`model.save(path)`, atomically (`keras_nfnet.atomic`)."""
    with atomic_path(path) as tmp:
        model.save(tmp, overwrite=True)


def _model_variables(model: keras.Model) -> list:
    # `variables` includes the RNG states of dropout / stochastic depth (deterministic resume).
    return list(model.variables)


def save_checkpoint(path: str, model, optimizer, state: dict) -> None:
    """Atomically write model and optimizer variables and a JSON ``state`` to ``path`` (.npz)."""
    import io

    arrays = {}
    for prefix, variables in (("model", _model_variables(model)), ("opt", optimizer.variables)):
        for i, v in enumerate(variables):
            arrays[f"{prefix}/{i:05d}"] = np.asarray(keras.ops.convert_to_numpy(v.value))
    paths = {
        "model": [v.path for v in _model_variables(model)],
        "opt": [v.path for v in optimizer.variables],
    }
    arrays["state"] = np.frombuffer(json.dumps({**state, "paths": paths}).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


# What np.load and reading an entry of a damaged .npz raise.
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile)


def _unreadable(path: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {path!r} cannot be read: {why}. It is truncated or corrupt (a write killed "
        "by a full disk, a copy cut short?). Checkpoints are replaced atomically, so no earlier "
        "one is left: delete the file to restart the run from scratch, or restore a backup copy "
        "of it."
    )


def _read_state(f, path: str) -> dict:
    try:
        state = json.loads(bytes(f["state"]).decode())
    except KeyError:
        raise _unreadable(path, "it has no 'state' entry") from None
    except ValueError as err:  # also UnicodeDecodeError and json.JSONDecodeError
        raise _unreadable(path, f"its 'state' entry is not valid JSON ({err})") from err
    except _READ_ERRORS as err:
        raise _unreadable(path, f"its 'state' entry: {err}") from err
    paths = state.get("paths") if isinstance(state, dict) else None
    if (
        not isinstance(paths, dict)
        or not all(isinstance(paths.get(k), list) for k in ("model", "opt"))
        or not isinstance(state.get("loop"), int)
    ):
        raise _unreadable(path, "its 'state' entry lacks the loop or the variable paths")
    return state


def _entry_shapes(f) -> dict[str, tuple[int, ...]]:
    """The shape of every array in an open .npz, from the headers (no data is read)."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    shapes = {}
    for member in f.zip.namelist():
        name = member.removesuffix(".npy")
        with f.zip.open(member) as fp:
            reader = readers.get(np.lib.format.read_magic(fp))
            shapes[name] = tuple(reader(fp)[0]) if reader else tuple(f[name].shape)
    return shapes


def load_checkpoint(path: str, model, optimizer) -> dict:
    """Restore what `save_checkpoint` wrote (the optimizer must be built); return the state.

    The variable counts and every saved shape are checked against ``model`` and ``optimizer``
    before any variable is assigned.

    Raises:
        CheckpointError: ``path`` cannot be read (not an .npz, truncated, an entry missing, a
            state that is not the JSON `save_checkpoint` writes), naming the file and what to do;
            or it was written by a different configuration (a variable count or shape differs).
    """
    groups = (("model", _model_variables(model)), ("opt", optimizer.variables))
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array, not an .npz archive")
    except _READ_ERRORS as err:
        raise _unreadable(path, str(err) or type(err).__name__) from err
    with f:
        state = _read_state(f, path)
        try:
            shapes = _entry_shapes(f)
        except _READ_ERRORS as err:
            raise _unreadable(path, str(err)) from err
        for prefix, variables in groups:
            saved_paths = state["paths"][prefix]
            if len(saved_paths) != len(variables):
                raise CheckpointError(
                    f"Checkpoint {path!r} holds {len(saved_paths)} {prefix} variables, the "
                    f"current run has {len(variables)}: it was written by a different "
                    "configuration. Use a new model_dir or the original config."
                )
            for i, v in enumerate(variables):
                key = f"{prefix}/{i:05d}"
                if key not in shapes:
                    raise _unreadable(path, f"its entry {key!r} is missing")
                if shapes[key] != tuple(v.shape):
                    raise CheckpointError(
                        f"Checkpoint {path!r}: variable {saved_paths[i]!r} has shape "
                        f"{shapes[key]}, the current model's {v.path!r} has {tuple(v.shape)}: "
                        "it was written by a different configuration. Use a new model_dir or "
                        "the original config."
                    )
        for prefix, variables in groups:
            for i, v in enumerate(variables):
                key = f"{prefix}/{i:05d}"
                try:
                    value = f[key]
                except _READ_ERRORS as err:
                    raise _unreadable(path, f"its entry {key!r}: {err}") from err
                v.assign(value)
    return state


# ----------------------------------------------------------------------------- strategy


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


def _distribute(strategy, make):
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return make(None)
    return strategy.distribute_datasets_from_function(make)


# ----------------------------------------------------------------------------- model


def build_model(cfg: ExperimentConfig, num_classes: int) -> keras.Model:
    """The NFNet of ``cfg.model`` (an `AGCModel`) with a ``num_classes`` logits head."""
    m = cfg.model
    variant = get_variant(m.variant)
    if m.variant_overrides:
        fields = {f.name for f in dataclasses.fields(variant)}
        unknown = sorted(set(m.variant_overrides) - fields)
        if unknown:
            raise ValueError(
                f"Unknown model.variant_overrides key(s) {unknown}. Accepted: "
                f"{', '.join(sorted(fields))}."
            )
        overrides = {
            k: tuple(v) if isinstance(v, list) else v for k, v in m.variant_overrides.items()
        }
        variant = dataclasses.replace(variant, **overrides)
    model = NFNet(
        variant,
        input_shape=(None, None, 3),
        classes=num_classes,
        classifier_activation=None,
        dropout_rate=m.dropout_rate,
        stochdepth_rate=m.stochdepth_rate,
        numerics=m.numerics,
        name="nfnet",
    )
    if m.init_checkpoint:
        load_backbone(model, m.init_checkpoint, variant, m.numerics)
    return model


def load_backbone(model: keras.Model, path: str, variant=None, numerics: str = "deepmind") -> int:
    """Copy the weights of every same-named, same-shaped layer of a source model into ``model``
    (the classifier is left re-initialized when its class count differs).

    ``path`` is ``"imagenet"`` (the published weights of ``variant``, downloaded and converted
    by `keras_nfnet.weights`, without their classifier) or an existing `.keras` model file.
    Returns the number of layers copied.
    """
    if path == "imagenet":
        source = NFNet(variant, include_top=False, weights="imagenet", numerics=numerics)
        return _copy_layers(source, model, path)
    if not path.endswith(".keras") or not os.path.exists(path):
        raise ValueError(
            "model.init_checkpoint must be 'imagenet' or an existing .keras model file. "
            f"Received: {path!r}."
        )
    source = keras.saving.load_model(path, compile=False, safe_mode=True)
    return _copy_layers(source, model, path)


def _copy_layers(source: keras.Model, model: keras.Model, path: str) -> int:
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in model.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        values = other.get_weights()
        if [v.shape for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            copied += 1
    if copied == 0:
        raise ValueError(f"No layer of {path!r} matches the model being trained.")
    return copied


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
        r.write_checkpoint()


# ----------------------------------------------------------------------------- runner


class Runner:
    """Holds one run's strategy, data, model and state. `run_experiment` is the entry point."""

    def __init__(self, cfg: ExperimentConfig, model_dir: str, mode: str):
        if mode not in MODES:
            raise ConfigError(f"Unknown mode {mode!r}. Accepted: {', '.join(MODES)}.")
        validate(cfg)  # before the strategy connects to anything
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
            self.eval_ds = _distribute(
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
            atomic_write_text(path, dump_yaml(self.cfg))

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
        callbacks = [LoopEnd(self), keras.callbacks.TensorBoard(log_dir, write_graph=False)]

        def fit(first_loop, last_loop, steps_per_loop):
            start_step = first_loop * schedule.steps_per_loop
            ds = _distribute(
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
                verbose=cfg.trainer.verbose,
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
