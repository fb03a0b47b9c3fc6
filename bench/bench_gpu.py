"""Training and inference throughput on one accelerator: Keras NF models against timm (JSON).

Not a test. For each model of ``--models`` (default ``dm_nfnet_f0`` and ``eca_nfnet_l0``, each at
its train size), two engines run one after the other, each in its own process:

* ``keras``: `keras_nfnet.create_model(row)` under the ``mixed_bfloat16`` policy with XLA: on the
  JAX backend (XLA always; the default, and what a machine with JAX but no TensorFlow runs) or on
  the TF backend with ``jit_compile=True`` (``--keras-backend tensorflow``). The training step is
  ``train_on_batch`` with SGD (Nesterov momentum) and AGC at lambda 0.01; inference is
  ``predict_on_batch``.
* ``timm``: ``timm.create_model(row)`` in ``channels_last`` memory format under
  ``torch.autocast(dtype=torch.bfloat16)``, compiled with ``torch.compile`` where that works
  (where it fails, the error is recorded and the model runs eagerly); the training step is
  forward, cross-entropy, backward, ``timm.utils.adaptive_clip_grad`` (classifier excluded) and
  ``SGD.step``; inference runs in eval mode under ``torch.inference_mode``.

Training runs at the largest batch of ``--train-batches`` that fits: the candidates are tried
from the largest down, and a candidate whose step runs out of device memory is recorded
(``tried``) and the next one tried. Inference runs at ``--infer-batch`` (256). Each figure is the
median of ``--steps`` timed steps after ``--warmup`` untimed ones (compilation included in
those), with the device synchronized around every step. Inputs are random, already on the
device, float32 (both engines cast them inside the model).

``--dry-run`` proves the plumbing on a CPU (about 1.5 minutes on 2 quiet cores): ``test_nfnet``
at 64 px, candidate batches 8 and 4 with 8 refused as if out of memory, 2 timed steps, no
``torch.compile``, JAX on the CPU, the two engines' workers at once (a real run times them one
after the other). It writes the same JSON keys as a real run.

Usage (from the repository root; bench/gpu.sh wraps it for a GPU machine):
    python bench/bench_gpu.py --json bench/results_gpu_h200.json --markdown
    python bench/bench_gpu.py --dry-run --json /tmp/gpu_dry_run.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cli import positive_int  # bench/ is on sys.path when a script in it runs

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("keras", "timm")
DEFAULT_MODELS = ("dm_nfnet_f0", "eca_nfnet_l0")
TRAIN_BATCHES = (768, 512, 384, 256, 128)
CLASSES = 1000
AGC_CLIPPING = 0.01
LEARNING_RATE = 0.01
DRY_RUN = {
    "models": ("test_nfnet",),
    "size": 64,
    "train_batches": (8, 4),
    "fail_above": 4,
    "infer_batch": 4,
    "steps": 2,
    "warmup": 1,
}
OOM_WORDS = ("out of memory", "resource_exhausted", "resource exhausted", "oom")


class SimulatedOutOfMemoryError(RuntimeError):
    """Raised by ``--dry-run`` for batches above its limit, to exercise the batch search."""


# --------------------------------------------------------------------------------- workers


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, SimulatedOutOfMemoryError) or any(
        word in str(error).lower() for word in OOM_WORDS
    )


def _median_s(step, steps: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        step()
        sync()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _largest_fitting(make_step, batches, fail_above, steps, warmup, sync, free) -> dict:
    """Time ``make_step(batch)()`` at the largest of ``batches`` that fits in device memory."""
    tried = []
    for batch in sorted(batches, reverse=True):
        try:
            if fail_above and batch > fail_above:
                raise SimulatedOutOfMemoryError(f"dry run: batch {batch} > {fail_above}")
            step = make_step(batch)
            median = _median_s(step, steps, warmup, sync)
        except Exception as error:  # only out-of-memory errors are caught
            if not _is_out_of_memory(error):
                raise
            tried.append({"batch": batch, "fits": False, "error": str(error).splitlines()[0][:200]})
            step = None
            free()
            continue
        tried.append({"batch": batch, "fits": True})
        return {
            "batch": batch,
            "median_step_s": round(median, 5),
            "images_per_s": round(batch / median, 1),
            "tried": tried,
        }
    raise RuntimeError(f"no batch of {sorted(batches)} fits: {tried}")


def _keras_worker(args) -> dict:
    import keras
    import numpy as np

    import keras_nfnet

    backend = keras.backend.backend()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    spec = keras_nfnet.get_spec(args.model)
    size = args.size or spec.train_size
    model = keras_nfnet.create_model(
        args.model, input_shape=(size, size, 3), classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        agc_clipping=AGC_CLIPPING,
        jit_compile=True,  # XLA: on JAX it always is; on TF "auto" would say so on a GPU too
    )
    rng = np.random.default_rng(0)

    def data(batch):
        x = rng.normal(size=(batch, size, size, 3)).astype("float32")
        y = rng.integers(0, CLASSES, size=(batch,)).astype("int32")
        return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def make_train(batch):
        x, y = data(batch)
        return lambda: model.train_on_batch(x, y)  # returns host numbers: a sync

    def make_infer(batch):
        x, _ = data(batch)
        return lambda: model.predict_on_batch(x)

    def free():
        gc.collect()
        if backend == "jax":
            import jax

            jax.clear_caches()

    sync = lambda: None  # noqa: E731 (both calls return host arrays, which waits for the device)
    train = _largest_fitting(
        make_train, args.train_batches, args.fail_above, args.steps, args.warmup, sync, free
    )
    infer_s = _median_s(make_infer(args.infer_batch), args.steps, args.warmup, sync)
    return {
        "engine": "keras",
        "device": _keras_device(backend),
        "settings": {
            "backend": backend,
            "policy": "mixed_bfloat16",
            "xla": True,
            "agc_clipping": AGC_CLIPPING,
        },
        "versions": _keras_versions(backend),
        "input": f"{size}x{size}x3",
        "train": train,
        "infer": _infer_entry(args.infer_batch, infer_s),
    }


def _keras_device(backend: str) -> str:
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return f"gpu: {details.get('device_name', gpus[0].name)}"


def _keras_versions(backend: str) -> dict:
    import keras

    versions = {"python": platform.python_version(), "keras": keras.__version__}
    if backend == "jax":
        import jax

        versions["jax"] = jax.__version__
    else:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    return versions


def _infer_entry(batch: int, median_s: float) -> dict:
    return {
        "batch": batch,
        "median_step_s": round(median_s, 5),
        "images_per_s": round(batch / median_s, 1),
    }


def _timm_worker(args) -> dict:
    import timm
    import torch
    from timm.utils import adaptive_clip_grad

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    row = json.loads(args.row)
    size = args.size or row["size"]
    # The row's own dropout and stochastic depth, as the Keras model has them.
    model = timm.create_model(
        args.model,
        pretrained=False,
        drop_rate=row["dropout_rate"],
        drop_path_rate=row["stochdepth_rate"],
    )
    model = model.to(device).to(memory_format=torch.channels_last)
    head = f"{model.default_cfg['classifier']}.weight"
    clipped = [p for name, p in model.named_parameters() if name != head]
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, nesterov=True)
    compiled, compile_status = model, "off"
    if args.compile:
        try:
            compiled = torch.compile(model)
            compile_status = "on"
        except Exception as error:  # recorded; the model then runs eagerly
            compile_status = f"failed: {str(error).splitlines()[0][:200]}"

    def data(batch):
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, CLASSES, (batch,), device=device)
        return x.contiguous(memory_format=torch.channels_last), y

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def run(fn, x, y=None):
        nonlocal compiled, compile_status
        try:
            return fn(compiled, x, y)
        except Exception as error:
            if compiled is model or _is_out_of_memory(error):
                raise
            # torch.compile failed at its first call: record it and go on eagerly.
            compile_status = f"failed: {str(error).splitlines()[0][:200]}"
            compiled = model
            return fn(model, x, y)

    def train_step(net, x, y):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        adaptive_clip_grad(clipped, clip_factor=AGC_CLIPPING)
        optimizer.step()

    def infer_step(net, x, _):
        model.eval()
        with torch.inference_mode(), autocast():
            net(x)

    def make_train(batch):
        x, y = data(batch)
        return lambda: run(train_step, x, y)

    def make_infer(batch):
        x, _ = data(batch)
        return lambda: run(infer_step, x)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def free():
        optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    train = _largest_fitting(
        make_train, args.train_batches, args.fail_above, args.steps, args.warmup, sync, free
    )
    infer_s = _median_s(make_infer(args.infer_batch), args.steps, args.warmup, sync)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    return {
        "engine": "timm",
        "device": f"{device.type}: {name}",
        "settings": {
            "amp": "bfloat16",
            "channels_last": True,
            "compile": compile_status,
            "agc_clipping": AGC_CLIPPING,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
        },
        "input": f"{size}x{size}x3",
        "train": train,
        "infer": _infer_entry(args.infer_batch, infer_s),
    }


# ---------------------------------------------------------------------------------- driver


def _worker_env(engine: str, keras_backend: str, dry_run: bool) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if engine == "keras":
        env["KERAS_BACKEND"] = keras_backend
        # JAX takes 75 % of the device by default; the batch search wants nearly all of it.
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
        if dry_run:
            env["JAX_PLATFORMS"] = "cpu"
            env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _run_worker(engine: str, model: str, row: dict, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            __file__,
            "--worker",
            engine,
            "--model",
            model,
            "--row",
            json.dumps(row),
            "--out",
            str(out),
            *_shared_flags(args),
        ]
        start = time.perf_counter()
        proc = subprocess.run(
            command,
            env=_worker_env(engine, args.keras_backend, args.dry_run),
            text=True,
            capture_output=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"{engine} on {model} exited with {proc.returncode}:\n{tail}")
        result = json.loads(out.read_text())
    result["process_s"] = round(time.perf_counter() - start, 1)
    print(f"[gpu] {model} {engine}: {result['train']} {result['infer']}", file=sys.stderr)
    return result


def _shared_flags(args) -> list[str]:
    flags = [
        "--train-batches",
        ",".join(map(str, args.train_batches)),
        "--infer-batch",
        str(args.infer_batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--keras-backend",
        args.keras_backend,
        "--fail-above",
        str(args.fail_above),
    ]
    if args.size:
        flags += ["--size", str(args.size)]
    if args.dry_run:
        flags.append("--dry-run")
    if not args.compile:
        flags.append("--no-compile")
    return flags


def _row_settings(models: list[str]) -> dict[str, dict]:
    """Each row's train size, dropout and stochastic-depth rate, read in a subprocess on Keras'
    numpy backend (the driver holds no framework and no device)."""
    code = (
        "import json, sys, keras_nfnet\n"
        "specs = {m: keras_nfnet.get_spec(m) for m in sys.argv[1:]}\n"
        "print(json.dumps({m: {'size': s.train_size, 'dropout_rate': s.dropout_rate, "
        "'stochdepth_rate': s.stochdepth_rate} for m, s in specs.items()}))"
    )
    env = {**os.environ, "KERAS_BACKEND": "numpy", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *models], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    settings = _row_settings(args.models)
    rows = {}
    for model in args.models:
        run_engine = functools.partial(_run_worker, model=model, row=settings[model], args=args)
        # A real run times the engines one at a time (the builtin, lazy `map`), each with the
        # device to itself; a dry run measures nothing and runs both at once, to save its time.
        with concurrent.futures.ThreadPoolExecutor(len(ENGINES)) as pool:
            engines = dict(zip(ENGINES, (pool.map if args.dry_run else map)(run_engine, ENGINES)))
        keras_, timm_ = engines["keras"], engines["timm"]
        rows[model] = {
            **engines,
            "ratio_keras_over_timm": {
                task: round(keras_[task]["images_per_s"] / timm_[task]["images_per_s"], 3)
                for task in ("train", "infer")
            },
        }
    first = rows[args.models[0]]
    return {
        "dry_run": args.dry_run,
        "device": {"keras": first["keras"]["device"], "timm": first["timm"]["device"]},
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "settings": {
            "train_batches": list(args.train_batches),
            "infer_batch": args.infer_batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "keras_backend": args.keras_backend,
            "torch_compile": args.compile,
        },
        "models": list(rows),
        "rows": rows,
    }


def markdown(report: dict) -> str:
    """The README's GPU table: one row per model."""
    device = report["device"]["timm"].split(": ", 1)[-1]
    lines = [
        "| device | model | Keras train (img/s, batch) | timm train (img/s, batch) | ratio | "
        "Keras infer (img/s, batch) | timm infer (img/s, batch) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, row in report["rows"].items():
        cells = []
        for task in ("train", "infer"):
            k, t = row["keras"][task], row["timm"][task]
            cells += [
                f"{k['images_per_s']:.0f} ({k['batch']})",
                f"{t['images_per_s']:.0f} ({t['batch']})",
                f"{row['ratio_keras_over_timm'][task]:.2f}x",
            ]
        lines.append(f"| {device} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 512,256; got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--size", type=positive_int, help="input size (default: each row's)")
    parser.add_argument("--train-batches", type=_batches, default=TRAIN_BATCHES)
    parser.add_argument("--infer-batch", type=positive_int, default=256)
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--warmup", type=positive_int, default=3)
    parser.add_argument("--keras-backend", choices=("jax", "tensorflow"), default="jax")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="run timm eagerly (no torch.compile)",
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--json", help="write the JSON report to this file")
    parser.add_argument("--markdown", action="store_true", help="also print the README table")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--fail-above", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.worker:
        result = _keras_worker(args) if args.worker == "keras" else _timm_worker(args)
        Path(args.out).write_text(json.dumps(result))
        return
    args.models = [m for m in args.models.split(",") if m]
    if args.dry_run:
        args.models = list(DRY_RUN["models"])
        args.size = DRY_RUN["size"]
        args.train_batches = DRY_RUN["train_batches"]
        args.fail_above = DRY_RUN["fail_above"]
        args.infer_batch = DRY_RUN["infer_batch"]
        args.steps = DRY_RUN["steps"]
        args.warmup = DRY_RUN["warmup"]
        args.compile = False
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        target = Path(args.json)
        with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".tmp", delete=False) as f:
            f.write(text + "\n")
        os.replace(f.name, target)
    if args.markdown:
        print(markdown(report))


if __name__ == "__main__":
    main()
