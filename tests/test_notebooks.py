"""The colab/ notebooks run end to end, headless, in smoke mode, with the network blocked (issue 7).

Each notebook has one code cell tagged ``parameters`` (papermill-style). The tests append the
smoke-mode values of `SMOKE_PARAMETERS` to that cell, insert a start-up cell that checks the
network guard, and execute the notebook with nbclient in a fresh kernel whose working directory
is the repository and whose environment has ``KERAS_BACKEND=tensorflow`` and
``KERAS_NFNET_FUSION=0`` (the notebooks are the point, not the fused kernels, whose XLA
compilations would be much of a smoke run's time; tests/test_fast_paths.py checks them). A failing
cell raises `nbclient.exceptions.CellExecutionError`, which fails the test.

Network: every Python process of the run (the kernel and what it launches) loads
``tests/notebook_guard/sitecustomize.py`` through ``PYTHONPATH``; it blocks non-loopback sockets
and name lookups and logs each attempt, and the proxy variables point at a closed loopback port
(also blocked and logged). A test fails when the log is not empty, even if the notebook swallowed
the error. `test_network_guard_fails_a_notebook_that_downloads` shows that the guard catches a
download.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
GUARD_DIR = REPO / "tests" / "notebook_guard"
NOTEBOOKS = ("finetune_nfnet.ipynb", "signal_propagation.ipynb", "train_nfnet_tpu.ipynb")
CELL_TIMEOUT_S = 300

# The reduced NFNet of the digits_nfnet experiment (training/experiments.py).
SMOKE_NFNET = {
    "depths": (1, 1, 1, 1),
    "widths": (32, 64, 64, 64),
    "stem_widths": (8, 16, 32),
    "group_width": 16,
}
TRAIN_STEPS = 4  # the TPU notebook's smoke run: one loop of four steps
SMOKE_PARAMETERS = {
    "finetune_nfnet.ipynb": {
        "SMOKE": True,
        "INSTALL": False,
        "DATASET": "digits",
        "TRAIN_SPLIT": "train",
        "EVAL_SPLIT": "test",
        "AUGMENT": False,
        "EVAL_TRANSFORM": "resize",
        "VARIANT_OVERRIDES": SMOKE_NFNET,
        "WEIGHTS": None,
        "IMAGE_SIZE": 32,
        "DROPOUT_RATE": 0.0,
        "STOCHDEPTH_RATE": 0.0,
        "BATCH_SIZE": 32,
        "EPOCHS": 1,
        "STEPS_PER_EPOCH": None,  # one epoch: 44 steps
        "BASE_LEARNING_RATE": 1.6,  # from scratch: a larger LR and the from-scratch AGC lambda
        "AGC_CLIPPING": 0.01,
        "WARMUP_EPOCHS": 0.2,
    },
    "signal_propagation.ipynb": {
        "SMOKE": True,
        "INSTALL": False,
        "VARIANT_OVERRIDES": {"width": 1},  # ResNet-50 depths, a quarter of the widths
        "IMAGE_SIZE": 64,
        "BATCH_SIZE": 8,
    },
    "train_nfnet_tpu.ipynb": {
        "SMOKE": True,
        "INSTALL": False,
        "GCS_BUCKET": None,
        "EXPERIMENT": "digits_nfnet",
        "STRATEGY": "default",
        "TPU": None,
        "PARAMS_OVERRIDE": (
            f"trainer.train_steps={TRAIN_STEPS},trainer.steps_per_loop={TRAIN_STEPS},"
            "trainer.verbose=2,eval_data.global_batch_size=360"
        ),
    },
}
STARTUP_CELL = """\
# Injected by tests/test_notebooks.py: the network guard must be active in this kernel.
import os

import notebook_network_guard

