"""End-to-end runs of `python -m training.train` (subprocesses: CLI, SIGKILL, tf.distribute)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from conftest import REPO, run_python

# A tiny digits run for resume / distribution tests: 2 loops per epoch-ish, deterministic.
TINY = (
    "model.variant_overrides={depths: [1, 1, 1, 1], widths: [16, 32, 32, 32], "
    "stem_widths: [4, 8, 16], group_width: 8},"
    "train_data.global_batch_size=32,trainer.steps_per_loop=4,trainer.verbose=0"
)


# The runs below check the trainer (CLI, resume, tf.distribute), not the fused elementwise
# kernels (tests/test_fast_paths.py checks those): the reference path spares each process the
# XLA compilations of the fused chains (one per convolution and input shape), about half of a
# short run's time on CPU.
UNFUSED = {"KERAS_NFNET_FUSION": "0"}


def _train(model_dir, *flags, env=None, timeout=600):
    return run_python(
        ["-m", "training.train", f"--model_dir={model_dir}", *flags],
        env={**UNFUSED, **(env or {})},
        timeout=timeout,
    )


def _start_training(model_dir, *flags, **popen):
    """``python -m training.train`` in the background (unfused, like `_train`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "training.train", f"--model_dir={model_dir}", *flags],
        env={**os.environ, "PYTHONPATH": str(REPO), **UNFUSED},
        cwd=REPO,
        **popen,
    )


def test_digits_nfnet_default_reaches_95_percent(tmp_path):
    import keras

    import keras_nfnet  # noqa: F401  (registers the layers, AGCModel and the optimizer)

    proc = _train(tmp_path, "--experiment=digits_nfnet")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "Final metrics" in proc.stdout
    assert metrics["eval"]["accuracy"] >= 0.95, metrics
    assert metrics["eval"]["ema_accuracy"] >= 0.95, metrics
    assert 0.0 <= metrics["train"]["agc_clip_fraction"] <= 1.0
    for name in ("config.yaml", "checkpoint.npz", "best.keras", "final.keras", "final_ema.keras"):
        assert (tmp_path / name).exists(), name
    assert any((tmp_path / "logs" / "train").iterdir())
    model = keras.saving.load_model(tmp_path / "best.keras", safe_mode=True)
    assert model.output_shape == (None, 10)


def test_imagenet_pipeline_runs_on_mock_data(tmp_path):
    code = f"""
import json, tensorflow_datasets as tfds
from training.train import build_config
from training.runner import run_experiment
cfg = build_config("nfnet_f0_imagenet", params_override=(
    "model.variant_overrides={{depths: [1, 1, 1, 1], widths: [16, 32, 32, 32], "
    "stem_widths: [4, 8, 16], group_width: 8}},"
    "train_data.global_batch_size=4,train_data.image_size=32,eval_data.image_size=32,"
    "eval_data.global_batch_size=4,trainer.train_steps=2,trainer.steps_per_loop=2,"
    "trainer.validation_steps=1,train_data.shuffle_buffer_size=8,trainer.verbose=0"))
assert cfg.train_data.mixup_cutmix and cfg.train_data.randaugment == 405
with tfds.testing.mock_data(num_examples=16):
    m = run_experiment(cfg, {str(tmp_path)!r}, "train_and_eval")
print("METRICS", json.dumps(m))
"""
    proc = run_python(["-c", code], env=UNFUSED)
    metrics = json.loads(proc.stdout.split("METRICS", 1)[1])
    assert metrics["step"] == 2
    assert {"accuracy", "top5_accuracy", "ema_accuracy", "loss"} <= set(metrics["eval"])
    assert np.isfinite(metrics["train"]["loss"])


def _weights(*paths):
    """The weights of each ``.keras`` file, loaded in one fresh process that imports only keras
    and keras_nfnet (which alone must register everything a ``.keras`` file needs)."""
    code = f"""
import numpy as np, keras, keras_nfnet
for path in {[str(p) for p in paths]!r}:
    m = keras.saving.load_model(path, safe_mode=True)
    np.savez(path + ".npz", *[np.asarray(w) for w in m.get_weights()])
"""
    run_python(["-c", code], env=UNFUSED)
    loaded = []
    for path in paths:
        with np.load(str(path) + ".npz") as f:
            loaded.append([f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))])
    return loaded


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    flags = [
        "--experiment=digits_nfnet",
        "--mode=train",
        f"--params_override={TINY},trainer.train_steps=40",
    ]
    # The uninterrupted run and the run to be killed are independent: they run side by side.
    straight = _start_training(
        tmp_path / "straight", *flags, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    killed = tmp_path / "killed"
    proc = _start_training(killed, *flags, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        checkpoint = killed / "checkpoint.npz"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists() and checkpoint.stat().st_mtime > 0:
                with np.load(checkpoint) as f:
                    state = json.loads(bytes(f["state"]).decode())
                if state["loop"] >= 3:  # 12 of 40 steps done: kill inside loop 4
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out = straight.communicate(timeout=600)[0]
        assert straight.returncode == 0, out[-4000:]
    finally:
        for p in (proc, straight):
            if p.poll() is None:
                p.kill()
    assert not (killed / "final.keras").exists()
    _train(killed, *flags)
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["restored"] and metrics["step"] == 40
    names = ("final.keras", "final_ema.keras")
    loaded = _weights(*(d / name for d in (tmp_path / "straight", killed) for name in names))
    for exp, res in zip(loaded[: len(names)], loaded[len(names) :]):
        assert len(exp) == len(res)
        for a, b in zip(exp, res):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    proc = _train(
        tmp_path,
        "--experiment=digits_nfnet",
        "--strategy=mirrored",
        "--cpu_devices=2",
        f"--params_override={TINY},trainer.train_steps=8,eval_data.global_batch_size=60",
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["step"] == 8 and "ema_accuracy" in metrics["eval"]
    assert "Final metrics" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_strategy_with_two_local_workers(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            **UNFUSED,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "training.train",
                    f"--model_dir={tmp_path}",
                    "--experiment=digits_nfnet",
                    "--strategy=multi_worker",
                    f"--params_override={TINY},trainer.train_steps=8,eval_data.global_batch_size=60",
                ],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["step"] == 8 and "accuracy" in metrics["eval"]
    assert not any(p.name.startswith(".worker-") for p in tmp_path.iterdir())
