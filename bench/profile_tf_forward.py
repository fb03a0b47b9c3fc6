"""Where the time of one TF forward pass of an NF model goes: convolution vs the rest (JSON).

Not a test. Builds ``--model`` (any `keras_nfnet.list_models()` row, default ``dm_nfnet_f0``, at
its train size unless ``--size`` says otherwise) on the TF backend, runs ``predict_on_batch``
under TensorFlow's profiler and reads the trace (``*.xplane.pb``) back. For each profiled pass
it reports:

* ``pass_ms``: the traced function's wall time;
* ``conv_busy_ms``: the time during which at least one convolution or pointwise matmul (oneDNN
  ``_MklNativeFused{Conv2D,MatMul}``) was running, and the convolutions' FLOPs per second over
  that time (``conv_busy_gflops``);
* ``gaps_ms``: the rest, when no convolution ran (activations, weight standardization, pooling,
  squeeze-excite, TF's executor), and ``first_conv_ms``, when the first convolution started.

``by_op_ms`` sums each op type's own time over all threads (overlapping ops both count),
``xla_calls`` the runs of XLA-compiled functions (the fused activations and standardizations of
`keras_nfnet.fast.fusion`), and ``by_layer_kind`` the convolutions' time and GFLOP/s per kind
of layer (kinds that run side by side, such as a transition block's shortcut and conv0, slow
each other down). ``gemm_peak_gflops`` is
one 2048x2048x2048 ``tf.matmul`` on the same threads, for scale.

Usage (from the repository root; the TF-only environment is the one the README's table uses):
    KERAS_BACKEND=tensorflow .venv-tf/bin/python bench/profile_tf_forward.py --passes 3
    KERAS_BACKEND=tensorflow .venv/bin/python bench/profile_tf_forward.py --model eca_nfnet_l0
"""

from __future__ import annotations

import collections
import glob
import json
import os
import statistics
import tempfile
import time

from _cli import int_parser, positive_int, require_backend
from bench_convs import conv_specs, forward_gflop  # the same FLOP count as bench_convs

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CONV_OPS = ("_MklNativeFusedConv2D", "_MklNativeFusedMatMul")
STEP_EVENT = "one_step_on_data_distributed"  # Keras' traced predict step
XLA_CALL_EVENT = "CpuExecutable::ExecuteAsyncOnStream"  # one run of an XLA-compiled function


def _layer_kind(layer: str) -> str:
    if layer.startswith("stem"):
        return "stem"
    if layer == "final_conv":
        return "final_conv"
    return layer.rsplit("_", 1)[-1]  # conv0, conv1, conv1b, conv2, shortcut


def _events(logdir: str):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                start_ms = (line.timestamp_ns * 1000 + event.offset_ps) / 1e9
                name = plane.event_metadata[event.metadata_id].name
                yield start_ms, start_ms + event.duration_ps / 1e9, name


def _union(intervals):
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _gemm_peak_gflops() -> float:
    import tensorflow as tf

    n = 2048
    a = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.matmul(a, a))
    matmul()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        matmul().numpy()
        times.append(time.perf_counter() - start)
    return round(2 * n**3 / min(times) / 1e9, 1)


def profile(passes: int, batch: int, size: int | None, name: str = "dm_nfnet_f0") -> dict:
    import numpy as np
    import tensorflow as tf

    import keras_nfnet

    size = size or keras_nfnet.get_spec(name).train_size
    model = keras_nfnet.create_model(name, input_shape=(size, size, 3), classifier_activation=None)
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    for _ in range(3):
        model.predict_on_batch(x)
    gflop = {spec["name"]: forward_gflop(spec, batch) for spec in conv_specs(model)}
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(passes):
            model.predict_on_batch(x)
        tf.profiler.experimental.stop()
        events = list(_events(logdir))

    steps = sorted((s, e) for s, e, name in events if name == STEP_EVENT)
    convs = []  # (start, end, layer)
    by_op = collections.Counter()
    xla_calls = [0.0, 0]
    for start, end, name in events:
        if name == XLA_CALL_EVENT:
            xla_calls[0] += (end - start) / passes
            xla_calls[1] += 1
        elif ":" in name and "::" not in name and not name.endswith(" "):
            op = name.rsplit(":", 1)[1]  # TF op events are "node/name:OpType"
            if not op.isidentifier():  # other events ("EagerLocalExecute: __inference_...")
                continue
            by_op[op] += (end - start) / passes
            if op in CONV_OPS:
                convs.append((start, end, name.split("/")[1].removesuffix("_1")))
    per_pass = []
    for t0, t1 in steps:
        in_pass = [(s, e, layer) for s, e, layer in convs if t0 <= s and e <= t1]
        busy = _union([(s, e) for s, e, _ in in_pass])
        busy_ms = sum(e - s for s, e in busy)
        pass_gflop = sum(gflop.get(layer, 0.0) for _, _, layer in in_pass)
        per_pass.append(
            {
                "pass_ms": round(t1 - t0, 1),
                "conv_busy_ms": round(busy_ms, 1),
                "conv_busy_gflops": round(pass_gflop / busy_ms * 1e3, 1),
                "gaps_ms": round(t1 - t0 - busy_ms, 1),
                "first_conv_ms": round(busy[0][0] - t0, 1),
            }
        )
    kinds = collections.defaultdict(lambda: [0.0, 0.0])  # ms, GFLOP
    for start, end, layer in convs:
        if layer in gflop:
            kinds[_layer_kind(layer)][0] += (end - start) / passes
            kinds[_layer_kind(layer)][1] += gflop[layer] / passes
    return {
        "model": name,
        "input": f"{batch}x{size}x{size}x3 float32",
        "conv_gflop_per_pass": round(sum(gflop.values()), 2),
        "gemm_peak_gflops": _gemm_peak_gflops(),
        "passes": per_pass,
        "median": {
            key: round(statistics.median(p[key] for p in per_pass), 1) for key in per_pass[0]
        },
        "by_op_ms": {op: round(ms, 1) for op, ms in by_op.most_common(16)},
        "xla_calls": {"ms": round(xla_calls[0], 1), "count": xla_calls[1] // passes},
        "by_layer_kind": {
            kind: {"ms": round(ms, 1), "gflop": round(g, 2), "gflops": round(g / ms * 1e3)}
            for kind, (ms, g) in sorted(kinds.items())
        },
    }


def main() -> None:
    parser = int_parser(__doc__, passes=3, batch=8)
    parser.add_argument("--model", default="dm_nfnet_f0", help="a keras_nfnet.list_models() row")
    parser.add_argument("--size", type=positive_int, help="input size (default: the row's)")
    args = parser.parse_args()
    require_backend(parser, ("tensorflow",))
    print(json.dumps(profile(args.passes, args.batch, args.size, args.model), indent=2))


if __name__ == "__main__":
    main()
