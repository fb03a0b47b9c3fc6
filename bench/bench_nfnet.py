"""Benchmark Keras NF models (TF, JAX and torch backends) against the same timm model on PyTorch.

Not a test. For each model of ``--models`` (any `keras_nfnet.list_models()` row that timm also
has, by its timm name; default ``dm_nfnet_f0``), one run times, per engine, the forward pass at
batch 1 and batch 8 and one training step at batch 8 (forward, backward, SGD with Nesterov
momentum, AGC at lambda 0.01) at the row's own train size (``--size`` overrides it), float32,
and prints JSON with the medians, images per second, the ratio Keras / timm and the peak resident
memory of each engine's process. Dropout and stochastic depth are the row's own, on both sides
(F0: 0.2 and 0.25; timm's L, ECA-L, NF-ResNet and NF-RegNet rows: none).

Each engine runs in its own long-lived worker process (TensorFlow and torch must not share a
process: docs/platform_facts.md, "Import order crash"). The driver alternates short rounds between
the workers, so every engine sees the same machine load; medians are over all rounds. The JSON
also keeps every sample (``times_s``), the load average after every round (``loadavg_per_round``)
and, under ``ratio_per_round``, the ratio to timm of each round's medians: both engines' samples
of a round were taken close together in time, so their range shows how far one run's ratio moves
with the machine. Models run one after the other, each with its own workers.

Processes differ too: on a 2-core machine identical worker processes, timed in turn, can keep
medians several per cent apart for their whole life. ``--legs L`` splits the rounds into L legs,
each with a fresh worker process per engine, so every engine's median pools L processes; the JSON
gives each leg's median (``leg_medians_s``) and the peak memory of the largest process.

Engines:
    keras_tf         `keras_nfnet.create_model(row)` on the TF backend: ``predict_on_batch`` and
                     ``train_on_batch`` with the defaults (``jit_compile="auto"``).
    keras_tf_folded  the same model after `keras_nfnet.export.fold_weight_standardization`
                     (forward only).
    keras_jax        the Keras model on the JAX backend, same calls.
    keras_torch      the Keras model on the torch backend, same calls: the same PyTorch kernels
                     timm runs, so its gap to timm is Keras' overhead or ours.
    timm             ``timm.create_model(row)`` in eval mode under ``torch.inference_mode`` for
                     the forward pass; the training step is zero_grad, forward, cross-entropy,
                     backward, ``timm.utils.adaptive_clip_grad`` (classifier kernel excluded, as
                     DeepMind does), ``SGD.step``.

Memory: each worker reports its peak resident memory (``ru_maxrss``) and the same figure right
after importing its framework, before any model exists, with the optional packages that import
pulled in. ``import keras`` loads jax, scikit-learn and matplotlib when they are installed (Keras'
integrations; about 200 MB), which the test environment has and a TF user's environment
(``pip install -e ".[cpu]"``) does not. ``--python keras_tf=PATH`` runs an engine's worker under
another interpreter, so each engine can run in an environment holding only its own install.

Usage (from the repository root):
    .venv/bin/python bench/bench_nfnet.py --rounds 8 --json bench/results.json --markdown
    # head to head on timm's most fine-tuned rows, TF against timm, two pairs of processes each:
    .venv/bin/python bench/bench_nfnet.py --models eca_nfnet_l0,nfnet_l0,nf_regnet_b1,nf_resnet50 \
        --engines keras_tf,timm --rounds 6 --legs 2 --tasks forward_b8,train_b8 --markdown
    # the TF engines in a TF-only environment:
    python3 -m venv .venv-tf && .venv-tf/bin/pip install -e ".[cpu]"
    .venv/bin/python bench/bench_nfnet.py --python keras_tf=.venv-tf/bin/python \
        --python keras_tf_folded=.venv-tf/bin/python --json bench/results.json --markdown

The markdown table printed with ``--markdown`` is the README's "Performance" table: one row per
model and engine.
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

from _cli import int_parser, positive_int  # bench/ is on sys.path when a script in it runs

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("keras_tf", "keras_tf_folded", "keras_jax", "keras_torch", "timm")
BACKENDS = {"keras_tf": "tensorflow", "keras_tf_folded": "tensorflow", "keras_jax": "jax"}
BACKENDS["keras_torch"] = "torch"
TASKS = ("forward_b1", "forward_b8", "train_b8")
BATCH = {"forward_b1": 1, "forward_b8": 8, "train_b8": 8}
# Iterations per round: cheap tasks run more often so every median rests on several samples.
ITERS = {"forward_b1": 4, "forward_b8": 2, "train_b8": 2}
CLASSES = 1000
DEFAULT_MODELS = ("dm_nfnet_f0",)
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


def _keras_engine(engine: str, row: dict, tasks: tuple[str, ...]) -> dict:
    import keras

    import keras_nfnet
    from keras_nfnet.export import fold_weight_standardization

    keras.utils.set_random_seed(0)
    size = row["size"]
    model = keras_nfnet.create_model(
        row["model"], input_shape=(size, size, 3), classifier_activation=None
    )
    x8, y8 = _data(size, 8)
    x1 = x8[:1]
    fns = {
        "forward_b1": lambda: model.predict_on_batch(x1),
        "forward_b8": lambda: model.predict_on_batch(x8),
    }
    if engine == "keras_tf_folded":
        model = fold_weight_standardization(model)
    else:
        model.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            agc_clipping=AGC_CLIPPING,
        )
        fns["train_b8"] = lambda: model.train_on_batch(x8, y8)
    return {task: fn for task, fn in fns.items() if task in tasks}


def _timm_engine(row: dict, tasks: tuple[str, ...]) -> dict:
    import timm
    import torch
    from timm.utils import adaptive_clip_grad

    torch.manual_seed(0)
    if not timm.is_model(row["model"]):
        raise ValueError(f"timm has no model {row['model']!r}; compare a row timm also has.")
    model = timm.create_model(
        row["model"],
        pretrained=False,
        drop_rate=row["dropout_rate"],
        drop_path_rate=row["stochdepth_rate"],
    )
    x8, y8 = (torch.from_numpy(a) for a in _data(row["size"], 8, channels_first=True))
    x1 = x8[:1]
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, nesterov=True)
    # docs/nfnet_reference.md §13.3: every parameter but the classifier kernel is clipped.
    head = f"{model.default_cfg['classifier']}.weight"
    clipped = [p for name, p in model.named_parameters() if name != head]

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

    fns = {"forward_b1": lambda: forward(x1), "forward_b8": lambda: forward(x8), "train_b8": train}
    return {task: fn for task, fn in fns.items() if task in tasks}


def _versions(engine: str) -> dict:
    versions = {"python": platform.python_version()}
    if engine == "timm" or engine == "keras_torch":
        import torch

        versions.update(torch=torch.__version__, threads=torch.get_num_threads())
    if engine == "timm":
        import timm

        versions["timm"] = timm.__version__
        return versions
    import keras

    versions.update(keras=keras.__version__, backend=keras.backend.backend())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    elif keras.backend.backend() == "jax":
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


def worker(engine: str, row: dict, tasks: tuple[str, ...]) -> None:
    """Build the engine, warm every task up once, then serve JSON commands from stdin."""
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints out of the protocol channel
    imported = _import_framework(engine)
    start = time.perf_counter()
    fns = _timm_engine(row, tasks) if engine == "timm" else _keras_engine(engine, row, tasks)
    build_s = time.perf_counter() - start
    first_call_s = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        first_call_s[name] = time.perf_counter() - t
    hello = {
        "ready": True,
        "build_s": build_s,
        "first_call_s": first_call_s,
        "tasks": list(fns),
        "versions": _versions(engine),
        **imported,
    }
    print(json.dumps(hello), file=out, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "run":
            fn = fns[command["task"]]
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


def describe_rows(models: list[str]) -> None:
    """Print, as JSON, each row's train size, dropout and stochastic-depth rate (a subprocess of
    the driver, on Keras' numpy backend, so the driver itself never loads a framework)."""
    import keras_nfnet

    accepted = keras_nfnet.list_models()
    unknown = [m for m in models if m not in accepted]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; accepted: {', '.join(accepted)}.")
    rows = {}
    for model in models:
        spec = keras_nfnet.get_spec(model)
        rows[model] = {
            "model": model,
            "size": spec.train_size,
            "dropout_rate": spec.dropout_rate,
            "stochdepth_rate": spec.stochdepth_rate,
        }
    print(json.dumps(rows))


