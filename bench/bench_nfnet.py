"""Benchmark NFNet-F0 in Keras (TF and JAX backends) against timm's ``dm_nfnet_f0`` on PyTorch.

Not a test. One run times, per engine, the forward pass at batch 1 and batch 8 and one training
step at batch 8 (forward, backward, SGD with Nesterov momentum, AGC at lambda 0.01) at 192x192,
float32, and prints JSON with the medians, images per second, the ratio Keras / timm and the
peak resident memory of each engine's process.

Each engine runs in its own long-lived worker process (TensorFlow and torch must not share a
process: docs/platform_facts.md, "Import order crash"). The driver alternates short rounds between
the workers, so every engine sees the same machine load; medians are over all rounds. The JSON
also keeps every sample (``times_s``) and, under ``ratio_per_round``, the ratio to timm of each
round's medians: both engines' samples of a round were taken close together in time (at most
about 20 s apart for four engines), so their range shows how far one run's ratio moves with the
machine.

Processes differ too: on this 2-core machine identical worker processes, timed in turn, can keep
medians several per cent apart for their whole life. ``--legs L`` splits the rounds into L legs,
each with a fresh worker process per engine, so every engine's median pools L processes; the JSON
gives each leg's median (``leg_medians_s``) and the peak memory of the largest process.

Engines:
    keras_tf         keras_nfnet.NFNetF0 on the TF backend: ``predict_on_batch`` and
                     ``train_on_batch`` with the defaults (``jit_compile="auto"``).
    keras_tf_folded  the same model after `keras_nfnet.export.fold_weight_standardization`
                     (forward only).
    keras_jax        keras_nfnet.NFNetF0 on the JAX backend, same calls.
    timm             ``timm.create_model("dm_nfnet_f0")`` in eval mode under
                     ``torch.inference_mode`` for the forward pass; the training step is
                     zero_grad, forward, cross-entropy, backward, ``timm.utils.adaptive_clip_grad``
                     (classifier kernel excluded, as DeepMind does), ``SGD.step``; drop_rate 0.2 and
                     drop_path_rate 0.25 like the Keras model.

Memory: each worker reports its peak resident memory (``ru_maxrss``) and the same figure right
after importing its framework, before any model exists, with the optional packages that import
pulled in. ``import keras`` loads jax, scikit-learn and matplotlib when they are installed (Keras'
integrations; about 200 MB), which the test environment has and a TF user's environment
(``pip install -e ".[cpu]"``) does not. ``--python keras_tf=PATH`` runs an engine's worker under
another interpreter, so each engine can run in an environment holding only its own install.

Usage (from the repository root):
    .venv/bin/python bench/bench_nfnet.py --rounds 8 --json bench/results.json --markdown
    # head to head, only keras_tf and timm, four pairs of processes (the README's first table):
    .venv/bin/python bench/bench_nfnet.py --rounds 8 --legs 4 --engines keras_tf,timm --markdown
    # the TF engines in a TF-only environment:
    python3 -m venv .venv-tf && .venv-tf/bin/pip install -e ".[cpu]"
    .venv/bin/python bench/bench_nfnet.py --python keras_tf=.venv-tf/bin/python \
        --python keras_tf_folded=.venv-tf/bin/python --json bench/results.json --markdown

The markdown table printed with ``--markdown`` is the README's "Performance" table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cli import int_parser  # bench/ is on sys.path when a script in it runs

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("keras_tf", "keras_tf_folded", "keras_jax", "timm")
TASKS = ("forward_b1", "forward_b8", "train_b8")
BATCH = {"forward_b1": 1, "forward_b8": 8, "train_b8": 8}
# Iterations per round: cheap tasks run more often so every median rests on several samples.
ITERS = {"forward_b1": 4, "forward_b8": 2, "train_b8": 2}
CLASSES = 1000
# Packages some frameworks import when installed; listed per worker to explain its memory.
OPTIONAL_IMPORTS = ("jax", "sklearn", "matplotlib", "scipy", "pandas", "torch", "tensorflow")
AGC_CLIPPING = 0.01
LEARNING_RATE = 0.01


# --------------------------------------------------------------------------------- workers


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _data(size: int, batch: int, channels_first: bool = False):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = rng.integers(0, CLASSES, size=(batch,)).astype("int64")
    if channels_first:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x, y


def _keras_engine(engine: str, size: int):
    import keras

    import keras_nfnet
    from keras_nfnet.export import fold_weight_standardization

    keras.utils.set_random_seed(0)
    model = keras_nfnet.NFNetF0(input_shape=(size, size, 3), classifier_activation=None)
    x8, y8 = _data(size, 8)
    x1 = x8[:1]
    if engine == "keras_tf_folded":
        model = fold_weight_standardization(model)
        return {
            "forward_b1": lambda: model.predict_on_batch(x1),
            "forward_b8": lambda: model.predict_on_batch(x8),
        }
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        agc_clipping=AGC_CLIPPING,
    )
    return {
        "forward_b1": lambda: model.predict_on_batch(x1),
        "forward_b8": lambda: model.predict_on_batch(x8),
        "train_b8": lambda: model.train_on_batch(x8, y8),
    }


def _timm_engine(size: int):
    import timm
    import torch
    from timm.utils import adaptive_clip_grad

    torch.manual_seed(0)
    model = timm.create_model("dm_nfnet_f0", pretrained=False, drop_rate=0.2, drop_path_rate=0.25)
    x8, y8 = (torch.from_numpy(a) for a in _data(size, 8, channels_first=True))
    x1 = x8[:1]
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, nesterov=True)
    # docs/nfnet_reference.md §13.3: every parameter but the classifier kernel is clipped.
    clipped = [p for name, p in model.named_parameters() if name != "head.fc.weight"]

    def forward(x):
        model.eval()
        with torch.inference_mode():
            return model(x)

    def train():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x8), y8)
        loss.backward()
        adaptive_clip_grad(clipped, clip_factor=AGC_CLIPPING)
        optimizer.step()
        return loss.item()

    return {
        "forward_b1": lambda: forward(x1),
        "forward_b8": lambda: forward(x8),
        "train_b8": train,
    }


def _versions(engine: str) -> dict:
    versions = {"python": platform.python_version()}
    if engine == "timm":
        import timm
        import torch

        versions.update(torch=torch.__version__, timm=timm.__version__)
        versions["threads"] = torch.get_num_threads()
    else:
        import keras

        versions["keras"] = keras.__version__
        versions["backend"] = keras.backend.backend()
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            versions["tensorflow"] = tf.__version__
        else:
            import jax

            versions["jax"] = jax.__version__
    return versions


def _import_framework(engine: str) -> dict:
    """Import the engine's framework; memory at that point, before any model exists."""
    if engine == "timm":
        import timm  # noqa: F401
        import torch  # noqa: F401
    else:
        import keras  # noqa: F401

        import keras_nfnet  # noqa: F401
    return {
        "import_rss_mb": round(_peak_rss_mb(), 1),
        "optional_imports": [m for m in OPTIONAL_IMPORTS if m in sys.modules],
        "python": sys.executable,
    }


