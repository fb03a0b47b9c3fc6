"""The trainer refuses bad settings up front (issue 16): `training.configs.validate`, YAML and
override errors, numpy and ``1e-3`` values, checkpoint compatibility and damage, corrupt-image
counts, and the CLI's one-line ``error:`` report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from keras_nfnet.optimizers import NesterovSGD
from training import configs
from training.configs import ConfigError
from training.runner import CheckpointError, load_checkpoint, run_experiment, save_checkpoint
from training.train import build_config

# The unfused path (conftest.py): these runs check the trainer, not the fused kernels.
pytestmark = pytest.mark.usefixtures("reference_path")

# A few-second run: a very small NFNet at 16x16 on an image folder shared by train and eval.
TINY = (
    "model.variant_overrides={depths: [1, 1, 1, 1], widths: [8, 8, 8, 8], "
    "stem_widths: [4, 4, 8], group_width: 8},model.num_classes=0,"
    "train_data.source=image_folder,eval_data.source=image_folder,"
    "train_data.image_size=16,eval_data.image_size=16,"
    "train_data.global_batch_size=4,eval_data.global_batch_size=4,"
    "trainer.train_steps=2,trainer.steps_per_loop=2,trainer.verbose=0"
)


def _config(override: str = "", folder: str = "unused"):
    text = f"{TINY},train_data.folder={folder},eval_data.folder={folder}"
    return build_config("digits_nfnet", params_override=f"{text},{override}".rstrip(","))


def _write_folder(root, corrupt: int) -> None:
    for c in ("a", "b"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(4):
            image = np.full((20, 24, 3), 30 * i + (100 if c == "b" else 0), "uint8")
            (root / c / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    for i in range(corrupt):
        (root / "a" / f"bad{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished tiny run whose folder (train and eval both) holds 2 corrupt files."""
    root = tmp_path_factory.mktemp("settings")
    _write_folder(root / "images", corrupt=2)
    model_dir = root / "run"
    with pytest.warns(UserWarning, match="Skipping 2 corrupt image file"):
        metrics = run_experiment(_config(folder=str(root / "images")), str(model_dir))
    return root / "images", model_dir, metrics


# ----------------------------------------------------------------------------- 1: values