notebook_network_guard.install()  # a no-op when sitecustomize already did it
assert notebook_network_guard.installed()
assert os.environ["KERAS_BACKEND"] == "tensorflow"
"""


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(COLAB / name, as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> int:
    tagged = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(tagged) == 1, f"expected one code cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def assigned_names(source: str) -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", source, flags=re.MULTILINE))


def with_smoke_parameters(nb: nbformat.NotebookNode, params: dict) -> nbformat.NotebookNode:
    """Append ``NAME = repr(value)`` lines to the parameters cell; insert the start-up cell."""
    cell = nb.cells[parameters_cell(nb)]
    lines = [f"{key} = {value!r}" for key, value in params.items()]
    cell.source += "\n\n# Smoke-mode parameters injected by tests/test_notebooks.py\n"
    cell.source += "\n".join(lines) + "\n"
    nb.cells.insert(0, nbformat.v4.new_code_cell(STARTUP_CELL))
    return nb


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_env(network_log: Path) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{closed_loopback_port()}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        {
            "KERAS_BACKEND": "tensorflow",
            "KERAS_NFNET_FUSION": "0",
            "PYTHONPATH": os.pathsep.join([str(GUARD_DIR), str(REPO)]),
            "NOTEBOOK_NETWORK_LOG": str(network_log),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "CUDA_VISIBLE_DEVICES": "",
            "no_proxy": "",
            "NO_PROXY": "",
        }
    )
    for key in ("http_proxy", "https_proxy", "all_proxy"):
        env[key] = env[key.upper()] = proxy
    return env


def kernel_manager(tmp_path: Path) -> AsyncKernelManager:
    """A kernel running this interpreter (the venv with keras_nfnet), whatever kernel specs the
    machine has installed under the name ``python3``."""
    kernels = tmp_path / "kernels"
    spec = kernels / "keras-nfnet-test"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "keras-nfnet tests", "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    return AsyncKernelManager(kernel_name="keras-nfnet-test", kernel_spec_manager=specs)


def execute(nb: nbformat.NotebookNode, tmp_path: Path) -> nbformat.NotebookNode:
    """Run ``nb`` in a fresh kernel (cwd: the repository); return it with its outputs."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    network_log = tmp_path / "network_attempts.log"
    client = NotebookClient(
        nb,
        km=kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(REPO)}},
    )
    try:
        client.execute(env=kernel_env(network_log))
    finally:
        attempts = network_log.read_text() if network_log.exists() else ""
    assert not attempts, f"the notebook tried to reach the network:\n{attempts[:4000]}"
    return nb


def run_smoke(name: str, tmp_path: Path, **extra) -> nbformat.NotebookNode:
    params = {**SMOKE_PARAMETERS[name], **extra}
    return execute(with_smoke_parameters(load(name), params), tmp_path)


def stdout_of(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )


