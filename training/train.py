"""Train and evaluate a registered experiment (TF Model Garden-style command line).

    python -m training.train --experiment=digits_nfnet --model_dir=runs/digits
    python -m training.train --experiment=nfnet_f0_imagenet --model_dir=gs://bucket/f0 \\
        --strategy=tpu --tpu=my-tpu \\
        --params_override=train_data.manual_dir=/data/imagenet,eval_data.manual_dir=/data/imagenet

--help and --helpfull list the registered experiments (under --experiment).

Config precedence: the registered experiment, then --config_file (YAML, nested keys), then
--params_override (a.b=1,c.d=[1, 2]; values are parsed as YAML 1.2, so 1e-3 is a number).
Unknown keys are errors. The resulting config is checked (training.configs.validate) and written
to model_dir/config.yaml; re-running the same command resumes from model_dir/checkpoint.npz.

A refused setting (an unknown key, a value out of range, a YAML syntax error in a config file or
an override, a checkpoint that does not fit or cannot be read) is reported before anything is
written to model_dir, as one "error: ..." line on stderr, with exit status 2.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

import keras_nfnet.quiet  # noqa: F401  (before TensorFlow: quiets its start-up lines)
import training.registry_imports  # noqa: F401  (registers the built-in experiments)

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", "digits_nfnet", "Registered experiment name.")
flags.DEFINE_string("model_dir", None, "Run directory (config, checkpoints, logs, models).")
flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval"], "What to run.")
flags.DEFINE_enum(
    "strategy", None, ["default", "mirrored", "multi_worker", "tpu"], "Overrides runtime.strategy."
)
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (runtime.tpu).")
flags.DEFINE_multi_string("config_file", None, "YAML file(s) of config overrides.")
flags.DEFINE_string("params_override", "", "Comma-separated key.subkey=value overrides.")
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "Split the CPU into this many logical devices (to exercise tf.distribute on a CPU).",
)


def build_config(
    experiment: str,
    config_files: list[str] | None = None,
    params_override: str = "",
    strategy: str | None = None,
    tpu: str | None = None,
):
    """The experiment config after config files, overrides and the strategy flags (not yet
    validated: see `training.configs.validate`).

    Raises:
        ConfigError: an unknown experiment or key, a value of the wrong type, a config file that
            does not exist or is not valid YAML, or ``params_override`` text that does not parse.
    """
    from training import configs

    cfg = configs.get_experiment(experiment)
    for path in config_files or []:
        if not os.path.exists(path):
            raise configs.ConfigError(f"--config_file {path!r} does not exist.")
        configs.apply_overrides(cfg, configs.load_yaml(path))
    configs.apply_overrides(cfg, configs.parse_params_override(params_override))
    if strategy is not None:
        cfg.runtime.strategy = strategy
    if tpu is not None:
        cfg.runtime.tpu = tpu
    return cfg


def _fail(err: Exception) -> None:
    message = " ".join(str(err).split())  # one line, whatever the message holds
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv) -> None:
    """Run the experiment the flags describe (`absl.app.run` parses them first).

    A `training.configs.ConfigError` (and any ValueError while the config is built) exits with
    status 2 after printing one ``error: ...`` line to stderr.
    """
    del argv
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required.")
    import tensorflow as tf

    if FLAGS.cpu_devices > 1:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        )
    from training.configs import ConfigError, validate
    from training.runner import run_experiment

    try:
        cfg = build_config(
            FLAGS.experiment,
            FLAGS.config_file,
            FLAGS.params_override,
            FLAGS.strategy,
            FLAGS.tpu,
        )
        validate(cfg)
    except ValueError as err:
        _fail(err)
    try:
        metrics = run_experiment(cfg, FLAGS.model_dir, FLAGS.mode)
    except ConfigError as err:  # a refusal: one line, no traceback
        _fail(err)
    print("Final metrics:")
    print(json.dumps(metrics, indent=2))


def _name_the_experiments() -> None:
    """Put the registered experiments into --experiment's help text."""
    from training.configs import registered_experiments

    names = ", ".join(registered_experiments())
    FLAGS["experiment"].help = f"Registered experiment name, one of: {names}."


class _HelpExitsZero:
    """absl's help flags print the help and exit with status 1; these name the registered
    experiments first and exit with status 0 (help asked for is not an error)."""

    def parse(self, arg):
        _name_the_experiments()
        try:
            super().parse(arg)
        except SystemExit as exit_:
            if exit_.code != 1:
                raise
            sys.exit(0)


class _Help(_HelpExitsZero, app.HelpFlag):
    pass


class _Helpshort(_HelpExitsZero, app.HelpshortFlag):
    pass


class _Helpfull(_HelpExitsZero, app.HelpfullFlag):
    pass


class _HelpXML(_HelpExitsZero, app.HelpXMLFlag):
    pass


def _define_help_flags() -> None:
    """Replace absl's --help (-?), --helpshort, --helpfull and --helpxml by the ones above."""
    app.define_help_flags()
    for name in ("help", "?", "helpshort", "helpfull", "helpxml"):
        delattr(FLAGS, name)
    for flag in (_Help(), _Helpshort(), _Helpfull(), _HelpXML()):
        flags.DEFINE_flag(flag, module_name="absl.app")


if __name__ == "__main__":
    _define_help_flags()
    app.run(main)
