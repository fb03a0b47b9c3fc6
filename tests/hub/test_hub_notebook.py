"""colab/finetune_keras_hub.ipynb runs end to end in smoke mode, headless, with the network
blocked, on a tiny synthetic image folder (the machinery of tests/test_notebooks.py)."""

from __future__ import annotations

import json
import re

import hubutil  # noqa: F401  (the test set-up of tests/hub; its KERAS_NFNET_FUSION reaches the kernel)
import nbformat
import numpy as np
import tensorflow as tf
from test_notebooks import (
    COLAB,
    assigned_names,
    execute,
    has_png,
    parameters_cell,
    stdout_of,
    with_smoke_parameters,
)

NAME = "finetune_keras_hub.ipynb"
CLASSES = ("blue", "red")
SMOKE_PARAMETERS = {
    "SMOKE": True,
    "INSTALL": False,
    "PRESET": None,
    "VARIANT": "test_nfnet",
    "IMAGE_SIZE": 64,
    "LOAD_SIZE": 72,
    "DROPOUT": 0.0,
    "BATCH_SIZE": 8,
    "EPOCHS": 2,
    "LEARNING_RATE": 0.05,
    "AGC_CLIPPING": 0.01,
    "SEGMENTATION_STEPS": 3,
}


def _image_folder(root, per_class=12):
    """Noisy images, bluish or reddish, of assorted sizes: one sub-folder per class."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(60, 100, 2)
            image = rng.integers(0, 120, (h, w, 3))
            image[..., 2 - 2 * index] += 120  # blue: channel 2, red: channel 0
            png = tf.io.encode_png(image.astype("uint8"))
            (root / name / f"{i}.png").write_bytes(png.numpy())
    return root


def _notebook():
    return nbformat.read(COLAB / NAME, as_version=4)


def test_notebook_is_stored_clean_with_a_parameters_cell():
    nb = _notebook()
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    index = parameters_cell(nb)
    defined = assigned_names(nb.cells[index].source)
    assert set(SMOKE_PARAMETERS) | {"IMAGE_DIR", "OUTPUT_DIR"} <= defined
    install = next(cell for cell in nb.cells[index + 1 :] if cell.cell_type == "code")
    assert "%pip install" in install.source and "not SMOKE" in install.source
    assert "keras-nfnet[hub]" in nb.cells[index].source


def test_finetune_keras_hub_notebook_smoke(tmp_path):
    images = _image_folder(tmp_path / "images")
    out = tmp_path / "out"
    params = {**SMOKE_PARAMETERS, "IMAGE_DIR": str(images), "OUTPUT_DIR": str(out)}
    nb = execute(with_smoke_parameters(_notebook(), params), tmp_path / "run")
    results = json.loads((out / "results.json").read_text())
    printed = re.search(r"FINETUNE_ACCURACY=([0-9.]+)", stdout_of(nb))
    assert printed and float(printed[1]) == round(results["accuracy"], 4)
    assert results["variant"] == "test_nfnet" and results["num_classes"] == 2
    assert all(np.isfinite(results["train_loss"])) and len(results["train_loss"]) == 2
    # Blue against red from random weights: two short epochs learn it (loss 0.43 -> 0.007 here).
    assert results["train_loss"][1] < 0.5 * results["train_loss"][0]
    assert results["accuracy"] > 0.5, results
    assert all(0.0 < f <= 1.0 for f in results["agc_clip_fraction"])  # AGC ran in fit
    assert results["reload_class"] == "NFNetImageClassifier"
    assert results["reload_max_abs_diff"] == 0.0 and "RELOAD_IDENTICAL=True" in stdout_of(nb)
    assert results["segmentation_output_shape"] == [1, 64, 64, 2]
    assert np.isfinite(results["segmentation_loss"]).all()
    assert (out / "preset" / "task.json").exists()
    for figure in ("training_curves.png", "predictions.png", "segmentation.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert has_png(nb) >= 3
