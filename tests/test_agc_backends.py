"""AGCModel on the JAX and PyTorch backends, each in a subprocess (tests/agc_backend_step.py).

Both also check a mixed_float16 step with loss scaling, and that a non-finite step is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
from agc_common import build_model, compile_model, initial_weights, make_data
from conftest import TESTS, run_python


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _assert_mixed_precision(result):
    """mixed_float16 + LossScaleOptimizer: the update equals float32's; non-finite steps skip."""
    assert float(result["mp_fraction"]) > 0.1
    assert float(result["mp_max_rel_update_error"]) < 1e-2
    assert bool(result["mp_skipped_unchanged"])
    assert float(result["mp_scale_after_skip"]) == 2.0**14
    assert int(result["mp_iterations_after_skip"]) == 1


def test_jax_fit_under_data_parallel_equals_single_device(tmp_path):
    out = tmp_path / "jax.npz"
    run_python(
        [str(TESTS / "agc_backend_step.py"), "jax_data_parallel", str(out)],
        env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    result = np.load(out)
    _assert_mixed_precision(result)
    assert int(result["n_devices"]) == 2
    assert result["shard_rows"].tolist() == [8]  # each device got half of the batch of 16
    assert float(result["fraction_parallel"]) > 0.1  # AGC is actively clipping
    assert float(result["fraction_parallel"]) == float(result["fraction_single"])
    init = initial_weights(build_model())
    for i, w0 in enumerate(init):
        single, parallel = result[f"single_{i}"], result[f"parallel_{i}"]
        assert _rel(parallel, single) < 1e-5
        assert _rel(parallel - w0, single - w0) < 1e-4


def test_torch_step_equals_tensorflow_step(tmp_path):
    out = tmp_path / "torch.npz"
    run_python(
        [str(TESTS / "agc_backend_step.py"), "one_step", str(out)],
        env={"KERAS_BACKEND": "torch"},
    )
    torch_result = np.load(out)
    assert str(torch_result["backend"]) == "torch"
    _assert_mixed_precision(torch_result)
    x, y = make_data(16)
    model = compile_model(build_model())  # this process runs the TensorFlow backend
    init = model.get_weights()
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["agc_clip_fraction"] > 0.1
    assert float(torch_result["fraction"]) == pytest.approx(logs["agc_clip_fraction"], rel=1e-6)
    for i, (w0, tf_w) in enumerate(zip(init, model.get_weights())):
        assert _rel(torch_result[f"w_{i}"], tf_w) < 1e-5
        assert _rel(torch_result[f"w_{i}"] - w0, tf_w - w0) < 1e-4