@pytest.mark.parametrize(
    ("override", "key", "received"),
    [
        ("trainer.steps_per_loop=-1", "trainer.steps_per_loop", "-1"),
        ("trainer.validation_interval=0", "trainer.validation_interval", "0"),
        ("train_data.global_batch_size=0", "train_data.global_batch_size", "0"),
        ("train_data.global_batch_size=-32", "train_data.global_batch_size", "-32"),
        ("eval_data.global_batch_size=0", "eval_data.global_batch_size", "0"),
        ("train_data.image_size=0", "train_data.image_size", "0"),
        ("optimizer.warmup_epochs=-1", "optimizer.warmup_epochs", "-1.0"),
        ("optimizer.base_learning_rate=-0.1", "optimizer.base_learning_rate", "-0.1"),
        ("optimizer.base_learning_rate=.nan", "optimizer.base_learning_rate", "nan"),
        ("trainer.best_metric=f1", "trainer.best_metric", "'f1'"),
        ("trainer.best_metric=top5_accuracy,model.num_classes=3", "best_metric", "'top5"),
        ("trainer.best_metric=ema_loss,trainer.eval_weights=raw", "best_metric", "'ema_loss'"),
        ("trainer.eval_weights=ema,optimizer.ema_decay=null", "trainer.eval_weights", "'ema'"),
        ("trainer.train_epochs=0", "trainer.train_epochs", "0.0"),
        ("trainer.train_steps=0", "trainer.train_steps", "0"),
        ("trainer.validation_steps=-5", "trainer.validation_steps", "-5"),
        ("trainer.num_train_examples=0", "trainer.num_train_examples", "0"),
        ("trainer.seed=-1", "trainer.seed", "-1"),
        ("trainer.verbose=3", "trainer.verbose", "3"),
        ("trainer.eval_weights=emma", "trainer.eval_weights", "'emma'"),
        ("trainer.precision=float16", "trainer.precision", "'float16'"),
        ("runtime.strategy=gpu", "runtime.strategy", "'gpu'"),
        ("train_data.source=s3", "train_data.source", "'s3'"),
        ("eval_data.eval_transform=crop", "eval_data.eval_transform", "'crop'"),
        ("train_data.shuffle_buffer_size=0", "train_data.shuffle_buffer_size", "0"),
        ("train_data.mixup_alpha=0", "train_data.mixup_alpha", "0.0"),
        ("train_data.num_parallel_calls=0", "train_data.num_parallel_calls", "0"),
        ("train_data.num_parallel_calls=-2", "train_data.num_parallel_calls", "-2"),
        ("train_data.randaugment=5", "train_data.randaugment", "5"),
        ("train_data.seed=-3", "train_data.seed", "-3"),
        ("train_data.folder=null", "train_data.folder", "None"),
        ("train_data.mixup_cutmix=true,train_data.global_batch_size=5", "global_batch", "5"),
        ("optimizer.momentum=1", "optimizer.momentum", "1.0"),
        ("optimizer.weight_decay=-1e-5", "optimizer.weight_decay", "-1e-05"),
        ("optimizer.end_learning_rate=-1", "optimizer.end_learning_rate", "-1.0"),
        ("optimizer.agc_clipping=0", "optimizer.agc_clipping", "0.0"),
        ("optimizer.agc_eps=-1e-3", "optimizer.agc_eps", "-0.001"),
        ("optimizer.ema_decay=1", "optimizer.ema_decay", "1.0"),
        ("optimizer.label_smoothing=1", "optimizer.label_smoothing", "1.0"),
        ("model.num_classes=-1", "model.num_classes", "-1"),
        ("model.dropout_rate=1.5", "model.dropout_rate", "1.5"),
        ("model.variant=F9", "model.variant", "'F9'"),
        ("model.numerics=jax", "model.numerics", "'jax'"),
        ("model.init_checkpoint=missing.keras", "model.init_checkpoint", "'missing.keras'"),
        ("model.variant_overrides.depht=[1]", "model.variant_overrides", "{'depths'"),
        ("optimizer.agc_exclude=['*kernel']", "optimizer.agc_exclude", "['*kernel']"),
    ],
)
def test_impossible_values_are_refused_before_anything_is_written(
    override, key, received, tmp_path
):
    cfg = _config(override)
    model_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, str(model_dir))
    message = str(err.value)
    assert key in message and f"Received: {received}" in message, message
    assert "must be" in message and "\n" not in message, message
    assert not model_dir.exists()  # no config.yaml, no checkpoint, not even the folder


def test_the_accepted_values_are_named():
    with pytest.raises(ConfigError) as err:
        configs.validate(_config("trainer.steps_per_loop=-1"))
    assert str(err.value) == (
        "trainer.steps_per_loop must be an integer >= 1, or null (one loop per data epoch). "
        "Received: -1."
    )
    with pytest.raises(ConfigError) as err:
        configs.validate(_config("trainer.best_metric=f1"))
    message = str(err.value)
    for name in ("'loss'", "'accuracy'", "'top5_accuracy'", "'ema_accuracy'"):
        assert name in message, message
    for good in ("loss", "ema_loss", "accuracy", "ema_top5_accuracy"):
        configs.validate(_config(f"trainer.best_metric={good}"))


# ----------------------------------------------------------------------------- 2-4: parsing


