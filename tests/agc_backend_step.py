"""Train the AGC test model on a non-TensorFlow Keras backend; save the resulting weights.

Run by tests/test_agc_backends.py in a subprocess with KERAS_BACKEND set:

* ``python tests/agc_backend_step.py jax_data_parallel OUT.npz`` (KERAS_BACKEND=jax,
  XLA_FLAGS=--xla_force_host_platform_device_count=2): `fit` for one epoch (3 steps of 16) on one
  device, then again under `keras.distribution.DataParallel` over the 2 CPU devices.
* ``python tests/agc_backend_step.py one_step OUT.npz`` (any backend): one `train_on_batch`.

Both also run `mixed_precision_checks` (a mixed_float16 step with loss scaling and a skipped
non-finite step).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras
from agc_common import build_model, compile_model, make_data


def _fit(x, y):
    model = compile_model(build_model())
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model, history.history["agc_clip_fraction"][-1]


def mixed_precision_checks() -> dict:
    """One mixed_float16 + LossScaleOptimizer step against float32, then a non-finite step."""
    x, y = make_data(16)
    full = compile_model(build_model(), keras.optimizers.SGD(0.5))
    mixed = compile_model(
        build_model(dtype="mixed_float16"),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5)),
    )
    init = full.get_weights()
    full.train_on_batch(x, y)
    fraction = mixed.train_on_batch(x, y, return_dict=True)["agc_clip_fraction"]
    errors = [
        np.linalg.norm((a - w0) - (b - w0)) / np.linalg.norm(b - w0)
        for w0, a, b in zip(init, mixed.get_weights(), full.get_weights())
    ]
    before = mixed.get_weights()
    x[0, 0, 0, 0] = np.inf
    mixed.train_on_batch(x, y)
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, mixed.get_weights()))
    return {
        "mp_fraction": fraction,
        "mp_max_rel_update_error": max(errors),
        "mp_skipped_unchanged": unchanged,
        "mp_scale_after_skip": keras.ops.convert_to_numpy(mixed.optimizer.dynamic_scale),
        "mp_iterations_after_skip": keras.ops.convert_to_numpy(mixed.optimizer.iterations),
    }


def jax_data_parallel(out: str) -> None:
    import jax

    x, y = make_data(48)
    single, fraction_single = _fit(x, y)
    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    parallel, fraction_parallel = _fit(x, y)
    # The batch really is split: each device holds half of a sharded input.
    sharded = keras.distribution.distribute_tensor(
        x[:16], keras.distribution.distribution().get_data_layout(x[:16].shape)
    )
    shard_rows = sorted({s.data.shape[0] for s in sharded.addressable_shards})
    checks = mixed_precision_checks()  # under the DataParallel distribution
    np.savez(
        out,
        **checks,
        n_devices=len(devices),
        shard_rows=np.array(shard_rows),
        fraction_single=fraction_single,
        fraction_parallel=fraction_parallel,
        **{f"single_{i}": w for i, w in enumerate(single.get_weights())},
        **{f"parallel_{i}": w for i, w in enumerate(parallel.get_weights())},
    )


def one_step(out: str) -> None:
    x, y = make_data(16)
    model = compile_model(build_model())
    logs = model.train_on_batch(x, y, return_dict=True)
    np.savez(
        out,
        **mixed_precision_checks(),
        backend=keras.backend.backend(),
        fraction=logs["agc_clip_fraction"],
        **{f"w_{i}": w for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    {"jax_data_parallel": jax_data_parallel, "one_step": one_step}[sys.argv[1]](sys.argv[2])
