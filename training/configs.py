"""Typed experiment configs, registered by name (TF Model Garden style).

An experiment is a nested dataclass (`ExperimentConfig`). `get_experiment(name)` returns a fresh
copy; `apply_overrides` applies a YAML file's nested dict or ``--params_override`` dotted keys,
checking every key and coercing every value to the field's type, so a typo fails instead of being
ignored. `to_dict` / `write_yaml` serialize the config the run actually used.

Example:
>>> cfg = get_experiment("digits_nfnet")
>>> cfg = apply_overrides(cfg, parse_params_override("trainer.train_epochs=2,train_data.seed=3"))
>>> cfg.trainer.train_epochs, cfg.train_data.seed
(2.0, 3)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable

import yaml


@dataclasses.dataclass
class ModelConfig:
    """The network: a row of `NFNET_VARIANTS` with optional field overrides (``variant_overrides``
    holds `NFNetVariant` fields such as ``depths`` or ``widths``: variants are data)."""

    variant: str = "F0"
    variant_overrides: dict = dataclasses.field(default_factory=dict)
    num_classes: int = 1000
    dropout_rate: float | None = None  # None: the variant's
    stochdepth_rate: float | None = None  # None: the variant's (0.25)
    numerics: str = "deepmind"
    # Fine-tuning: "imagenet" (published weights of `variant`) or a `.keras` model file whose
    # same-named layers are copied (see `training.runner.load_backbone`).
    init_checkpoint: str | None = None


@dataclasses.dataclass
class DataConfig:
    """One input pipeline (train or eval)."""

    source: str = "tfds"  # "tfds" | "image_folder" | "digits"
    name: str = "imagenet2012"  # TFDS dataset name
    split: str = "train"
    data_dir: str | None = None  # TFDS data_dir
    manual_dir: str | None = None  # TFDS manual download dir (imagenet2012)
    folder: str | None = None  # image folder root (one subfolder per class)
    image_size: int = 192
    global_batch_size: int = 4096
    shuffle_buffer_size: int = 10_000
    # Training augmentation (§14.6); ignored for evaluation.
    random_crop: bool = True
    random_flip: bool = True
    mixup_cutmix: bool = True
    mixup_alpha: float = 0.2
    randaugment: int | None = 405
    # Evaluation transform: "resize_crop_32" (§15) or "resize" (squash-resize to image_size).
    eval_transform: str = "resize_crop_32"
    deterministic: bool = False
    seed: int = 0
    skip_corrupt_images: bool = True
    cache: bool = False
    num_parallel_calls: int = -1  # -1: tf.data.AUTOTUNE


@dataclasses.dataclass
class OptimizerConfig:
    """§14.1: SGD (Nesterov 0.9), LR ``base_learning_rate·batch/256``, warm-up + cosine; §13: AGC;
    §14.3: EMA."""

    base_learning_rate: float = 0.1
    scale_by_batch_size: bool = True
    momentum: float = 0.9
    nesterov: bool = True
    warmup_epochs: float = 5.0
    end_learning_rate: float = 0.0
    weight_decay: float = 2e-5  # coupled L2, gains/biases/skip gains exempt
    agc_clipping: float | None = 0.01
    agc_eps: float = 1e-3
    agc_exclude: list | None = None  # None: AGCModel's default (the classifier kernel)
    ema_decay: float | None = 0.99999
    label_smoothing: float = 0.1


@dataclasses.dataclass
class TrainerConfig:
    train_epochs: float = 360.0
    train_steps: int | None = None  # overrides train_epochs
    steps_per_loop: int | None = None  # one Keras "epoch" = one loop; None: one data epoch
    validation_interval: int = 1  # evaluate every N loops
    validation_steps: int | None = None  # None: the whole eval split
    eval_weights: str = "both"  # "raw" | "ema" | "both" (§14.3: both, ema_ prefix)
    best_metric: str = "accuracy"
    precision: str = "auto"  # "auto" (bf16 on GPU/TPU, else float32) | "float32" | "bfloat16"
    seed: int = 0
    num_train_examples: int | None = None  # None: from the dataset
    verbose: int = 1  # Keras progress bars (0: silent, 1: bar, 2: one line per loop)


@dataclasses.dataclass
class RuntimeConfig:
    strategy: str = "default"  # "default" | "mirrored" | "multi_worker" | "tpu"
    tpu: str | None = None


@dataclasses.dataclass
class ExperimentConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train_data: DataConfig = dataclasses.field(default_factory=DataConfig)
    eval_data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(split="validation", global_batch_size=50)
    )
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)


_REGISTRY: dict[str, Callable[[], ExperimentConfig]] = {}


def register_experiment(name: str):
    """Decorator registering a zero-argument factory of an `ExperimentConfig` under ``name``."""

    def decorator(factory: Callable[[], ExperimentConfig]):
        if name in _REGISTRY:
            raise ValueError(f"Experiment {name!r} is already registered.")
        _REGISTRY[name] = factory
        return factory

    return decorator


def registered_experiments() -> list[str]:
    """Sorted names of the registered experiments."""
    from training import experiments  # noqa: F401  (registers the built-in experiments)

    return sorted(_REGISTRY)


def get_experiment(name: str) -> ExperimentConfig:
    """A fresh config of a registered experiment; ValueError listing the registered ones."""
    names = registered_experiments()
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown experiment {name!r}. Registered experiments: {', '.join(names)}."
        )
    return _REGISTRY[name]()


def _coerce(value, annotation, key: str):
    """Coerce ``value`` to the field type ``annotation`` (a string annotation resolved already)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{key} must be a bool. Received: {value!r}.")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{key} must be an integer. Received: {value!r}.")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key} must be a number. Received: {value!r}.")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{key} must be a string. Received: {value!r}.")
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ValueError(f"{key} must be a mapping. Received: {value!r}.")
    if annotation is list or origin is list:
        if isinstance(value, list | tuple):
            return list(value)
        raise ValueError(f"{key} must be a list. Received: {value!r}.")
    return value


def apply_overrides(config, overrides: dict, prefix: str = ""):
    """Apply a nested dict of overrides to a dataclass config in place and return it.

    Raises:
        ValueError: naming the first key that is not a config field (with the accepted ones), or
            a value of the wrong type.
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"Overrides for {prefix or 'the config'} must be a mapping: {overrides!r}")
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(
                f"Unknown config key {full!r}. Accepted keys under "
                f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}."
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            apply_overrides(current, value, prefix=f"{full}.")
        else:
            setattr(config, key, _coerce(value, hints[key], full))
    return config


def parse_params_override(text: str) -> dict:
    """``"a.b=1,c=[1, 2]"`` -> ``{"a": {"b": 1}, "c": [1, 2]}``; values are parsed as YAML.

    Commas inside brackets do not split.

    Example:
    >>> parse_params_override("model.variant_overrides.depths=[1, 1],trainer.seed=2")
    {'model': {'variant_overrides': {'depths': [1, 1]}}, 'trainer': {'seed': 2}}
    """
    result: dict = {}
    if not text or not text.strip():
        return result
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    for item in items:
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(
                f"--params_override entries must look like key.subkey=value. Received: {item!r}."
            )
        key, raw = item.split("=", 1)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return result


def load_yaml(path: str) -> dict:
    """Read a YAML config file as a nested dict."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"Config file {path!r} must hold a mapping at the top level.")
    return data


def to_dict(config) -> dict:
    """The config as plain nested dicts/lists (YAML- and JSON-safe)."""

    def plain(value):
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def dump_yaml(config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