def test_yaml_syntax_errors_name_the_file_or_the_override(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  seed: [1, 2\n  verbose: 0\n")
    with pytest.raises(ConfigError) as err:
        build_config("digits_nfnet", [str(path)])
    message = str(err.value)
    assert f"Config file {str(path)!r} is not valid YAML" in message and "line 3" in message
    assert "\n" not in message
    with pytest.raises(ConfigError) as err:
        build_config("digits_nfnet", params_override="trainer.verbose=0,trainer.seed=[1, 2")
    message = str(err.value)
    assert "--params_override entry 'trainer.seed=[1, 2' is not valid YAML" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "override", ["trainer=3,trainer.seed=1", "trainer.seed=1,trainer=3", "trainer=3"]
)
def test_a_value_where_a_section_belongs_is_refused(override):
    with pytest.raises(ConfigError, match=r"'?trainer'?.*\b3\b") as err:
        build_config("digits_nfnet", params_override=override)
    assert "section" in str(err.value) or "both to a value" in str(err.value)
    with pytest.raises(ConfigError, match=r"'trainer\.seed' both to a value \(1\)"):
        build_config("digits_nfnet", params_override="trainer.seed=1,trainer.seed.x=2")


def test_exponent_floats_are_numbers_in_overrides_and_config_files(tmp_path):
    cfg = build_config(
        "digits_nfnet", params_override="optimizer.agc_eps=1e-3,trainer.train_steps=1e2"
    )
    assert cfg.optimizer.agc_eps == 0.001 and cfg.trainer.train_steps == 100
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  base_learning_rate: 2E-1\n  weight_decay: 5e-5\n")
    cfg = build_config("digits_nfnet", [str(path)])
    assert (cfg.optimizer.base_learning_rate, cfg.optimizer.weight_decay) == (0.2, 5e-5)
    # config.yaml round-trips, including a string that looks like an exponent float.
    cfg.train_data.split = "1e5"
    text = configs.dump_yaml(cfg)
    assert "split: '1e5'" in text
    again = configs.apply_overrides(
        configs.get_experiment("digits_nfnet"), configs.load_yaml_text(text)
    )
    assert configs.to_dict(again) == configs.to_dict(cfg)


def test_numpy_scalars_are_accepted_as_numbers():
    cfg = configs.apply_overrides(
        configs.get_experiment("digits_nfnet"),
        {
            "optimizer": {"base_learning_rate": np.float32(0.01), "momentum": np.float64(0.8)},
            "trainer": {"train_steps": np.int64(5), "train_epochs": np.int32(2)},
            "train_data": {"random_flip": np.bool_(True)},
        },
    )
    cfg.optimizer.weight_decay = np.float16(0.5)  # set in code: validate() normalizes it
    configs.validate(cfg)
    assert cfg.optimizer.base_learning_rate == 0.01 and cfg.optimizer.weight_decay == 0.5
    assert (cfg.trainer.train_steps, cfg.trainer.train_epochs) == (5, 2.0)
    values = (cfg.optimizer.base_learning_rate, cfg.trainer.train_steps, cfg.train_data.random_flip)
    assert [type(v) for v in values] == [float, int, bool]
    assert "base_learning_rate: 0.01\n" in configs.dump_yaml(cfg)


# ----------------------------------------------------------------------------- 6-8: model_dir


def _snapshot(model_dir):
    return {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "override",
    [
        "model.variant_overrides.widths=[8, 8, 8, 16]",  # same variables, other shapes
        "model.num_classes=3",  # another classifier
        "optimizer.ema_decay=null",  # other optimizer variables
    ],
)
def test_a_refused_rerun_leaves_model_dir_as_it_was(tiny_run, override):
    folder, model_dir, _ = tiny_run
    before = _snapshot(model_dir)
    with pytest.warns(UserWarning, match="Skipping"), pytest.raises(CheckpointError) as err:
        run_experiment(_config(override, folder=str(folder)), str(model_dir))
    message = str(err.value)
    assert str(model_dir / "checkpoint.npz") in message and "different configuration" in message
    assert _snapshot(model_dir) == before  # config.yaml, checkpoint.npz, metrics.json unchanged


def test_skipped_images_are_counted_once_and_per_split(tiny_run):
    _, model_dir, metrics = tiny_run
    assert metrics["step"] == 2 and metrics["best"]["metric"] == "ema_accuracy"
    assert metrics["skipped_images"] == 2
    assert metrics["skipped_images_per_split"] == {"train": 2, "eval": 2}
    assert json.loads((model_dir / "metrics.json").read_text())["skipped_images"] == 2


def test_a_truncated_checkpoint_is_named_with_the_remedy(tiny_run, tmp_path):
    folder, model_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy)
    checkpoint = copy / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    before = _snapshot(copy)
    with pytest.warns(UserWarning, match="Skipping"), pytest.raises(CheckpointError) as err:
        run_experiment(_config(folder=str(folder)), str(copy))
    message = str(err.value)
    assert f"Checkpoint {str(checkpoint)!r} cannot be read" in message
    assert "delete the file to restart the run from scratch" in message and "backup" in message
    assert _snapshot(copy) == before


