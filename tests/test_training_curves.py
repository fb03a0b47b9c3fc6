"""After a run: the progress display counts the config's loops, and ``curves.png`` is drawn from
``history.json``, whose entries are the loop logs that ``metrics.json`` also reports."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest

from training import curves, runner
from training.train import build_config

# The unfused path (conftest.py): these runs check the trainer, not the fused kernels.
pytestmark = pytest.mark.usefixtures("reference_path")

TINY = (
    "model.variant_overrides={depths: [1, 1, 1, 1], widths: [16, 32, 32, 32], "
    "stem_widths: [4, 8, 16], group_width: 8},train_data.global_batch_size=32,"
    "trainer.train_steps=10,trainer.steps_per_loop=4,trainer.validation_interval=2,"
    "trainer.verbose=2"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("curves")
    cfg = build_config("digits_nfnet", params_override=TINY)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        metrics = runner.run_experiment(cfg, str(out), "train_and_eval")
    return out, metrics, buffer.getvalue()


def test_the_progress_display_counts_the_configured_loops(run):
    _, metrics, stdout = run
    # 10 steps in loops of 4: two full loops and a last one of 2, shown as 1/3, 2/3, 3/3.
    assert re.findall(r"Epoch (\d+)/(\d+)", stdout) == [("1", "3"), ("2", "3"), ("3", "3")]
    assert metrics["step"] == 10


def test_curves_png_is_drawn_from_the_history_metrics_json_reports(run):
    out, metrics, _ = run
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    assert [(h["loop"], h["step"]) for h in history] == [(1, 4), (2, 8), (3, 10)]
    # The last loop's training logs are metrics.json's "train" exactly.
    last = {k: v for k, v in history[-1].items() if k not in ("loop", "step")}
    assert last == metrics["train"]
    # Evaluated at loops 2 and 3 (validation_interval=2, and the last loop), raw and EMA.
    assert curves.curve(history, "val_accuracy")[0] == [8, 10]
    assert curves.curve(history, "val_ema_accuracy")[0] == [8, 10]
    for key, value in metrics["eval"].items():
        assert history[-1][f"val_{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    steps, losses = curves.curve(history, "loss")
    assert steps == [4, 8, 10] and np.isfinite(losses).all()


def test_config_yaml_shows_only_what_applies_and_reads_back_to_the_run(run):
    import yaml

    from training import configs

    out, _, _ = run
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert "name" not in written["eval_data"] and "name" not in written["train_data"]
    for key in ("random_crop", "mixup_cutmix", "randaugment", "shuffle_buffer_size"):
        assert key not in written["eval_data"], key
    assert "eval_transform" not in written["train_data"]
    assert "name" not in written["model"] and written["model"]["variant"] == "F0"
    assert "tpu" not in written["runtime"]
    # The metric that picked best.keras, as metrics.json reports it.
    assert written["trainer"]["best_metric"] == "ema_accuracy"
    best = json.loads((out / "metrics.json").read_text())["best"]
    assert best["metric"] == written["trainer"]["best_metric"]
    # Read back onto the experiment, it is the run's config.
    again = configs.apply_overrides(configs.get_experiment("digits_nfnet"), written)
    run_cfg = build_config("digits_nfnet", params_override=TINY)
    assert configs.best_metric_key(again) == configs.best_metric_key(run_cfg)
    assert configs.applicable_dict(again) == configs.applicable_dict(run_cfg)
