"""Time NFNet-F0's convolutions alone, forward + backward, on the current Keras backend.

Not a test. For every `WSConv2D` of NFNet-F0 (its input shape, kernel shape, stride and padding
at ``--size`` px, batch ``--batch``), one value-and-gradient of ``sum(conv(x, w) ** 2)`` with
respect to input and kernel is timed through `keras_nfnet.fast.conv_ops.conv2d`, the path the
model takes. With ``--reference``, grouped layers are also timed through `reference_conv2d`
(Keras' ``ops.conv``: XLA's ``feature_group_count`` convolution on JAX, an XLA function on TF;
slow on CPU, which is the point). Identical layer shapes are timed once and counted per layer.
Prints JSON: seconds and GFLOP/s summed over the model, grouped and ungrouped layers separately
(forward + backward counted as 3x the forward multiply-adds, 2 FLOPs each). It says how much of a
backend's training step is convolution (README "Performance", known limits).

Usage (from the repository root):
    KERAS_BACKEND=jax .venv/bin/python bench/bench_convs.py --reference
    KERAS_BACKEND=tensorflow .venv/bin/python bench/bench_convs.py
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time

from _cli import int_parser, require_backend

BACKENDS = ("tensorflow", "jax")


def _value_and_grad(fn):
    """``step(x, w) -> (value, (dx, dw))`` for ``sum(fn(x, w) ** 2)``, compiled per backend."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))
    import tensorflow as tf

    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            value = tf.reduce_sum(fn(x, w) ** 2)
        return value, tape.gradient(value, [x, w])

    return tf.function(step)


def _conv_fn(conv, spec: dict):
    return lambda inputs, kernel: conv(inputs, kernel, spec["strides"], spec["padding"])


def _seconds(step, x, w, repeats: int) -> float:
    import keras

    def run():
        out = step(x, w)
        for array in keras.tree.flatten(out):  # wait for the result on every backend
            keras.ops.convert_to_numpy(array)

    run()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def f0_convolutions(size: int) -> list[dict]:
    """Every WSConv2D of NFNet-F0 at ``size`` px: see `conv_specs`."""
    import keras_nfnet

    return conv_specs(keras_nfnet.NFNetF0(input_shape=(size, size, 3), weights=None))


def conv_specs(model) -> list[dict]:
    """Every WSConv2D of a built ``model``: name, shapes, stride, padding, groups."""
    from keras_nfnet.layers import WSConv2D

    layers = []
    for layer in model.layers:
        if isinstance(layer, WSConv2D):
            in_shape = tuple(layer.input.shape[1:])
            kernel = tuple(layer.kernel.shape)
            layers.append(
                {
                    "name": layer.name,
                    "input": in_shape,
                    "kernel": kernel,
                    "strides": tuple(layer.strides),
                    "padding": layer.padding,
                    "groups": in_shape[-1] // kernel[2],
                    "output_pixels": math.prod(layer.output.shape[1:3]),
                }
            )
    return layers


def forward_gflop(spec: dict, batch: int) -> float:
    """The forward FLOPs of one convolution of `conv_specs` (2 per multiply-add), in GFLOP."""
    kh, kw, cin, cout = spec["kernel"]
    return 2 * batch * spec["output_pixels"] * kh * kw * cin * cout / 1e9


def run(size: int, batch: int, repeats: int, reference: bool) -> dict:
    import keras
    import numpy as np

    from keras_nfnet.fast.conv_ops import conv2d, reference_conv2d

    totals = {"grouped": {"s": 0.0, "gflop": 0.0}, "ungrouped": {"s": 0.0, "gflop": 0.0}}
    reference_s = 0.0
    timed: dict = {}
    layers = f0_convolutions(size)
    for spec in layers:
        key = (spec["input"], spec["kernel"], spec["strides"], spec["padding"])
        grouped = spec["groups"] > 1
        if key not in timed:
            rng = np.random.default_rng(0)
            x = keras.ops.convert_to_tensor(
                rng.normal(size=(batch, *spec["input"])).astype("float32")
            )
            w = keras.ops.convert_to_tensor(rng.normal(size=spec["kernel"]).astype("float32"))
            fast = _seconds(_value_and_grad(_conv_fn(conv2d, spec)), x, w, repeats)
            slow = (
                _seconds(_value_and_grad(_conv_fn(reference_conv2d, spec)), x, w, repeats)
                if reference and grouped
                else 0.0
            )
            timed[key] = (fast, slow)
        fast, slow = timed[key]
        gflop = 3 * forward_gflop(spec, batch)  # forward + backward
        part = totals["grouped" if grouped else "ungrouped"]
        part["s"] += fast
        part["gflop"] += gflop
        reference_s += slow
    report = {
        "backend": keras.backend.backend(),
        "model": "NFNet-F0 WSConv2D layers",
        "size": size,
        "batch": batch,
        "repeats": repeats,
        "layers": len(layers),
        "distinct_shapes": len(timed),
        "cpu_count": os.cpu_count(),
    }
    for name, part in totals.items():
        report[f"{name}_s"] = round(part["s"], 3)
        report[f"{name}_gflop"] = round(part["gflop"], 1)
        report[f"{name}_gflop_per_s"] = round(part["gflop"] / part["s"], 1) if part["s"] else None
    report["total_s"] = round(totals["grouped"]["s"] + totals["ungrouped"]["s"], 3)
    if reference:
        report["grouped_reference_s"] = round(reference_s, 3)
    return report


def main() -> None:
    parser = int_parser(__doc__, size=192, batch=8, repeats=5)
    parser.add_argument(
        "--reference", action="store_true", help="also time Keras' own grouped convolution"
    )
    args = parser.parse_args()
    require_backend(parser, BACKENDS)
    print(json.dumps(run(args.size, args.batch, args.repeats, args.reference), indent=2))


if __name__ == "__main__":
    main()
