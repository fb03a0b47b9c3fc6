"""Memory of an NF model's training step on the TF backend, step by step (JSON).

Not a test. Builds ``--model`` (any `keras_nfnet.list_models()` row, default ``dm_nfnet_f0``) at
``--size`` px (default: the row's train size), compiles it with SGD (Nesterov
momentum 0.9) and AGC 0.01, then runs ``predict_on_batch`` once and ``train_on_batch``
``--steps`` times on one random batch. After each call it records the process's peak resident
memory (``ru_maxrss``) and TensorFlow's CPU allocator figures (``current`` and ``peak`` bytes
of tensors, `tf.config.experimental.get_memory_info`). The difference between the two is TF
runtime outside its tensor allocator, Python and the imported packages.

Usage (from the repository root):
    .venv/bin/python bench/bench_memory.py
    .venv/bin/python bench/bench_memory.py --model eca_nfnet_l0
"""

from __future__ import annotations

import json
import resource

from _cli import int_parser, positive_int, require_backend


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def run(size: int | None, batch: int, steps: int, name: str = "dm_nfnet_f0") -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_nfnet

    def record(stage: str) -> dict:
        info = tf.config.experimental.get_memory_info("CPU:0")
        return {
            "stage": stage,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "tf_current_mb": _mb(info["current"]),
            "tf_peak_mb": _mb(info["peak"]),
        }

    stages = [record("import")]
    keras.utils.set_random_seed(0)
    size = size or keras_nfnet.get_spec(name).train_size
    model = keras_nfnet.create_model(name, input_shape=(size, size, 3), classifier_activation=None)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        agc_clipping=0.01,
    )
    stages.append(record("built"))
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    y = np.arange(batch) % 1000
    model.predict_on_batch(x)
    stages.append(record("predict"))
    for step in range(1, steps + 1):
        model.train_on_batch(x, y)
        stages.append(record(f"train_step_{step}"))
    return {"model": name, "size": size, "batch": batch, "stages": stages}


def main() -> None:
    parser = int_parser(__doc__, batch=8, steps=4)
    parser.add_argument("--model", default="dm_nfnet_f0", help="a keras_nfnet.list_models() row")
    parser.add_argument("--size", type=positive_int, help="input size (default: the row's)")
    args = parser.parse_args()
    require_backend(parser, ("tensorflow",))  # it reads the TF allocator
    print(json.dumps(run(args.size, args.batch, args.steps, args.model), indent=2))


if __name__ == "__main__":
    main()
