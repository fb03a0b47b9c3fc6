"""weights="imagenet" end to end against a loopback HTTP server: download, hash, convert, cache.

A registry entry for the reduced F-style network points at a server on 127.0.0.1 that serves a
checkpoint in the real format (timm's safetensors, written by tests/timm_reference.py, or a
DeepMind-style dill pickle). Everything else is the code users run.
"""

from __future__ import annotations

import hashlib
import os

import dill
import numpy as np
import pytest
from conftest import TINY_VARIANT

import keras_nfnet
from keras_nfnet import weights
from keras_nfnet.convert import nfnet_weight_map
from keras_nfnet.convert.nfnet_map import keras_variable
from keras_nfnet.models.nfnet import NFNet


def cache_files(tmp_path):
    folder = tmp_path / "keras" / "models"
    return sorted(os.listdir(folder)) if folder.exists() else []


def relative_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def tiny_imagenet(**kwargs):
    kwargs = {"classes": 10, "numerics": "timm", "classifier_activation": None, **kwargs}
    return NFNet(TINY_VARIANT, weights="imagenet", **kwargs)


def test_download_hash_check_conversion_and_cache(server, registry, tiny_files, tmp_path):
    data, ref = tiny_files
    sha = hashlib.sha256(data).hexdigest()
    server.files[registry(sha)] = data
    model = tiny_imagenet()
    logits = np.asarray(model(ref["x64"], training=False))
    assert relative_error(logits, ref["logits64"]) < 1e-4
    assert len(server.requests) == 1
    assert cache_files(tmp_path) == [
        "dm_nfnet_tiny.safetensors",
        f"nfnet_tiny_timm_{sha[:12]}.weights.h5",
    ]
    # A second model loads the converted file: no request, same outputs.
    again = np.asarray(tiny_imagenet()(ref["x64"], training=False))
    assert len(server.requests) == 1
    np.testing.assert_array_equal(again, logits)


def test_include_top_false_loads_all_but_the_classifier_at_another_size(
    server, registry, tiny_files, tmp_path
):
    data, _ = tiny_files
    server.files[registry()] = data
    top = tiny_imagenet()
    notop = NFNet(TINY_VARIANT, include_top=False, weights="imagenet", input_shape=(96, 80, 3))
    assert notop.output_shape == (None, 3, 3, 192)
    top_weights = {w.path: w.numpy() for w in top.weights}
    assert len(notop.weights) == len(top.weights) - 2  # all but predictions kernel and bias
    for w in notop.weights:
        np.testing.assert_array_equal(w.numpy(), top_weights[w.path], err_msg=w.path)
    assert len(server.requests) == 1  # the second model converts from the cached download
    assert "nfnet_tiny_timm_notop.weights.h5" in cache_files(tmp_path)


def test_corrupted_download_is_a_hash_error_and_caches_nothing(
    server, registry, tiny_files, tmp_path
):
    data, _ = tiny_files
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    server.files[registry(hashlib.sha256(data).hexdigest())] = bytes(corrupted)
    with pytest.raises(ValueError, match=r"SHA-256 mismatch.*nothing was cached"):
        tiny_imagenet()
    assert cache_files(tmp_path) == []


def test_hash_pinned_by_environment_variable_is_checked(
    server, registry, tiny_files, tmp_path, monkeypatch
):
    data, _ = tiny_files
    server.files[registry()] = data
    monkeypatch.setenv("KERAS_NFNET_SHA256_TINY_TIMM", "ab" * 32)
    with pytest.raises(ValueError, match="expected abab"):
        tiny_imagenet()
    assert cache_files(tmp_path) == []


def test_truncated_download_is_a_clear_error_and_caches_nothing(
    server, registry, tiny_files, tmp_path
):
    data, _ = tiny_files
    path = registry()
    server.files[path] = data
    server.short.add(path)  # the connection closes before Content-Length bytes arrived
    with pytest.raises(OSError, match=r"failed.*Nothing was cached"):
        tiny_imagenet()
    assert cache_files(tmp_path) == []


