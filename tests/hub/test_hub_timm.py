"""``from_preset("hf://timm/<repo>")``: timm's hub layout converted through the strict converter.

timm saves a seeded ``test_nfnet`` (7 classes, randomised gains, biases and skip gains) with its
own hub writer in a subprocess (tests/hub/timm_hub_reference.py); a loopback server plays the
Hugging Face host (``HF_ENDPOINT``), so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import TESTS, run_python
from hubutil import rel

from keras_nfnet.hub import NFNetBackbone, NFNetImageClassifier, NFNetImageConverter

REPO = "timm/test_nfnet.r160_in1k"  # the registry's repo of the row (weights.PRETRAINED_MODELS)
CLASSES = 7


@pytest.fixture(scope="module")
def timm_repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("timm_test_nfnet")
    run_python([str(TESTS / "hub" / "timm_hub_reference.py"), str(out), "test_nfnet", "7"])
    return out


@pytest.fixture
def hub(server, timm_repo, tmp_path, monkeypatch):
    """The loopback server as the Hugging Face host, serving the timm repo; a fresh cache."""
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for name in ("config.json", "model.safetensors"):
        server.files[f"/{REPO}/resolve/main/{name}"] = (timm_repo / name).read_bytes()
    return server


def _logits(classifier, x):
    classifier.preprocessor = None  # the reference inputs are already normalized
    return classifier.predict(x, verbose=0)


def test_hf_timm_repo_gives_timms_logits_and_timms_preprocessing(hub, timm_repo):
    classifier = NFNetImageClassifier.from_preset(f"hf://{REPO}")
    assert classifier.num_classes == CLASSES and classifier.backbone.variant == "test_nfnet"
    converter = classifier.preprocessor.image_converter
    assert type(converter) is NFNetImageConverter
    assert (converter.image_size, converter.crop_pct, converter.mean) == (
        (160, 160),
        0.95,
        (0.5, 0.5, 0.5),
    )
    reference = np.load(timm_repo / "reference.npz")
    for size in ("64x64", "61x75"):
        assert rel(_logits(classifier, reference[f"x{size}"]), reference[f"logits{size}"]) < 1e-4
    assert sorted(hub.requests) == [
        f"/{REPO}/resolve/main/config.json",
        f"/{REPO}/resolve/main/model.safetensors",
    ]
    # The built-in name is the same repo, served from the cache now.
    backbone = NFNetBackbone.from_preset("test_nfnet_imagenet")
    x = reference["x64x64"]
    np.testing.assert_allclose(
        backbone.predict(x, verbose=0), classifier.backbone.predict(x, verbose=0), atol=1e-6
    )
    assert len(hub.requests) == 2


def test_a_local_folder_in_timms_layout_loads_the_same(timm_repo):
    classifier = NFNetImageClassifier.from_preset(str(timm_repo))
    reference = np.load(timm_repo / "reference.npz")
    assert rel(_logits(classifier, reference["x64x64"]), reference["logits64x64"]) < 1e-4


def test_num_classes_makes_a_new_classifier_on_the_pretrained_backbone(timm_repo):
    pretrained = NFNetBackbone.from_preset(str(timm_repo))
    classifier = NFNetImageClassifier.from_preset(str(timm_repo), num_classes=3)
    assert classifier.output_dense.kernel.shape == (192, 3)
    for a, b in zip(classifier.backbone.get_weights(), pretrained.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_download_with_a_wrong_pinned_hash_is_refused_and_nothing_is_cached(
    hub, timm_repo, tmp_path, monkeypatch
):
    genuine = (timm_repo / "model.safetensors").read_bytes()
    monkeypatch.setenv("KERAS_NFNET_SHA256_TEST_NFNET_TIMM", hashlib.sha256(genuine).hexdigest())
    tampered = genuine[:-4] + bytes(4)
    hub.files[f"/{REPO}/resolve/main/model.safetensors"] = tampered
    with pytest.raises(ValueError, match=r"SHA-256 mismatch.*nothing was cached"):
        NFNetBackbone.from_preset(f"hf://{REPO}")
    cache = tmp_path / "keras" / "models"
    assert not (cache / "test_nfnet.safetensors").exists()
    assert [p.name for p in cache.iterdir() if p.is_file()] == []
    hub.files[f"/{REPO}/resolve/main/model.safetensors"] = genuine  # the pinned file loads
    assert NFNetBackbone.from_preset(f"hf://{REPO}").variant == "test_nfnet"


def test_a_timm_repo_of_another_architecture_is_a_clear_error(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    config = {"architecture": "resnet18", "num_classes": 1000}
    server.files["/timm/resnet18.a1_in1k/resolve/main/config.json"] = json.dumps(config).encode()
    with pytest.raises(ValueError, match=r"timm's 'resnet18', which is not a Normalizer-Free"):
        NFNetImageClassifier.from_preset("hf://timm/resnet18.a1_in1k")
    assert server.requests == ["/timm/resnet18.a1_in1k/resolve/main/config.json"]


def test_a_config_that_is_not_json_is_an_error_and_leaves_the_cache(hub, tmp_path):
    hub.files[f"/{REPO}/resolve/main/config.json"] = b"<html>rate limited</html>"
    with pytest.raises(ValueError, match=r"not a JSON config.*deleted from the cache"):
        NFNetBackbone.from_preset(f"hf://{REPO}")
    cached = tmp_path / "keras" / "models" / "hf" / REPO / "main" / "config.json"
    assert not cached.exists()
