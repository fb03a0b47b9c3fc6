"""Typed experiment configs, registered by name (TF Model Garden style).

An experiment is a nested dataclass (`ExperimentConfig`). `get_experiment(name)` returns a fresh
copy; `apply_overrides` applies a YAML file's nested dict or ``--params_override`` dotted keys,
checking every key and coercing every value to the field's type, so a typo fails instead of being
ignored. `validate` then checks every value against `CONSTRAINTS` (and a few settings that depend
on each other) before anything is built or written; `to_dict` / `dump_yaml` serialize the config
the run actually used.

Every refusal is a `ConfigError` (a ValueError) whose message names the key, the value received
and what is accepted; ``python -m training.train`` prints it as one ``error: ...`` line.

YAML is read with YAML 1.2 floats: ``1e-3`` is the number 0.001 (PyYAML alone follows YAML 1.1,
where a float needs a dot, and reads ``1e-3`` as a string). Numpy scalars (``np.float32(0.01)``,
``np.int64(3)``) are accepted wherever a Python number is.

Example:
>>> cfg = get_experiment("digits_nfnet")
>>> overrides = parse_params_override("trainer.train_epochs=2,optimizer.agc_eps=1e-3")
>>> cfg = apply_overrides(cfg, overrides)
>>> cfg.trainer.train_epochs, cfg.optimizer.agc_eps
(2.0, 0.001)
>>> validate(apply_overrides(cfg, {"trainer": {"steps_per_loop": -1}}))
Traceback (most recent call last):
...
training.configs.ConfigError: trainer.steps_per_loop must be an integer >= 1, ... Received: -1.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import yaml

from keras_nfnet.agc import DEFAULT_CLIPPING, DEFAULT_EPS
from keras_nfnet.architecture.rows import MODEL_SPECS, NFNET_VARIANTS, NFNetVariant
from keras_nfnet.architecture.spec import NFSpec
from keras_nfnet.models.nfnet import NUMERICS

SOURCES = ("tfds", "image_folder", "digits")
EVAL_TRANSFORMS = ("resize_crop_32", "crop_resize", "resize")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("auto", "float32", "bfloat16")
EVAL_WEIGHTS = ("raw", "ema", "both")
VERBOSITIES = (0, 1, 2)


class ConfigError(ValueError):
    """A setting the run refuses before it starts: a config value, a config file or
    ``--params_override`` text, or what ``model_dir`` holds (an incompatible or unreadable
    checkpoint). The message names the key (or file), the value received and what is accepted;
    the CLI prints it as one ``error: ...`` line and exits with status 2."""


@dataclasses.dataclass
class ModelConfig:
    """The network: any `keras_nfnet.create_model` row (``name``), or, without a name, a
    DeepMind F variant of `NFNET_VARIANTS` (``variant``), with optional field overrides
    (``variant_overrides``: `NFSpec` fields for a row, `NFNetVariant` fields for a variant, such
    as ``depths``: models are data). Built by `training.task.build_model`."""

    name: str | None = None  # e.g. "eca_nfnet_l0", "nf_resnet50", "dm_nf_regnet_b0"
    variant: str = "F0"
    variant_overrides: dict = dataclasses.field(default_factory=dict)
    num_classes: int = 1000
    dropout_rate: float | None = None  # None: the variant's
    stochdepth_rate: float | None = None  # None: the variant's (0.25)
    numerics: str | None = None  # None: the row's (timm's for timm rows, DeepMind's for F)
    # Fine-tuning: "imagenet" (published weights of `name` or `variant`) or a `.keras` model
    # file whose same-named layers are copied (see `training.task.load_backbone`).
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
    # None: the network's train size (train_data) or test size (eval_data).
    image_size: int | None = 192
    global_batch_size: int = 4096
    shuffle_buffer_size: int = 10_000
    # Training augmentation (§14.6); ignored for evaluation.
    random_crop: bool = True
    random_flip: bool = True
    mixup_cutmix: bool = True
    mixup_alpha: float = 0.2
    randaugment: int | None = 405
    # Evaluation transform: "resize_crop_32" (§15), "crop_resize" (aspect-preserving centre crop
    # at S/(S+32), then resize; DeepMind's base experiment, §14.8) or "resize" (squash-resize).
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
    agc_clipping: float | None = DEFAULT_CLIPPING
    agc_eps: float = DEFAULT_EPS
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
    """Sorted names of the registered experiments (import `training.registry_imports` first to
    have the built-in ones)."""
    return sorted(_REGISTRY)


def get_experiment(name: str) -> ExperimentConfig:
    """A fresh config of a registered experiment; `ConfigError` listing the registered ones."""
    names = registered_experiments()
    if name not in _REGISTRY:
        raise ConfigError(
            f"Unknown experiment {name!r}. Registered experiments: {', '.join(names)}."
        )
    return _REGISTRY[name]()


# ----------------------------------------------------------------------------- coercion

_KINDS = {
    bool: "a bool (true or false)",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a mapping",
    list: "a list",
}


def _to_float(value: numbers.Real) -> float:
    # A numpy float narrower than float64 converts through its shortest decimal form, so
    # np.float32(0.01) becomes 0.01 (what was meant), not 0.009999999776482582.
    if isinstance(value, np.floating) and np.dtype(type(value)).itemsize < 8:
        return float(str(value))
    return float(value)


def _convert(value, kind):
    """``value`` as ``kind`` (a non-union annotation); TypeError if it is not one."""
    is_bool = isinstance(value, bool | np.bool_)
    if kind is bool:
        if is_bool:
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif kind is int:
        if isinstance(value, numbers.Integral) and not is_bool:
            return int(value)
        if isinstance(value, numbers.Real) and not is_bool and float(value).is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, numbers.Real) and not is_bool:
            return _to_float(value)
    elif kind is str:
        if isinstance(value, str):
            return str(value)
    elif kind is dict or typing.get_origin(kind) is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif kind is list or typing.get_origin(kind) is list:
        if isinstance(value, list | tuple):
            return list(value)
    else:
        return value
    raise TypeError(kind)


def _coerce(value, annotation, key: str):
    """Coerce ``value`` to the field type ``annotation`` (a string annotation resolved already).

    Accepts numpy scalars where a Python bool/int/float is expected.

    Raises:
        ConfigError: naming ``key``, the value and the accepted type(s).
    """
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(kinds) < len(typing.get_args(annotation))
    else:
        kinds, nullable = [annotation], False
    if value is None and nullable:
        return None
    for kind in kinds:
        try:
            return _convert(value, kind)
        except TypeError:
            continue
    accepted = " or ".join(_KINDS.get(typing.get_origin(k) or k, str(k)) for k in kinds)
    accepted += " or null" if nullable else ""
    raise ConfigError(f"{key} must be {accepted}. Received: {value!r}.")


def apply_overrides(config, overrides: dict, prefix: str = ""):
    """Apply a nested dict of overrides to a dataclass config in place and return it.

    Values are coerced to the fields' types (`validate` checks their ranges afterwards).

    Raises:
        ConfigError: naming the first key that is not a config field (with the accepted ones),
            a value of the wrong type, or a value given for a whole section.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"Overrides for {prefix.rstrip('.') or 'the config'} must be a mapping. "
            f"Received: {overrides!r}."
        )
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"Unknown config key {full!r}. Accepted keys under "
                f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}."
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                names = [f.name for f in dataclasses.fields(current)]
                raise ConfigError(
                    f"{full} is a config section, not a value: set the keys under it (e.g. "
                    f"{full}.{names[0]}=...). Received: {full}={value!r}. Accepted keys under "
                    f"{full}: {', '.join(sorted(names))}."
                )
            apply_overrides(current, value, prefix=f"{full}.")
        else:
            setattr(config, key, _coerce(value, hints[key], full))
    return config