# ---------------------------------------------------------------------------------- driver


def _env(engine: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["KERAS_BACKEND"] = BACKENDS.get(engine, "numpy")
    return env


class Worker:
    def __init__(self, engine: str, row: dict, tasks: tuple[str, ...], python: str):
        self.engine = engine
        # The worker's stderr (framework logs, tracebacks) goes to a log file named in errors.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the worker)
            "w+", prefix=f"bench_{engine}_", suffix=".log"
        )
        command = [python, __file__, "--worker", engine, "--row", json.dumps(row)]
        self.proc = subprocess.Popen(
            [*command, "--tasks", ",".join(tasks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=_env(engine),
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


def _row_settings(models: list[str], python: str = sys.executable) -> dict:
    """`describe_rows` in a subprocess: ``{model: {"size", "dropout_rate", ...}}``."""
    proc = subprocess.run(
        [python, __file__, "--describe", ",".join(models)],
        env=_env("describe"),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _start_workers(engines: list[str], row: dict, tasks: tuple[str, ...], pythons: dict) -> dict:
    workers = {}
    for engine in engines:  # started one at a time so compile times are not inflated
        python = pythons.get(engine, sys.executable)
        workers[engine] = Worker(engine, row, tasks, python)
        first = {k: round(v, 2) for k, v in workers[engine].hello["first_call_s"].items()}
        print(f"[bench] {row['model']} {engine} ready: {first}", file=sys.stderr)
    return workers


def _flat(by_round: list[list[float]]) -> list[float]:
    return [t for round_times in by_round for t in round_times]


def _leg_rounds(rounds: int, legs: int) -> list[int]:
    """How many of the ``rounds`` each leg runs (as even as possible, every leg at least one)."""
    if not 1 <= legs <= rounds:
        raise ValueError(f"--legs must be between 1 and --rounds ({rounds}). Received: {legs}.")
    return [rounds // legs + (i < rounds % legs) for i in range(legs)]


def run_model(
    engines: list[str],
    rounds: int,
    row: dict,
    pythons: dict | None = None,
    legs: int = 1,
    tasks: tuple[str, ...] = TASKS,
) -> dict:
    """Time every engine on one row (``row``: `describe_rows`' entry, size included)."""
    load_before = _loadavg()
    plan = _leg_rounds(rounds, legs)
    # per_round[engine][task][r]: the samples of round r, kept for per-round (paired) ratios;
    # the legs are consecutive runs of rounds (`plan`), each served by one worker process.
    per_round, peaks, hellos, loads = {}, {}, {}, []
    r = 0
    for leg_rounds in plan:
        workers = _start_workers(engines, row, tasks, pythons or {})
        for engine, worker_ in workers.items():
            hellos.setdefault(engine, worker_.hello)  # build and first-call times of leg 1
            per_round.setdefault(engine, {t: [] for t in worker_.hello["tasks"]})
        for _ in range(leg_rounds):
            order = engines[r % len(engines) :] + engines[: r % len(engines)]  # who goes first
            for task in tasks:
                for engine in order:
                    if task in per_round[engine]:
                        reply = workers[engine].call(op="run", task=task, iters=ITERS[task])
                        per_round[engine][task].append(reply["times"])
            r += 1
            loads.append(_loadavg())
            print(f"[bench] {row['model']} round {r}/{rounds}, load {loads[-1]}", file=sys.stderr)
        for engine, worker_ in workers.items():
            peak = worker_.call(op="quit")["peak_rss_mb"]
            worker_.proc.wait()
            peaks[engine] = max(peaks.get(engine, 0.0), peak)
    results = {}
    for engine in engines:
        peak, hello = peaks[engine], hellos[engine]
        timed = per_round[engine]
        results[engine] = {
            **{task: _summary(task, by_round, plan) for task, by_round in timed.items()},
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
                for task in tasks
                if task in results[engine] and task in timm
            }
            for key in ("peak_rss", "peak_above_import"):
                ratios[engine][key] = round(results[engine][f"{key}_mb"] / timm[f"{key}_mb"], 3)
            spreads[engine] = _round_ratios(per_round[engine], per_round["timm"])
    return {
        "model": row["model"],
        "input": f"{row['size']}x{row['size']}x3 float32",
        "dropout_rate": row["dropout_rate"],
        "stochdepth_rate": row["stochdepth_rate"],
        "loadavg_before": load_before,
        "loadavg_per_round": loads,
        "results": results,
        "ratio_keras_over_timm": ratios,
        # The same ratio per round (from the samples both engines took in that round), to show
        # how far one run's figure moves with the machine.
        "ratio_per_round": spreads,
    }


def _summary(task: str, by_round: list[list[float]], plan: list[int]) -> dict:
    times = _flat(by_round)
    median = statistics.median(times)
    return {
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


def run(
    engines: list[str],
    rounds: int,
    rows: dict,
    pythons: dict | None = None,
    legs: int = 1,
    tasks: tuple[str, ...] = TASKS,
) -> dict:
    """`run_model` for every row of ``rows`` (`describe_rows`' output), one after the other."""
    load_before = _loadavg()
    models = {
        name: run_model(engines, rounds, row, pythons, legs, tasks) for name, row in rows.items()
    }
    return {
        "models": list(models),
        "engines": engines,
        "tasks": list(tasks),
        "rounds": rounds,
        "legs": legs,
        "iters_per_round": {t: ITERS[t] for t in tasks},
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        "rows": models,
    }


def _round_ratios(engine_rounds: dict, timm_rounds: dict) -> dict:
    """Per task: the images/s ratio to timm of each round's medians, and their range."""
    out = {}
    for task, by_round in engine_rounds.items():
        if task not in timm_rounds:
            continue
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
    """The README's performance tables: a row per model and engine, then the per-round ranges."""
    tasks = [t for t in TASKS if t in report["tasks"]]
    titles = {"forward_b1": "forward b1", "forward_b8": "forward b8", "train_b8": "train step b8"}
    head = " | ".join(f"{titles[t]} (img/s)" for t in tasks)
    rows = [
        f"| model | engine | {head} | peak memory (MB) | after import (MB) |",
        "|---|---|" + "---|" * (len(tasks) + 2),
    ]
    spread_rows = []
    for model, entry in report["rows"].items():
        ratios = entry["ratio_keras_over_timm"]
        label = f"{model} ({entry['input'].split('x')[0]} px)"
        for engine, res in entry["results"].items():
            cells = []
            for task in tasks:
                if task not in res:
                    cells.append("–")
                    continue
                cell = f"{res[task]['images_per_s']:.2f}"
                if task in ratios.get(engine, {}):
                    cell += f" ({ratios[engine][task]:.2f}x)"
                cells.append(cell)
            memory = f"{res['peak_rss_mb']:.0f}"
            if engine in ratios:
                memory += f" ({ratios[engine]['peak_rss']:.2f}x)"
            rows.append(
                f"| {label} | {engine} | "
                + " | ".join(cells)
                + f" | {memory} | {res['import_rss_mb']:.0f} |"
            )
        for engine, by_task in (entry.get("ratio_per_round") or {}).items():
            cells = [
                f"{by_task[t]['min']:.2f} – {by_task[t]['max']:.2f}" if t in by_task else "–"
                for t in tasks
            ]
            spread_rows.append(f"| {model} | {engine} | " + " | ".join(cells) + " |")
    if spread_rows:
        rows += [
            "",
            "| model | ratio to timm, per round (min – max) | "
            + " | ".join(titles[t] for t in tasks)
            + " |",
            "|---|---|" + "---|" * len(tasks),
            *spread_rows,
        ]
    return "\n".join(rows)


def write_json(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename), without
    importing keras_nfnet: its import loads a framework into the driver."""
    target = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".tmp", delete=False) as f:
        f.write(text + "\n")
    os.replace(f.name, target)


def _parse_list(parser, text: str, accepted: tuple[str, ...], flag: str) -> list[str]:
    items = [item for item in text.split(",") if item]
    unknown = [item for item in items if item not in accepted]
    if unknown or not items:
        parser.error(f"{flag}: unknown {unknown or text!r}; accepted: {', '.join(accepted)}.")
    return items


def main() -> None:
    parser = int_parser(__doc__, rounds=5, legs=1)  # --legs: see the docstring
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated keras_nfnet.list_models() rows timm also has (timm names)",
    )
    parser.add_argument(
        "--size", type=positive_int, help="input size for every model (default: each row's own)"
    )
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"any of {', '.join(TASKS)}")
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
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--describe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tasks = tuple(_parse_list(parser, args.tasks, TASKS, "--tasks"))
    if args.worker:
        worker(args.worker, json.loads(args.row), tasks)
        return
    if args.describe:
        describe_rows(args.describe.split(","))
        return
    engines = _parse_list(parser, args.engines, ENGINES, "--engines")
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
    rows = _row_settings([m for m in args.models.split(",") if m])
    if args.size:
        rows = {name: {**row, "size": args.size} for name, row in rows.items()}
    report = run(engines, args.rounds, rows, pythons, args.legs, tasks)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        write_json(args.json, text)
    if args.markdown:
        print(markdown(report))


if __name__ == "__main__":
    main()