def test_truncated_file_without_a_pinned_hash_is_a_clear_error(
    server, registry, tiny_files, tmp_path
):
    data, ref = tiny_files
    path = registry()
    server.files[path] = data[: len(data) // 2]
    with pytest.raises(ValueError, match=r"not a readable safetensors file.*deleted"):
        tiny_imagenet()
    assert cache_files(tmp_path) == []
    server.files[path] = data  # the next call downloads again and succeeds
    logits = np.asarray(tiny_imagenet()(ref["x64"], training=False))
    assert relative_error(logits, ref["logits64"]) < 1e-4


def test_deepmind_source_goes_through_the_restricted_unpickler(server, registry, tmp_path):
    base = NFNet(TINY_VARIANT, classes=10)
    tree = {}
    rng = np.random.default_rng(0)
    for entry in nfnet_weight_map(TINY_VARIANT):
        shape = tuple(keras_variable(base, entry).shape)
        tree.setdefault(entry.dm_module, {})[entry.dm_leaf] = rng.normal(size=shape).astype("f4")
    data = dill.dumps(tree)
    server.files[registry(hashlib.sha256(data).hexdigest(), source="deepmind")] = data
    weights.load_pretrained_weights(base, TINY_VARIANT, source="deepmind")
    kernel = base.get_layer("stage2_block1_conv1").kernel.numpy()
    np.testing.assert_array_equal(kernel, tree["NFNet/~/nf_block_4/~/conv1"]["w"])
    assert "TINY_haiku.npz" in cache_files(tmp_path)


def test_imagenet_with_other_classes_and_top_raises_before_any_download():
    with pytest.raises(ValueError, match=r"classes=1000.*Received: classes=10"):
        keras_nfnet.NFNetF0(weights="imagenet", classes=10)


@pytest.mark.parametrize("variant", ["F7", "F0+", "F6+"])
def test_variants_without_published_weights_raise(variant):
    with pytest.raises(ValueError, match=f"No pretrained weights exist for NFNet-{variant}"):
        NFNet(variant, weights="imagenet")


def test_registry_holds_f0_to_f6_with_both_sources_and_the_known_pins():
    assert sorted(weights.PRETRAINED_WEIGHTS) == [f"F{i}" for i in range(7)]
    f3 = weights.PRETRAINED_WEIGHTS["F3"]
    assert f3.urls == {
        "timm": "https://huggingface.co/timm/dm_nfnet_f3.dm_in1k/resolve/main/model.safetensors",
        "deepmind": "https://storage.googleapis.com/dm-nfnets/F3_haiku.npz",
    }
    # The Hugging Face file pages record F0's and F4's SHA-256 and file commit (issue 17).
    f0, f4 = weights.PRETRAINED_WEIGHTS["F0"], weights.PRETRAINED_WEIGHTS["F4"]
    assert f0.urls["timm"] == (
        "https://huggingface.co/timm/dm_nfnet_f0.dm_in1k/resolve/7cb8ea6/model.safetensors"
    )
    assert f4.urls["timm"].endswith("/dm_nfnet_f4.dm_in1k/resolve/371e2d4/model.safetensors")
    assert weights.checkpoint_sha256("F0") == (
        "5e6596290aa0bce6f2b8569088b6fc6c7c25487a9c99432d356fd6f3caae548d"
    )
    assert weights.checkpoint_sha256("F4") == (
        "2a888cfb9a20e0fde412c7bd579b60d54db632450389bf059dd1cf8a83d85ff1"
    )
    unpinned = [n for n in weights.PRETRAINED_WEIGHTS if n not in ("F0", "F4")]
    assert all(weights.checkpoint_sha256(n) is None for n in unpinned)
    assert all(weights.checkpoint_sha256(n, "deepmind") is None for n in weights.PRETRAINED_WEIGHTS)


def test_pin_sha256_validates_and_pins(monkeypatch):
    monkeypatch.setitem(weights.PRETRAINED_WEIGHTS, "F1", weights.PRETRAINED_WEIGHTS["F1"])
    with pytest.raises(ValueError, match="64 hex digits"):
        weights.pin_sha256("F1", "abc")
    weights.pin_sha256("F1", "AB" * 32, source="deepmind")
    assert weights.checkpoint_sha256("F1", "deepmind") == "ab" * 32
    assert weights.checkpoint_sha256("F1", "timm") is None


def test_finetune_init_checkpoint_imagenet_copies_the_pretrained_backbone(
    server, registry, tiny_files
):
    from training.task import load_backbone

    data, _ = tiny_files
    server.files[registry()] = data
    pretrained = NFNet(TINY_VARIANT, include_top=False, weights="imagenet")
    model = NFNet(TINY_VARIANT, classes=3, classifier_activation=None)  # a new 3-class head
    head_before = model.get_layer("predictions").get_weights()
    copied = load_backbone(model, "imagenet", TINY_VARIANT, "deepmind")
    assert copied == len([layer for layer in pretrained.layers if layer.weights])
    for layer in pretrained.layers:
        for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(got, want, err_msg=layer.name)
    for got, want in zip(model.get_layer("predictions").get_weights(), head_before):
        np.testing.assert_array_equal(got, want)  # the new head keeps its initialization
    with pytest.raises(ValueError, match=r"'imagenet' or an existing \.keras"):
        load_backbone(model, "missing.weights.h5")


def test_weights_a_timm_safetensors_file_loads_into_a_deepmind_row_directly(tiny_files, tmp_path):
    # The first offline route the download error names: weights='FILE' with the hub file.
    data, ref = tiny_files
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    model = NFNet(
        TINY_VARIANT, weights=str(path), classes=10, numerics="timm", classifier_activation=None
    )
    logits = np.asarray(model(ref["x64"], training=False))
    assert relative_error(logits, ref["logits64"]) < 1e-4