def has_png(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean_with_a_parameters_cell(name):
    nb = load(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), (
        "store notebooks with outputs cleared"
    )
    index = parameters_cell(nb)
    defined = assigned_names(nb.cells[index].source)
    # Every smoke parameter overrides a real parameter (a renamed one would be silently ignored).
    assert set(SMOKE_PARAMETERS[name]) <= defined, set(SMOKE_PARAMETERS[name]) - defined
    # The first code cell after the parameters installs the package, and not in smoke mode.
    install = next(cell for cell in nb.cells[index + 1 :] if cell.cell_type == "code")
    assert "%pip install" in install.source and "not SMOKE" in install.source
    assert nb.metadata.kernelspec.name == "python3"


def test_finetune_notebook_smoke(tmp_path):
    out = tmp_path / "finetune"
    nb = run_smoke("finetune_nfnet.ipynb", tmp_path, OUTPUT_DIR=str(out))
    summary = json.loads((out / "results.json").read_text())
    printed = re.search(r"FINETUNE_ACCURACY=([0-9.]+)", stdout_of(nb))
    assert printed and float(printed[1]) == pytest.approx(summary["accuracy"], abs=1e-4)
    assert summary["num_classes"] == 10 and summary["eval_examples"] == 360
    assert summary["device"] == "cpu" and summary["precision"] == "float32"
    # One short epoch from random weights on the digits: far above chance (10 %).
    assert summary["steps_per_epoch"] == 1437 // 32
    assert summary["accuracy"] > 3 * summary["chance"], summary
    # The .keras file reloaded with safe_mode=True predicts bit for bit the same.
    assert summary["reload_identical"] is True and summary["reload_max_abs_diff"] == 0.0
    assert "RELOAD_IDENTICAL=True" in stdout_of(nb)
    assert (out / "nfnet_finetuned.keras").stat().st_size > 0
    for figure in ("training_curves.png", "predictions.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert has_png(nb) >= 2  # the curves and the image grid are displayed inline


def test_signal_propagation_notebook_smoke(tmp_path):
    out = tmp_path / "spp"
    nb = run_smoke("signal_propagation.ipynb", tmp_path, OUTPUT_DIR=str(out))
    assert (out / "spp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert has_png(nb) >= 1
    models = ("resnetv2_bn", "resnetv2_plain", "nf_resnet")
    statistics = ("avg_sq_mean", "avg_var", "res_avg_var")
    with np.load(out / "spp.npz") as data:
        assert set(data.files) == {f"{m}/{s}" for m in models for s in statistics}
        stats = {key: data[key] for key in data.files}
    blocks = 16  # ResNet-50: 3 + 4 + 6 + 3
    for m in models:
        assert stats[f"{m}/avg_var"].shape == (blocks + 1,)
        assert stats[f"{m}/avg_sq_mean"].shape == (blocks + 1,)
        assert stats[f"{m}/res_avg_var"].shape == (blocks,)
    # §12.2: without normalization the variance explodes (about 2**l); BN and NF keep it small.
    bn, plain, nf = (stats[f"{m}/avg_var"][-1] for m in models)
    assert plain > 100 * bn and plain > 100 * nf, (plain, bn, nf)
    # §12.2: NF residual branches have variance about 1 at every block (beta, Scaled WS, gamma;
    # 0.43-0.94 here: the last stage is 2x2 pixels at 64 px, where zero padding loses variance),
    # and no mean shift, unlike the unnormalized network.
    res = stats["nf_resnet/res_avg_var"]
    assert np.all((res > 0.3) & (res < 1.5)), res
    # Block outputs (index 0 is the stem's max-pool, whose mean is positive in every model).
    assert stats["nf_resnet/avg_sq_mean"][1:].max() < 0.1
    assert stats["resnetv2_plain/avg_sq_mean"][1:].max() > 100


def test_train_tpu_notebook_smoke(tmp_path):
    model_dir = tmp_path / "run"
    nb = run_smoke("train_nfnet_tpu.ipynb", tmp_path, MODEL_DIR=str(model_dir))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["step"] == TRAIN_STEPS and metrics["experiment_steps"] == TRAIN_STEPS
    assert 0.0 <= metrics["eval"]["accuracy"] <= 1.0
    assert list((model_dir / "logs").rglob("events.out.tfevents*"))
    assert (model_dir / "final.keras").stat().st_size > 0
    assert "--experiment=digits_nfnet" in stdout_of(nb) and "--strategy=default" in stdout_of(nb)


def downloading_notebook(*sources: str) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return with_smoke_parameters(nb, {"SMOKE": True})


def test_network_guard_fails_a_notebook_that_downloads(tmp_path):
    """A download attempt fails the test, even when the notebook catches the error."""
    caught = downloading_notebook(
        "import urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen('https://storage.googleapis.com/x', timeout=5)\n"
        "except OSError as err:\n"
        "    print('caught', err)"
    )
    with pytest.raises(AssertionError, match="tried to reach the network"):
        execute(caught, tmp_path / "caught")
    assert "blocked" in (tmp_path / "caught" / "network_attempts.log").read_text()
    # Uncaught, the download fails its cell (and the attempt is logged).
    uncaught = downloading_notebook(
        "import urllib.request\nurllib.request.urlretrieve('https://example.com/data.npz', 'x')"
    )
    with pytest.raises(CellExecutionError):
        execute(uncaught, tmp_path / "uncaught")
    assert "blocked" in (tmp_path / "uncaught" / "network_attempts.log").read_text()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
