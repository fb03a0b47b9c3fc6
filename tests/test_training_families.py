"""The trainer builds any `create_model` row from ``--params_override``: a reduced NF-ResNet, an
NF-RegNet and an ECA-NFNet-L each train a few steps on the embedded digits, are interrupted
after a checkpoint, resume, and end with the weights of an uninterrupted run.

The interruption is an exception raised inside the loop right after a checkpoint was written,
in process (a real SIGKILL of a subprocess is `test_training_runs.py`'s
``test_resume_after_sigkill_matches_an_uninterrupted_run``); what resuming reads is the same:
``checkpoint.npz`` and nothing else.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_nfnet import AGCModel
from training import runner
from training.train import build_config

# The unfused path (conftest.py): these runs check the trainer and resuming, not the fused
# kernels; each run is spared their XLA compilations.
pytestmark = pytest.mark.usefixtures("reference_path")

SMALL = (
    "trainer.train_steps=6,trainer.steps_per_loop=2,trainer.verbose=0,"
    "train_data.global_batch_size=16,eval_data.global_batch_size=120,"
    "trainer.validation_interval=3"
)
FAMILIES = {
    # DeepMind's NF-ResNet (strided shortcuts, skip gains, ReLU), four stages of one block.
    "dm_nf_resnet26": "model.variant_overrides={depths: [1, 1, 1, 1], "
    "channels: [32, 64, 64, 64], stem_channels: [16]}",
    # timm's NF-RegNet (inverted bottleneck, SE in the middle, SiLU, symmetric padding).
    "nf_regnet_b0": "model.variant_overrides={depths: [1, 1, 1, 1], "
    "channels: [16, 24, 32, 40], head_channels: 64}",
    # timm's ECA-NFNet-L (deep stem, extra conv, ECA, SiLU, gamma folded into the convs).
    "eca_nfnet_l0": "model.variant_overrides={depths: [1, 1, 1, 1], "
    "channels: [32, 64, 64, 64], group_size: 8, stem_channels: 32, head_channels: 96}",
}


class SimulatedKillError(Exception):
    pass


def _config(name):
    return build_config(
        "digits_nfnet", params_override=f"model.name={name},{FAMILIES[name]},{SMALL}"
    )


def _final_weights(model_dir):
    model = keras.saving.load_model(model_dir / "final.keras", safe_mode=True)
    return model, [np.asarray(w) for w in model.get_weights()]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_row_trains_resumes_and_matches_an_uninterrupted_run(name, tmp_path, monkeypatch):
    straight = runner.run_experiment(_config(name), str(tmp_path / "straight"), "train")
    assert straight["step"] == 6 and np.isfinite(straight["train"]["loss"])
    model, expected = _final_weights(tmp_path / "straight")
    assert isinstance(model, AGCModel) and model.name == name
    config = (tmp_path / "straight" / "config.yaml").read_text()
    assert f"name: {name}" in config

    write = runner.Runner.write_checkpoint

    def write_then_die(self):
        write(self)
        if self.state["loop"] == 2:  # 4 of 6 steps done and saved
            raise SimulatedKillError

    monkeypatch.setattr(runner.Runner, "write_checkpoint", write_then_die)
    with pytest.raises(SimulatedKillError):
        runner.run_experiment(_config(name), str(tmp_path / "resumed"), "train")
    assert not (tmp_path / "resumed" / "final.keras").exists()
    monkeypatch.setattr(runner.Runner, "write_checkpoint", write)
    resumed = runner.run_experiment(_config(name), str(tmp_path / "resumed"), "train")
    assert resumed["restored"] and resumed["step"] == 6
    _, got = _final_weights(tmp_path / "resumed")
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["step"] == 6


def test_an_override_that_is_not_a_field_of_the_row_is_named(tmp_path):
    cfg = build_config(
        "digits_nfnet", params_override=f"model.name=nf_regnet_b0,{SMALL}"
    )  # keeps the experiment's NFNetVariant overrides (widths ...), not NFSpec fields
    with pytest.raises(ValueError, match=r"Unknown model.variant_overrides key\(s\).*nf_regnet_b0"):
        runner.run_experiment(cfg, str(tmp_path), "train")