def _small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = NesterovSGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _rewrite(path, change) -> None:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(b""), "No data left"),
        (lambda p: p.write_text("not a checkpoint"), "pickled"),
        (lambda p: p.write_bytes(p.read_bytes()[:-40]), "zip"),
        (lambda p: _rewrite(p, lambda a: a.pop("model/00001")), "entry 'model/00001' is missing"),
        (lambda p: _rewrite(p, lambda a: a.pop("state")), "no 'state' entry"),
        (
            lambda p: _rewrite(p, lambda a: a.update(state=np.frombuffer(b"{oops", np.uint8))),
            "not valid JSON",
        ),
        (
            lambda p: _rewrite(p, lambda a: a.update(state=np.frombuffer(b"{}", np.uint8))),
            "lacks the loop",
        ),
    ],
    ids=["empty", "text", "truncated", "missing-entry", "no-state", "bad-json", "no-paths"],
)
def test_unreadable_checkpoints_are_named_with_the_remedy(tmp_path, damage, why):
    model, optimizer = _small_model()
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(str(path), model, optimizer, {"loop": 1})
    damage(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(str(path), *_small_model())
    message = str(err.value)
    assert message.startswith(f"Checkpoint {str(path)!r} cannot be read: ")
    assert why in message and "delete the file" in message, message


# ----------------------------------------------------------------------------- the CLI


def _cli(capsys, *args):
    """``python -m training.train ARGS`` in this process: (exit status, stderr)."""
    from absl import flags

    from training import train

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *args])
    try:
        with pytest.raises(SystemExit) as exit_:
            train.main([])
    finally:
        flags.FLAGS.unparse_flags()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.steps_per_loop=-1", "error: trainer.steps_per_loop must be an integer >= 1"),
        ("optimizer.base_learning_rate=-0.1", "Received: -0.1."),
        ("trainer=3,trainer.seed=1", "'trainer' both to a value (3)"),
        ("trainer=3", "trainer is a config section"),
        ("trainer.seed=[1,", "entry 'trainer.seed=[1,' is not valid YAML"),
    ],
)
def test_cli_reports_one_error_line(capsys, tmp_path, override, expected):
    code, err = _cli(capsys, f"--model_dir={tmp_path / 'run'}", f"--params_override={override}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_reports_a_refused_rerun_in_one_line(capsys, tiny_run):
    folder, model_dir, _ = tiny_run
    before = _snapshot(model_dir)
    override = f"{TINY},train_data.folder={folder},eval_data.folder={folder},model.num_classes=3"
    with pytest.warns(UserWarning, match="Skipping"):
        code, err = _cli(capsys, f"--model_dir={model_dir}", f"--params_override={override}")
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "different configuration" in lines[0], err
    assert "Traceback" not in err and _snapshot(model_dir) == before


def _subprocess(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "training.train", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_subprocess_exits_2_with_an_error_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {base_learning_rate: 0.1\n")
    for args, expected in (
        (["--params_override=trainer.validation_interval=0"], "trainer.validation_interval"),
        ([f"--config_file={bad}"], f"Config file {str(bad)!r} is not valid YAML"),
    ):
        proc = _subprocess(f"--model_dir={tmp_path / 'run'}", *args)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert len(errors) == 1 and expected in errors[0], proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