# ----------------------------------------------------------------------------- YAML


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads ``1e-3``, ``2E5``, ``1.0e3`` as floats (YAML 1.2)."""


class _Dumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes strings `_Loader` would read as floats."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A one-line description of a YAML error (the parser's own message spans several)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        where = err.problem_mark
        text = " ".join(p for p in (err.context, err.problem) if p)
        if where is not None:
            text += f" (line {where.line + 1}, column {where.column + 1})"
        return text
    return " ".join(str(err).split())


def load_yaml_text(text: str, what: str = "YAML text"):
    """Parse ``text`` as YAML (with YAML 1.2 floats); ``what`` names it in the error.

    Example:
    >>> load_yaml_text("eps: 1e-3")
    {'eps': 0.001}
    >>> load_yaml_text("a: [1, 2", "Config file 'c.yaml'")
    Traceback (most recent call last):
    ...
    training.configs.ConfigError: Config file 'c.yaml' is not valid YAML: while parsing a flow \
sequence expected ',' or ']', but got '<stream end>' (line 1, column 9).

    Raises:
        ConfigError: ``what`` is not valid YAML (one line: the problem, its line and column).
    """
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_problem(err)}.") from err


def parse_params_override(text: str) -> dict:
    """``"a.b=1,c=[1, 2]"`` -> ``{"a": {"b": 1}, "c": [1, 2]}``; values are parsed as YAML.

    Commas inside brackets do not split. A key given twice keeps its last value; mappings given
    for the same key are merged.

    Example:
    >>> parse_params_override("model.variant_overrides.depths=[1, 1],trainer.seed=2")
    {'model': {'variant_overrides': {'depths': [1, 1]}}, 'trainer': {'seed': 2}}

    Raises:
        ConfigError: an entry without ``=``, an empty key part, a value that is not valid YAML
            (naming the entry), or a key set both to a value and to keys under it
            (``trainer=3,trainer.seed=1``).
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
            raise ConfigError(
                f"--params_override entries must look like key.subkey=value. Received: {item!r}."
            )
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(
                f"--params_override keys must be dot-separated names (e.g. trainer.seed). "
                f"Received: {key.strip()!r} in {item!r}."
            )
        what = f"--params_override entry {item.strip()!r}"
        value = load_yaml_text(raw, what) if raw.strip() else ""
        _set_path(result, parts, value, text)
    return result


