"""Where the time of a Keras-on-torch NF training step goes, next to timm's (torch.profiler, JSON).

Not a test. For ``--model`` (any `keras_nfnet.list_models()` row timm also has, default
``eca_nfnet_l0``) at its train size (``--size`` overrides it), batch ``--batch``, float32, two
engines run one after the other, each in its own subprocess (``--worker ENGINE``):

    keras_torch  `keras_nfnet.create_model(row)` on the torch backend, compiled with SGD(0.01,
                 momentum 0.9, Nesterov), sparse cross-entropy from logits and
                 ``agc_clipping=0.01``: ``train_on_batch`` and ``predict_on_batch``, as
                 bench_nfnet.py times them;
    timm         ``timm.create_model(row)``: zero_grad, forward, cross-entropy, backward,
                 ``timm.utils.adaptive_clip_grad`` (all but the classifier kernel), ``SGD.step``;
                 the forward pass in eval mode under ``torch.inference_mode``.

Each worker warms each task up (``--warmup`` calls, timed), then runs ``--steps`` more under
``torch.profiler`` (CPU activity only) and reports, per call ("step"):

* ``wall_ms`` (unprofiled: the median of the warm-up calls but the first) and
  ``wall_ms_profiled`` (the profiler's own cost included);
* ``aten_self_ms``: the summed self CPU time of every ``aten::`` op on the calling thread (an op's
  intra-op worker threads are inside its wall time); ``autograd_engine_self_ms``: the autograd
  nodes' own time (``*Backward0``, ``AccumulateGrad``, outside the aten ops they run);
* ``outside_ops_ms``: ``wall_ms_profiled`` minus both, roughly the Python (and framework glue)
  time spent between ops;
* ``aten_calls`` (every dispatched aten op, nested ones included: the op-dispatch count),
  ``aten_top_level_calls`` (those not called from inside another aten op, i.e. called from
  Python or from the autograd engine) and ``autograd_nodes``;
* ``by_category``: self ms and calls of the ops per category: ``convolution`` (any ``*conv*`` op,
  forward or backward), ``matmul`` (addmm/mm/bmm/linear), ``elementwise`` (mul/add/sigmoid/silu/
  their ``*_backward``...), ``reductions`` (mean/sum/var/norm, pooling, softmax/nll),
  ``copies_layout`` (copy_/contiguous/clone/permute/to/_to_copy/cat and views), ``alloc``
  (empty/zeros/fill), ``optimizer_agc`` (every op run inside the AGC or optimizer phase, whatever
  its name), ``autograd_engine`` and ``other``;
* ``by_phase``: inclusive wall ms, op self ms and op calls per phase of the step (forward, loss,
  backward, AGC, optimizer, zero_grad, metrics, and ``glue``: whatever ran outside those, e.g.
  Keras' input conversion and output ``convert_to_numpy``); the phases are `record_function`
  ranges this script wraps around the engines' methods (for Keras: ``call``, ``_compute_loss``,
  ``_clip_and_decay``, ``optimizer.apply``, ``zero_grad``, ``compute_metrics``) and, for backward,
  the autograd engine's own ranges;
* ``top_ops``: the ``--top`` ops by self ms (name, calls per step, self ms per step).

``ratio_keras_over_timm`` divides the Keras figures by timm's. Keep runs short on a shared
machine: one run builds two models and runs ``warmup + steps`` calls of each task per engine,
one engine after the other; the JSON file is written after each engine.

Usage (from the repository root):
    .venv/bin/python bench/profile_torch_step.py --json bench/profile_eca_torch_cpu2.json
    .venv/bin/python bench/profile_torch_step.py --model nfnet_l0 --steps 3 --top 25
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _cli import int_parser  # bench/ is on sys.path when a script in it runs
from bench_nfnet import _data  # the same random batch bench_nfnet times

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("keras_torch", "timm")
TASKS = ("train", "forward")
LEARNING_RATE = 0.01
AGC_CLIPPING = 0.01
PHASES = ("forward", "loss", "backward", "agc", "optimizer", "zero_grad", "metrics")
PHASE_PREFIX = "phase::"

MATMUL = {"addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "dot", "mv"}
ELEMENTWISE = {
    "mul", "add", "sub", "rsub", "div", "sigmoid", "silu", "tanh", "gelu", "relu", "pow",
    "sqrt", "rsqrt", "exp", "log", "neg", "reciprocal", "clamp", "clamp_min", "clamp_max",
    "maximum", "minimum", "where", "abs", "sign", "lerp", "addcmul", "addcdiv", "softplus",
    "erf", "ge", "gt", "lt", "le", "eq", "ne", "masked_fill", "logical_and", "logical_or",
    "logical_not", "bernoulli", "floor", "ceil", "round", "square", "hardtanh", "threshold",
    "elu", "leaky_relu", "mish", "nan_to_num", "isfinite", "isnan", "xlogy",
}  # fmt: skip
REDUCTIONS = {
    "mean", "sum", "var", "var_mean", "std", "std_mean", "norm", "linalg_vector_norm", "amax",
    "amin", "max", "min", "prod", "argmax", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
    "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "_log_softmax", "log_softmax",
    "softmax", "_softmax", "nll_loss", "nll_loss_nd", "nll_loss_forward", "cross_entropy_loss",
    "count_nonzero", "all", "any", "logsumexp", "native_batch_norm",
}  # fmt: skip
COPIES_LAYOUT = {
    "copy_", "contiguous", "clone", "permute", "to", "_to_copy", "cat", "stack", "transpose",
    "t", "view", "reshape", "_reshape_alias", "_unsafe_view", "expand", "expand_as",
    "as_strided", "unsqueeze", "squeeze", "slice", "select", "flatten", "pad",
    "constant_pad_nd", "narrow", "split", "chunk", "unbind", "index_select", "gather",
    "movedim", "swapaxes", "numpy_T", "alias", "detach", "detach_", "lift_fresh",
    "lift_fresh_copy", "_copy_from", "_copy_from_and_resize", "unfold", "split_with_sizes",
}  # fmt: skip
ALLOC = {
    "empty", "empty_strided", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "fill_", "zero_", "resize_", "new_empty", "new_empty_strided", "new_zeros",
    "new_ones", "scalar_tensor", "tensor", "arange", "_local_scalar_dense", "item",
    "set_", "result_type",
}  # fmt: skip


# ---------------------------------------------------------------------------- classification


def _base(name: str) -> str:
    op = name.split("::", 1)[1] if name.startswith("aten::") else name
    if op.startswith("_foreach_"):
        return op
    if op.endswith("_backward") or op.endswith("_backward_data"):
        op = op.rsplit("_backward", 1)[0]
    return op.rstrip("_") if op not in COPIES_LAYOUT | ALLOC else op


def _is_autograd(name: str) -> bool:
    return "autograd::" in name or name.endswith("Backward0") or name.endswith("Backward1")


def category(name: str, phase: str) -> str:
    """The category of one profiler event (an aten op or an autograd node) in ``phase``."""
    if phase in ("agc", "optimizer"):
        return "optimizer_agc"
    if _is_autograd(name):
        return "autograd_engine"
    op = name.split("::", 1)[1] if "::" in name else name
    if "conv" in op:
        return "convolution"
    base = _base(name)
    if op in COPIES_LAYOUT or base in COPIES_LAYOUT:
        return "copies_layout"
    if op in ALLOC or base in ALLOC:
        return "alloc"
    if base in MATMUL:
        return "matmul"
    if base in ELEMENTWISE or base.startswith("_foreach_"):
        return "elementwise"
    if base in REDUCTIONS or "pool" in base or "softmax" in base or "nll_loss" in base:
        return "reductions"
    return "other"


def _phase(event) -> str:
    """The innermost phase range above ``event``; ``backward`` under the autograd engine."""
    node = event
    while node is not None:
        name = node.name
        if name.startswith(PHASE_PREFIX):
            return name[len(PHASE_PREFIX) :]
        if name.startswith("autograd::engine::evaluate_function"):
            return "backward"
        node = node.cpu_parent
    return "glue"


def summarize(prof, steps: int, wall_profiled: list[float], wall: list[float], top: int) -> dict:
    """Per-step figures of one profiled task (see the module docstring)."""
    per = 1.0 / steps
    by_cat: dict[str, list[float]] = {}
    by_phase: dict[str, dict[str, float]] = {}
    by_op: dict[str, list[float]] = {}
    aten_self = autograd_self = 0.0
    aten_calls = aten_top = autograd_nodes = 0
    for event in prof.events():
        name = event.name
        phase = _phase(event)
        stats = by_phase.setdefault(phase, {"wall_ms": 0.0, "op_self_ms": 0.0, "op_calls": 0})
        if name.startswith(PHASE_PREFIX):
            stats["wall_ms"] += event.cpu_time_total / 1e3 * per
            continue
        is_aten = name.startswith("aten::")
        is_autograd = _is_autograd(name)
        if not (is_aten or is_autograd):
            continue  # other annotations (e.g. "Optimizer.step#SGD.step"): Python time only
        self_ms = event.self_cpu_time_total / 1e3
        if is_aten:
            aten_self += self_ms
            aten_calls += 1
            parent = event.cpu_parent
            aten_top += not (parent is not None and parent.name.startswith("aten::"))
        else:
            autograd_self += self_ms
            autograd_nodes += name.startswith("autograd::engine::evaluate_function")
        stats["op_self_ms"] += self_ms * per
        stats["op_calls"] += per
        cat = by_cat.setdefault(category(name, phase), [0.0, 0])
        cat[0] += self_ms * per
        cat[1] += per
        op = by_op.setdefault(name, [0.0, 0])
        op[0] += self_ms * per
        op[1] += per
    wall_profiled_ms = statistics.mean(wall_profiled) * 1e3
    ops_ms = (aten_self + autograd_self) * per
    rows = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "wall_ms": round(statistics.median(wall) * 1e3, 1),
        "wall_ms_profiled": round(wall_profiled_ms, 1),
        "aten_self_ms": round(aten_self * per, 1),
        "autograd_engine_self_ms": round(autograd_self * per, 1),
        "outside_ops_ms": round(wall_profiled_ms - ops_ms, 1),
        "aten_calls": round(aten_calls * per),
        "aten_top_level_calls": round(aten_top * per),
        "autograd_nodes": round(autograd_nodes * per),
        "by_category": {
            k: {"self_ms": round(v[0], 1), "calls": round(v[1])}
            for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1][0])
        },
        "by_phase": {
            k: {
                "wall_ms": round(v["wall_ms"], 1),
                "op_self_ms": round(v["op_self_ms"], 1),
                "op_calls": round(v["op_calls"]),
            }
            for k, v in by_phase.items()
        },
        "top_ops": [
            {"name": name, "calls": round(calls, 1), "self_ms": round(ms, 2)}
            for name, (ms, calls) in rows
        ],
    }


# --------------------------------------------------------------------------------- workers


def _ranged(name: str, fn):
    """``fn`` inside a `torch.profiler.record_function` range named ``phase::NAME``."""
    import functools

    import torch

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(PHASE_PREFIX + name):
            return fn(*args, **kwargs)

    return wrapped


def _keras_engine(model_name: str, size: int, batch: int) -> dict:
    import keras

    import keras_nfnet

    keras.utils.set_random_seed(0)
    model = keras_nfnet.create_model(
        model_name, input_shape=(size, size, 3), classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        agc_clipping=AGC_CLIPPING,
    )
    x, y = _data(size, batch)
    # Phase ranges: instance attributes shadow the methods the torch train step calls.
    model.call = _ranged("forward", model.call)
    model._compute_loss = _ranged("loss", model._compute_loss)
    model.zero_grad = _ranged("zero_grad", model.zero_grad)
    model._clip_and_decay = _ranged("agc", model._clip_and_decay)
    model.optimizer.apply = _ranged("optimizer", model.optimizer.apply)
    model.compute_metrics = _ranged("metrics", model.compute_metrics)
    model._loss_tracker.update_state = _ranged("metrics", model._loss_tracker.update_state)
    return {
        "train": lambda: model.train_on_batch(x, y),
        "forward": lambda: model.predict_on_batch(x),
    }


def _timm_engine(model_name: str, size: int, batch: int, rates: tuple[float, float]) -> dict:
    import timm
    import torch
    from timm.utils import adaptive_clip_grad

    torch.manual_seed(0)
    # The row's own dropout and stochastic depth, as bench_nfnet.py gives timm.
    model = timm.create_model(
        model_name, pretrained=False, drop_rate=rates[0], drop_path_rate=rates[1]
    )
    x, y = (torch.from_numpy(a) for a in _data(size, batch, channels_first=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, nesterov=True)
    head = f"{model.default_cfg['classifier']}.weight"
    clipped = [p for name, p in model.named_parameters() if name != head]
    forward = _ranged("forward", model)
    cross_entropy = _ranged("loss", torch.nn.functional.cross_entropy)
    zero_grad = _ranged("zero_grad", optimizer.zero_grad)
    agc = _ranged("agc", adaptive_clip_grad)
    step = _ranged("optimizer", optimizer.step)

    def infer():
        model.eval()
        with torch.inference_mode():
            return forward(x)

    def train():
        model.train()
        zero_grad(set_to_none=True)
        loss = cross_entropy(forward(x), y)
        loss.backward()
        agc(clipped, clip_factor=AGC_CLIPPING)
        step()
        return loss.item()

    return {"train": train, "forward": infer}


def _progress(engine: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {engine}: {text}", file=sys.stderr, flush=True)


def worker(engine: str, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    # Both engines' backward() calls get a phase range (Keras' train step calls it itself).
    torch.Tensor.backward = _ranged("backward", torch.Tensor.backward)
    model_name, size, batch = args.model, args.size, args.batch
    start = time.perf_counter()
    if engine == "timm":
        fns = _timm_engine(model_name, size, batch, (args.drop_rate, args.drop_path_rate))
    else:
        fns = _keras_engine(model_name, size, batch)
    _progress(engine, f"built in {time.perf_counter() - start:.1f} s")
    result = {
        "build_s": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if engine == "timm":
        import timm

        result["timm"] = timm.__version__
    else:
        import keras

        result["keras"] = keras.__version__
    for task in TASKS:
        fn = fns[task]
        wall = []  # the warm-up calls' times; the first one (compilation, caches) is dropped
        for _ in range(args.warmup):
            t = time.perf_counter()
            fn()
            wall.append(time.perf_counter() - t)
        _progress(engine, f"{task} warm-up (s): {[round(w, 2) for w in wall]}")
        wall_profiled = []
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                t = time.perf_counter()
                fn()
                wall_profiled.append(time.perf_counter() - t)
        _progress(engine, f"{task} profiled (s): {[round(w, 2) for w in wall_profiled]}")
        result[task] = summarize(prof, args.steps, wall_profiled, wall[1:] or wall, args.top)
        _progress(engine, f"{task} summarized")
    return result


# ---------------------------------------------------------------------------------- driver


def _ratios(keras_row: dict, timm_row: dict) -> dict:
    keys = ("wall_ms", "wall_ms_profiled", "aten_self_ms", "outside_ops_ms", "aten_calls")
    out = {k: round(keras_row[k] / timm_row[k], 3) for k in keys if timm_row.get(k)}
    return out


def main() -> None:
    parser = int_parser(__doc__, batch=8, steps=2, warmup=2, top=15)
    parser.add_argument("--model", default="eca_nfnet_l0")
    parser.add_argument("--size", type=int, default=None, help="default: the row's train size")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", default=None, help="also write the JSON to this file")
    hidden = argparse.SUPPRESS
    parser.add_argument("--worker", choices=ENGINES, default=None, help=hidden)
    parser.add_argument("--drop-rate", type=float, default=0.0, help=hidden)
    parser.add_argument("--drop-path-rate", type=float, default=0.0, help=hidden)
    args = parser.parse_args()
    if args.worker:
        out = sys.stdout
        sys.stdout = sys.stderr  # keep library prints out of the JSON channel
        result = worker(args.worker, args)
        print(json.dumps(result), file=out, flush=True)
        return
    engines = [e for e in args.engines.split(",") if e]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; accepted: {', '.join(ENGINES)}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "torch"}
    # The row's train size and rates, read on Keras' numpy backend (no framework in the driver).
    probe = (
        "import json, sys, keras_nfnet; s = keras_nfnet.get_spec(sys.argv[1]); "
        "print(json.dumps([s.train_size, s.dropout_rate, s.stochdepth_rate]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, args.model],
        env={**env, "KERAS_BACKEND": "numpy"},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip().splitlines()[-1])
    train_size, drop_rate, drop_path_rate = json.loads(proc.stdout.strip().splitlines()[-1])
    args.size = args.size or train_size
    report = {
        "model": args.model,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "drop_rate": drop_rate,
        "drop_path_rate": drop_path_rate,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "engines": {},
    }
    for engine in engines:
        command = [sys.executable, __file__, "--worker", engine, "--model", args.model]
        command += ["--size", str(args.size), "--batch", str(args.batch)]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        command += ["--top", str(args.top), "--drop-rate", str(drop_rate)]
        command += ["--drop-path-rate", str(drop_path_rate)]
        # The worker's stderr (progress lines, framework logs) goes straight to ours.
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"worker {engine} exited with {proc.returncode}")
        report["engines"][engine] = json.loads(proc.stdout.strip().splitlines()[-1])
        if args.json:  # after each engine, so a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    report["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if {"keras_torch", "timm"} <= set(report["engines"]):
        k, t = report["engines"]["keras_torch"], report["engines"]["timm"]
        report["ratio_keras_over_timm"] = {task: _ratios(k[task], t[task]) for task in TASKS}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