def worker(engine: str, size: int) -> None:
    """Build the engine, warm every task up once, then serve JSON commands from stdin."""
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints out of the protocol channel
    imported = _import_framework(engine)
    start = time.perf_counter()
    tasks = _timm_engine(size) if engine == "timm" else _keras_engine(engine, size)
    build_s = time.perf_counter() - start
    first_call_s = {}
    for name, fn in tasks.items():
        t = time.perf_counter()
        fn()
        first_call_s[name] = time.perf_counter() - t
    hello = {
        "ready": True,
        "build_s": build_s,
        "first_call_s": first_call_s,
        "tasks": list(tasks),
        "versions": _versions(engine),
        **imported,
    }
    print(json.dumps(hello), file=out, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "run":
            fn = tasks[command["task"]]
            times = []
            for _ in range(command["iters"]):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            reply = {"times": times}
        else:
            reply = {"peak_rss_mb": _peak_rss_mb()}
        print(json.dumps(reply), file=out, flush=True)
        if command["op"] == "quit":
            return


# ---------------------------------------------------------------------------------- driver


class Worker:
    def __init__(self, engine: str, size: int, python: str = sys.executable):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
        if engine.startswith("keras"):
            env["KERAS_BACKEND"] = "jax" if engine == "keras_jax" else "tensorflow"
        self.engine = engine
        # The worker's stderr (framework logs, tracebacks) goes to a log file named in errors.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the worker)
            "w+", prefix=f"bench_{engine}_", suffix=".log"
        )
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", engine, "--size", str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            raise RuntimeError(f"worker {self.engine} exited with {self.proc.wait()}:\n{tail}")
        return json.loads(line)

    def call(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _start_workers(engines: list[str], size: int, pythons: dict) -> dict:
    workers = {}
    for engine in engines:  # started one at a time so compile times are not inflated
        workers[engine] = Worker(engine, size, pythons.get(engine, sys.executable))
        print(f"[bench] {engine} ready: {workers[engine].hello['first_call_s']}", file=sys.stderr)
    return workers


def _flat(by_round: list[list[float]]) -> list[float]:
    return [t for round_times in by_round for t in round_times]


def _leg_rounds(rounds: int, legs: int) -> list[int]:
    """How many of the ``rounds`` each leg runs (as even as possible, every leg at least one)."""
    if not 1 <= legs <= rounds:
        raise ValueError(f"--legs must be between 1 and --rounds ({rounds}). Received: {legs}.")
    return [rounds // legs + (i < rounds % legs) for i in range(legs)]


def run(
    engines: list[str], rounds: int, size: int, pythons: dict | None = None, legs: int = 1
) -> dict:
    load_before = _loadavg()
    plan = _leg_rounds(rounds, legs)
    # per_round[engine][task][r]: the samples of round r, kept for per-round (paired) ratios;
    # the legs are consecutive runs of rounds (`plan`), each served by one worker process.
    per_round, peaks, hellos = {}, {}, {}
    r = 0
    for leg_rounds in plan:
        workers = _start_workers(engines, size, pythons or {})
        for engine, worker_ in workers.items():
            hellos.setdefault(engine, worker_.hello)  # build and first-call times of leg 1
            per_round.setdefault(engine, {t: [] for t in worker_.hello["tasks"]})
        for _ in range(leg_rounds):
            order = engines[r % len(engines) :] + engines[: r % len(engines)]  # who goes first
            for task in TASKS:
                for engine in order:
                    if task in per_round[engine]:
                        reply = workers[engine].call(op="run", task=task, iters=ITERS[task])
                        per_round[engine][task].append(reply["times"])
            r += 1
            print(f"[bench] round {r}/{rounds} done, load {_loadavg()}", file=sys.stderr)
        for engine, worker_ in workers.items():
            peak = worker_.call(op="quit")["peak_rss_mb"]
            worker_.proc.wait()
            peaks[engine] = max(peaks.get(engine, 0.0), peak)
    results = {}
    for engine in engines:
        peak, hello = peaks[engine], hellos[engine]
        tasks = {}
        for task, by_round in per_round[engine].items():
            times = _flat(by_round)
            median = statistics.median(times)
            tasks[task] = {
                "median_s": round(median, 4),
                "images_per_s": round(BATCH[task] / median, 2),
                "n": len(times),
                "min_s": round(min(times), 4),
                "max_s": round(max(times), 4),
                "times_s": [round(t, 4) for t in times],
                # One median per worker process (leg): how far identical processes differ.
                "leg_medians_s": [
                    round(statistics.median(_flat(by_round[end - n : end])), 4)
                    for n, end in zip(plan, itertools.accumulate(plan))
                ],
            }
        results[engine] = {
            **tasks,
            "peak_rss_mb": round(peak, 1),
            "import_rss_mb": hello["import_rss_mb"],
            "peak_above_import_mb": round(peak - hello["import_rss_mb"], 1),
            "optional_imports": hello["optional_imports"],
            "python": hello["python"],
            "build_s": round(hello["build_s"], 2),
            "first_call_s": {k: round(v, 2) for k, v in hello["first_call_s"].items()},
            "versions": hello["versions"],
        }
    ratios, spreads = {}, {}
    if "timm" in results:
        timm = results["timm"]
        for engine in engines:
            if engine == "timm":
                continue
            ratios[engine] = {
                task: round(results[engine][task]["images_per_s"] / timm[task]["images_per_s"], 3)
                for task in TASKS
                if task in results[engine]
            }
            for key in ("peak_rss", "peak_above_import"):
                ratios[engine][key] = round(results[engine][f"{key}_mb"] / timm[f"{key}_mb"], 3)
        spreads = {
            engine: _round_ratios(per_round[engine], per_round["timm"])
            for engine in engines
            if engine != "timm"
        }
    return {
        "model": "NFNet-F0",
        "input": f"{size}x{size}x3 float32",
        "rounds": rounds,
        "legs": legs,
        "iters_per_round": ITERS,
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        "results": results,
        "ratio_keras_over_timm": ratios,
        # The same ratio per round (from the samples both engines took in that round), to show
        # how far one run's figure moves with the machine.
        "ratio_per_round": spreads,
    }


def _round_ratios(engine_rounds: dict, timm_rounds: dict) -> dict:
    """Per task: the images/s ratio to timm of each round's medians, and their range."""
    out = {}
    for task, by_round in engine_rounds.items():
        ratios = [
            statistics.median(peer) / statistics.median(own)
            for own, peer in zip(by_round, timm_rounds[task])
        ]
        out[task] = {
            "rounds": [round(r, 3) for r in ratios],
            "min": round(min(ratios), 3),
            "median": round(statistics.median(ratios), 3),
            "max": round(max(ratios), 3),
        }
    return out


def markdown(report: dict) -> str:
    """The README's performance table."""
    rows = [
        "| engine | forward b1 (img/s) | forward b8 (img/s) | train step b8 (img/s) | "
        "peak memory (MB) | after import (MB) |",
        "|---|---|---|---|---|---|",
    ]
    ratios = report["ratio_keras_over_timm"]
    for engine, res in report["results"].items():
        cells = []
        for task in TASKS:
            if task not in res:
                cells.append("–")
                continue
            cell = f"{res[task]['images_per_s']:.2f}"
            if engine in ratios:
                cell += f" ({ratios[engine][task]:.2f}x)"
            cells.append(cell)
        memory = f"{res['peak_rss_mb']:.0f}"
        if engine in ratios:
            memory += f" ({ratios[engine]['peak_rss']:.2f}x)"
        rows.append(
            f"| {engine} | " + " | ".join(cells) + f" | {memory} | {res['import_rss_mb']:.0f} |"
        )
    spreads = report.get("ratio_per_round") or {}
    if spreads:
        rows += [
            "",
            "| ratio to timm, per round (min – max) | forward b1 | forward b8 | train step b8 |",
            "|---|---|---|---|",
        ]
        for engine, by_task in spreads.items():
            cells = [
                f"{by_task[t]['min']:.2f} – {by_task[t]['max']:.2f}" if t in by_task else "–"
                for t in TASKS
            ]
            rows.append(f"| {engine} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = int_parser(__doc__, rounds=5, size=192, legs=1)  # --legs: see the docstring
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", help="also write the JSON report to this file")
    parser.add_argument("--markdown", action="store_true", help="also print the README table")
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="ENGINE=PATH",
        help="run ENGINE's worker under this interpreter (repeatable); default: this one",
    )
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size)
        return
    engines = args.engines.split(",")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; accepted: {', '.join(ENGINES)}.")
    try:
        _leg_rounds(args.rounds, args.legs)
    except ValueError as error:
        parser.error(str(error))
    pythons = {}
    for item in args.python:
        engine, sep, path = item.partition("=")
        if not sep or engine not in ENGINES or not Path(path).is_file():
            parser.error(
                f"--python {item!r}: expected ENGINE=PATH with ENGINE one of {', '.join(ENGINES)} "
                "and PATH an existing interpreter."
            )
        pythons[engine] = path
    report = run(engines, args.rounds, args.size, pythons, args.legs)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        # Imported only now: importing keras_nfnet loads Keras and its backend, which must not
        # sit in the driver's memory while the workers are timed.
        sys.path.insert(0, str(REPO))
        from keras_nfnet.atomic import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    if args.markdown:
        print(markdown(report))


if __name__ == "__main__":
    main()