def _set_path(tree: dict, parts: list[str], value, text: str, prefix: str = "") -> None:
    """Set ``tree[parts[0]]...[parts[-1]] = value``, merging mappings; refuse a key that would
    be both a value and a section."""

    def conflict(path: str, old) -> ConfigError:
        return ConfigError(
            f"--params_override sets {path!r} both to a value ({old!r}) and to keys under it; "
            f"give one or the other. Received: {text!r}."
        )

    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise conflict(prefix + ".".join(parts[: i + 1]), child)
        node = child
    leaf, old = parts[-1], node.get(parts[-1])
    path = prefix + ".".join(parts)
    if isinstance(old, dict) and isinstance(value, dict):
        for k, v in value.items():
            _set_path(old, [k], v, text, prefix=f"{path}.")
    elif isinstance(old, dict) or (leaf in node and isinstance(value, dict)):
        raise conflict(path, value if isinstance(old, dict) else old)
    else:
        node[leaf] = value


def load_yaml(path: str) -> dict:
    """Read a YAML config file as a nested dict.

    Raises:
        ConfigError: naming ``path``: it cannot be read, is not valid YAML, or does not hold a
            mapping at the top level.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Config file {path!r} cannot be read: {err}.") from err
    data = load_yaml_text(text, f"Config file {path!r}") or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path!r} must hold a mapping at the top level. Received: {data!r}."
        )
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


def dump_yaml(config, applicable: bool = False) -> str:
    """The config as YAML text (`load_yaml` reads it back to the same values).

    ``applicable=True`` (what a run writes to ``config.yaml``) leaves out the keys that do not
    apply to this config (`applicable_dict`)."""
    data = applicable_dict(config) if applicable else to_dict(config)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


# Keys of a DataConfig that only the training pipeline reads, and only the evaluation one.
_TRAIN_ONLY = ("random_crop", "random_flip", "mixup_cutmix", "mixup_alpha", "randaugment")
_TRAIN_ONLY += ("shuffle_buffer_size",)
_EVAL_ONLY = ("eval_transform",)
# Keys each data source does not read.
_UNUSED_BY_SOURCE = {
    "digits": ("name", "data_dir", "manual_dir", "folder", "skip_corrupt_images"),
    "image_folder": ("name", "data_dir", "manual_dir"),
    "tfds": ("folder",),
}


def applicable_dict(config: ExperimentConfig) -> dict:
    """`to_dict` without the keys that do not apply to this config, so that ``config.yaml`` shows
    what the run used: the data keys its source and split role do not read, ``model.variant``
    when a row is named (``model.name`` when not), the AGC settings when AGC is off, the mixing
    strength without mixing, the TPU address without a TPU strategy. ``trainer.best_metric`` is
    written as the metric that picks ``best.keras`` (`best_metric_key`: ``ema_accuracy`` when
    the EMA weights are evaluated), which reads back to the same choice.

    Example:
    >>> import training.registry_imports
    >>> d = applicable_dict(get_experiment("digits_nfnet"))
    >>> "name" in d["eval_data"], "random_crop" in d["eval_data"], d["trainer"]["best_metric"]
    (False, False, 'ema_accuracy')
    """
    data = to_dict(config)
    for section, drop in (("train_data", _EVAL_ONLY), ("eval_data", _TRAIN_ONLY)):
        part = data[section]
        for key in (*drop, *_UNUSED_BY_SOURCE.get(part["source"], ())):
            part.pop(key, None)
        if not part.get("mixup_cutmix", True):
            part.pop("mixup_alpha", None)
    data["model"].pop("variant" if config.model.name else "name")
    if config.optimizer.agc_clipping is None:
        for key in ("agc_eps", "agc_exclude"):
            data["optimizer"].pop(key)
    if config.runtime.strategy != "tpu":
        data["runtime"].pop("tpu")
    data["trainer"]["best_metric"] = best_metric_key(config)
    return data


# ----------------------------------------------------------------------------- validation


@dataclasses.dataclass(frozen=True)
class Rule:
    """The values one field accepts.

    Attributes:
        accepted: what is accepted, after "must be" in the error; ``{number}`` is replaced by
            "an integer" or "a number" from the field's type.
        check: true for an accepted (already type-coerced, non-null) value.
        null: what null means, for a field that may be null (said in the error).
    """

    accepted: str | Callable[[], str]
    check: Callable[[Any], bool]
    null: str | None = None

    def describe(self, annotation) -> str:
        accepted = self.accepted() if callable(self.accepted) else self.accepted
        number = "an integer" if int in (annotation, *typing.get_args(annotation)) else "a number"
        text = accepted.replace("{number}", number)
        return f"{text}, or null ({self.null})" if self.null else text


def _finite(v) -> bool:
    if isinstance(v, numbers.Integral):
        return True  # (math.isfinite would overflow on ints beyond the float range)
    return isinstance(v, numbers.Real) and math.isfinite(v)


def at_least(low: float, *, null: str | None = None) -> Rule:
    """Finite values ``>= low``."""
    return Rule(f"{{number}} >= {low:g}", lambda v: _finite(v) and v >= low, null)


def above(low: float, *, null: str | None = None) -> Rule:
    """Finite values ``> low``."""
    return Rule(f"{{number}} > {low:g}", lambda v: _finite(v) and v > low, null)


def in_range(low: float, high: float, *, null: str | None = None) -> Rule:
    """Values in the half-open interval ``[low, high)``."""
    return Rule(
        f"{{number}} in [{low:g}, {high:g})", lambda v: _finite(v) and low <= v < high, null
    )


def one_of(*choices, null: str | None = None) -> Rule:
    """One of ``choices``."""
    return Rule(f"one of {', '.join(map(repr, choices))}", lambda v: v in choices, null)


def _variants() -> tuple[str, ...]:
    return tuple(NFNET_VARIANTS)


def _variant_fields() -> tuple[str, ...]:
    # NFNetVariant fields (a variant) or NFSpec fields (a named row); task.build_model checks
    # the exact set for the configured network.
    fields = [*dataclasses.fields(NFNetVariant), *dataclasses.fields(NFSpec)]
    return tuple(dict.fromkeys(f.name for f in fields))


def _numerics() -> tuple[str, ...]:
    return NUMERICS


def _are_patterns(values: list) -> bool:
    try:
        return all(isinstance(v, str) and re.compile(v) for v in values)
    except re.error:
        return False


def _is_init_checkpoint(value: str) -> bool:
    return value == "imagenet" or (value.endswith(".keras") and os.path.exists(value))


# Per-field constraints, by section type (train_data and eval_data share DataConfig's). A field
# that may be null accepts null; every other value must pass its rule. Fields not listed accept
# any value of their type.
CONSTRAINTS: dict[type, dict[str, Rule]] = {
    ModelConfig: {
        "variant": Rule(
            lambda: f"an NFNet variant ({', '.join(_variants())})",
            lambda v: v.upper() in _variants(),
        ),
        "name": Rule(
            lambda: f"a create_model name ({', '.join(MODEL_SPECS)})",
            lambda v: v in MODEL_SPECS,
            null="the DeepMind F variant `variant`",
        ),
        "variant_overrides": Rule(
            lambda: (
                f"a mapping with NFNetVariant or NFSpec fields as keys "
                f"({', '.join(_variant_fields())})"
            ),
            lambda v: all(k in _variant_fields() for k in v),
        ),
        "num_classes": at_least(0),  # 0: from the dataset
        "dropout_rate": in_range(0, 1, null="the variant's"),
        "stochdepth_rate": in_range(0, 1, null="the variant's"),
        "numerics": Rule(
            lambda: f"one of {', '.join(map(repr, _numerics()))}",
            lambda v: v in _numerics(),
            null="the row's",
        ),
        "init_checkpoint": Rule(
            "'imagenet' or an existing .keras model file",
            _is_init_checkpoint,
            null="train from scratch",
        ),
    },
    DataConfig: {
        "source": one_of(*SOURCES),
        "image_size": at_least(1, null="the network's train / test size"),
        "global_batch_size": at_least(1),
        "shuffle_buffer_size": at_least(1),
        "mixup_alpha": above(0),
        "randaugment": Rule(
            "an integer 100*layers + magnitude (e.g. 405, 415)",
            lambda v: v >= 100,
            null="no RandAugment",
        ),
        "eval_transform": one_of(*EVAL_TRANSFORMS),
        "seed": at_least(0),
        "num_parallel_calls": Rule(
            "-1 (tf.data.AUTOTUNE) or an integer >= 1", lambda v: v == -1 or v >= 1
        ),
    },
    OptimizerConfig: {
        "base_learning_rate": above(0),
        "momentum": in_range(0, 1),
        "warmup_epochs": at_least(0),
        "end_learning_rate": at_least(0),
        "weight_decay": at_least(0),
        "agc_clipping": above(0, null="no AGC"),
        "agc_eps": above(0),
        "agc_exclude": Rule(
            "a list of regular expressions (searched in variable paths)",
            _are_patterns,
            null="the classifier kernel",
        ),
        "ema_decay": in_range(0, 1, null="no EMA"),
        "label_smoothing": in_range(0, 1),
    },
    TrainerConfig: {
        "train_epochs": above(0),
        "train_steps": at_least(1, null="from train_epochs"),
        "steps_per_loop": at_least(1, null="one loop per data epoch"),
        "validation_interval": at_least(1),
        "validation_steps": at_least(1, null="the whole eval split"),
        "eval_weights": one_of(*EVAL_WEIGHTS),
        "precision": one_of(*PRECISIONS),
        "seed": Rule("an integer in [0, 2**32)", lambda v: 0 <= v < 2**32),
        "num_train_examples": at_least(1, null="from the dataset"),
        "verbose": one_of(*VERBOSITIES),
    },
    RuntimeConfig: {"strategy": one_of(*STRATEGIES)},
}


def metric_names(num_classes: int) -> tuple[str, ...]:
    """What one evaluation of one set of weights reports (``top5_accuracy`` above 5 classes).

    Example:
    >>> metric_names(10), metric_names(3)
    (('loss', 'accuracy', 'top5_accuracy'), ('loss', 'accuracy'))
    """
    return ("loss", "accuracy") + (("top5_accuracy",) if num_classes > 5 else ())


def evaluates_ema(config: ExperimentConfig) -> bool:
    """Whether evaluations include the EMA weights (``ema_``-prefixed metrics)."""
    return config.trainer.eval_weights != "raw" and config.optimizer.ema_decay is not None


def eval_metric_names(config: ExperimentConfig) -> tuple[str, ...]:
    """The metric names an evaluation of this run reports: raw ones unless ``eval_weights`` is
    ``"ema"``, ``ema_`` ones when the EMA weights are evaluated. With ``model.num_classes=0``
    (from the dataset) ``top5_accuracy`` is assumed; the runner checks again once it is known.

    Example:
    >>> eval_metric_names(get_experiment("digits_nfnet"))  # doctest: +NORMALIZE_WHITESPACE
    ('loss', 'accuracy', 'top5_accuracy', 'ema_loss', 'ema_accuracy', 'ema_top5_accuracy')
    """
    base = metric_names(config.model.num_classes or 6)
    ema = evaluates_ema(config)
    raw = base if config.trainer.eval_weights != "ema" or not ema else ()
    return raw + (tuple(f"ema_{n}" for n in base) if ema else ())


def best_metric_key(config: ExperimentConfig) -> str:
    """The evaluation metric that picks ``best.keras``: ``trainer.best_metric``, with the
    ``ema_`` prefix added when the EMA weights are evaluated (an ``ema_`` name is taken as is).
    Metrics named ``*loss`` are minimized, the others maximized."""
    name = config.trainer.best_metric
    if name.startswith("ema_") or not evaluates_ema(config):
        return name
    return f"ema_{name}"


def _check_best_metric(config: ExperimentConfig) -> None:
    reported = eval_metric_names(config)
    if best_metric_key(config) in reported:
        return
    base = metric_names(config.model.num_classes or 6)
    accepted = base + (tuple(f"ema_{n}" for n in base) if evaluates_ema(config) else ())
    note = (
        " (a name without ema_ means its ema_ form, as the EMA weights are evaluated)"
        if evaluates_ema(config)
        else " (no EMA weights are evaluated: eval_weights='raw' or ema_decay=null)"
    )
    raise ConfigError(
        f"trainer.best_metric must be one of the metrics this run evaluates: "
        f"{', '.join(map(repr, accepted))}{note}. Received: {config.trainer.best_metric!r}."
    )


def _check_cross_fields(config: ExperimentConfig, num_replicas: int) -> None:
    if config.trainer.eval_weights == "ema" and config.optimizer.ema_decay is None:
        raise ConfigError(
            "trainer.eval_weights must be 'raw' or 'both' when optimizer.ema_decay is null (there "
            "are no EMA weights to evaluate; or set optimizer.ema_decay). Received: 'ema'."
        )
    _check_best_metric(config)
    for section in ("train_data", "eval_data"):
        data = getattr(config, section)
        if data.source == "image_folder" and not data.folder:
            raise ConfigError(
                f"{section}.folder must be an image folder (folder/<class>/<image>) when "
                f"{section}.source is 'image_folder'. Received: {data.folder!r}."
            )
        batch = data.global_batch_size
        if batch % num_replicas:
            raise ConfigError(
                f"{section}.global_batch_size must be divisible by the number of replicas "
                f"({num_replicas}). Received: {batch}."
            )
    train = config.train_data
    if train.mixup_cutmix and (train.global_batch_size // num_replicas) % 2:
        raise ConfigError(
            f"train_data.global_batch_size must be a multiple of 2 x {num_replicas} replica(s) "
            "with train_data.mixup_cutmix=true (MixUp/CutMix pair the two halves of each "
            f"per-replica batch). Received: {train.global_batch_size}."
        )


def validate(config: ExperimentConfig, num_replicas: int | None = None) -> ExperimentConfig:
    """Check every setting of ``config`` before anything is built or written; return it.

    Each field is coerced to its type (numpy scalars become Python numbers) and checked against
    its `CONSTRAINTS` rule; then the settings that depend on each other: ``best_metric`` must be
    a metric the run evaluates (`eval_metric_names`), ``eval_weights='ema'`` needs an
    ``ema_decay``, an ``image_folder`` source needs a ``folder``, and the global batch sizes
    must split evenly over ``num_replicas`` (1 when not given; even halves with MixUp/CutMix).
    Cheap and idempotent: the runner calls it again once the strategy and the dataset's class
    count are known.

    Example:
    >>> cfg = get_experiment("digits_nfnet")
    >>> cfg.optimizer.base_learning_rate = np.float32(0.01)
    >>> validate(cfg).optimizer.base_learning_rate
    0.01
    >>> cfg.trainer.best_metric = "f1"
    >>> validate(cfg)
    Traceback (most recent call last):
    ...
    training.configs.ConfigError: trainer.best_metric must be one of ... Received: 'f1'.

    Raises:
        ConfigError: naming the first refused key, the value received and what is accepted.
    """
    for section in dataclasses.fields(config):
        sub = getattr(config, section.name)
        hints = typing.get_type_hints(type(sub))
        rules = CONSTRAINTS.get(type(sub), {})
        for field in dataclasses.fields(sub):
            key = f"{section.name}.{field.name}"
            value = _coerce(getattr(sub, field.name), hints[field.name], key)
            setattr(sub, field.name, value)
            rule = rules.get(field.name)
            if rule is not None and value is not None and not rule.check(value):
                raise ConfigError(
                    f"{key} must be {rule.describe(hints[field.name])}. Received: {value!r}."
                )
    _check_cross_fields(config, num_replicas or 1)
    return config
