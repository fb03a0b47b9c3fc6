"""MultiWorkerMirroredStrategy `model.fit` with AGC: two worker processes on 127.0.0.1.

`fit` under MWMS needs keras_nfnet.distribute_compat on Keras 3.15.1 (keras-team/keras issue
20585); this test is what verifies that workaround for the installed Keras version.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from agc_common import build_model, compile_model, make_data
from conftest import REPO, TESTS


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_fit_one_epoch_with_agc_and_match_the_single_process_result(tmp_path):
    ports = ",".join(map(str, _free_ports(2)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow"}
    outs = [tmp_path / f"worker{i}.npz" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(TESTS / "agc_mwms_worker.py"), str(i), ports, str(outs[i])],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [w.communicate(timeout=240)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, log in zip(workers, logs):
        if w.returncode != 0:
            pytest.fail(f"worker exited {w.returncode}:\n{log[-4000:]}")

    x, y = make_data(48)
    single = compile_model(build_model())
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = single.fit(dataset, verbose=0, shuffle=False)
    results = [np.load(out) for out in outs]
    for result in results:
        assert int(result["replicas"]) == 2
        assert bool(result["workaround"])
        assert float(result["fraction"]) == pytest.approx(history.history["agc_clip_fraction"][-1])
        assert float(result["fraction"]) > 0.1  # AGC is actively clipping
        assert float(result["loss"]) == pytest.approx(history.history["loss"][-1], rel=1e-5)
    for i, expected in enumerate(single.get_weights()):
        np.testing.assert_array_equal(results[0][f"w_{i}"], results[1][f"w_{i}"])
        assert np.linalg.norm(results[0][f"w_{i}"] - expected) / np.linalg.norm(expected) < 1e-5
