"""Time an NF model's convolutions (or attention pooling) alone, forward + backward, per backend.

Not a test. For every `WSConv2D` of ``--model`` (any `keras_nfnet.list_models()` row, default
``dm_nfnet_f0``; its input shape, kernel shape, stride and padding at ``--size`` px, default
192 for F0 and the row's train size otherwise, batch ``--batch``), one value-and-gradient of
``sum(conv(x, w) ** 2)`` with respect to input and kernel is timed through
`keras_nfnet.fast.conv_ops.conv2d`, the path the model takes. With ``--reference``, layers are
also timed through `reference_conv2d` (Keras' ``ops.conv``): the grouped ones on TF and JAX
(XLA's ``feature_group_count`` convolution on JAX, an XLA function on TF; slow on CPU, which is
the point), every one on torch (whose fast path is the channels-last call). Identical layer
shapes are timed once and counted per layer. Prints JSON: seconds and GFLOP/s summed over the
model, grouped and ungrouped layers separately (forward + backward counted as 3x the forward
multiply-adds, 2 FLOPs each). It says how much of a backend's training step is convolution
(README "Performance", known limits).

``--pooling`` times the spatial mean of every attention gate (Squeeze-Excite, ECA) of the model
instead: `keras_nfnet.fast.pooling.spatial_mean` against `reference_spatial_mean`
(``keras.ops.mean``), value and gradient of ``sum(mean(x) ** 2)``.

Usage (from the repository root):
    KERAS_BACKEND=jax .venv/bin/python bench/bench_convs.py --reference
    KERAS_BACKEND=tensorflow .venv/bin/python bench/bench_convs.py
    KERAS_BACKEND=torch .venv/bin/python bench/bench_convs.py --model eca_nfnet_l0 --reference
    KERAS_BACKEND=tensorflow .venv/bin/python bench/bench_convs.py --model eca_nfnet_l0 --pooling
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time

from _cli import int_parser, positive_int, require_backend

BACKENDS = ("tensorflow", "jax", "torch")


def _value_and_grad(fn):
    """``step(x, w) -> (value, (dx, dw))`` for ``sum(fn(x, w) ** 2)``, compiled per backend."""
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(fn(x, w) ** 2), argnums=(0, 1)))
    if keras.backend.backend() == "torch":

        def torch_step(x, w):
            x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
            value = (fn(x, w) ** 2).sum()
            value.backward()
            return value.detach(), (x.grad, w.grad)

        return torch_step
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


def build(model: str, size: int | None):
    """The row ``model`` at ``size`` px (default: 192 for ``dm_nfnet_f0``, else its train size)."""
    import keras_nfnet

    size = size or (192 if model == "dm_nfnet_f0" else keras_nfnet.get_spec(model).train_size)
    return keras_nfnet.create_model(model, input_shape=(size, size, 3)), size


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


def run(
    size: int | None, batch: int, repeats: int, reference: bool, model: str = "dm_nfnet_f0"
) -> dict:
    import keras
    import numpy as np

    from keras_nfnet.fast.conv_ops import conv2d, reference_conv2d

    totals = {"grouped": {"s": 0.0, "gflop": 0.0}, "ungrouped": {"s": 0.0, "gflop": 0.0}}
    reference_s = {"grouped": 0.0, "ungrouped": 0.0}
    timed: dict = {}
    built, size = build(model, size)
    layers = conv_specs(built)
    every_layer = keras.backend.backend() == "torch"  # its fast path covers every convolution
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
                if reference and (grouped or every_layer)
                else 0.0
            )
            timed[key] = (fast, slow)
        fast, slow = timed[key]
        gflop = 3 * forward_gflop(spec, batch)  # forward + backward
        part = totals["grouped" if grouped else "ungrouped"]
        part["s"] += fast
        part["gflop"] += gflop
        reference_s["grouped" if grouped else "ungrouped"] += slow
    report = {
        "backend": keras.backend.backend(),
        "model": f"{model} WSConv2D layers",
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
        report["grouped_reference_s"] = round(reference_s["grouped"], 3)
        if every_layer:
            report["ungrouped_reference_s"] = round(reference_s["ungrouped"], 3)
    return report


def run_pooling(size: int | None, batch: int, repeats: int, model: str) -> dict:
    """`spatial_mean` against `reference_spatial_mean` at every attention gate of ``model``."""
    import keras
    import numpy as np

    from keras_nfnet.fast.pooling import reference_spatial_mean, spatial_mean
    from keras_nfnet.layers import ChannelGate

    built, size = build(model, size)
    gates = [layer for layer in built.layers if isinstance(layer, ChannelGate)]
    shapes = [tuple(layer.input.shape[1:]) for layer in gates]
    if not shapes:
        raise SystemExit(f"{model} has no attention gate (Squeeze-Excite or ECA) to time")
    totals = {"fast_s": 0.0, "reference_s": 0.0}
    timed: dict = {}
    for shape in shapes:
        if shape not in timed:
            x = keras.ops.convert_to_tensor(
                np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
            )
            timed[shape] = [
                _seconds(_value_and_grad(lambda x_, _w, mean=mean: mean(x_)), x, x, repeats)
                for mean in (spatial_mean, reference_spatial_mean)
            ]
        totals["fast_s"] += timed[shape][0]
        totals["reference_s"] += timed[shape][1]
    return {
        "backend": keras.backend.backend(),
        "model": f"{model} attention-gate pooling",
        "size": size,
        "batch": batch,
        "repeats": repeats,
        "gates": len(shapes),
        "distinct_shapes": len(timed),
        "cpu_count": os.cpu_count(),
        **{name: round(value, 4) for name, value in totals.items()},
    }


def main() -> None:
    parser = int_parser(__doc__, batch=8, repeats=5)
    parser.add_argument("--model", default="dm_nfnet_f0", help="a keras_nfnet.list_models() row")
    parser.add_argument("--size", type=positive_int, help="input size (default: see above)")
    parser.add_argument(
        "--reference", action="store_true", help="also time Keras' own convolution (ops.conv)"
    )
    parser.add_argument(
        "--pooling", action="store_true", help="time the attention gates' pooling instead"
    )
    args = parser.parse_args()
    require_backend(parser, BACKENDS)
    if args.pooling:
        report = run_pooling(args.size, args.batch, args.repeats, args.model)
    else:
        report = run(args.size, args.batch, args.repeats, args.reference, args.model)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
