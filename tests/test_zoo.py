"""Every timm NF row, built from its spec, against timm itself: logits, parameter counts, names.

timm builds each model in a subprocess (tests/timm_zoo_reference.py) with randomised gains,
biases and skip gains and saves it as safetensors; `create_model(name, weights=path)` loads it
through the strict converter and must give timm's logits at 64x64 and at an odd, non-square
61x75. The rows users fine-tune (and ``test_nfnet``) are compared at full size; every other row
with one block per stage, which keeps each structure (stem, block kind, attention, widths,
rounding) and is compared once per distinct structure.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from conftest import TESTS, run_python

import keras_nfnet
from keras_nfnet import weights
from keras_nfnet.architecture.rows import DM_SPECS, NF_SPECS, get_spec
from keras_nfnet.architecture.spec import count_normfree_params
from keras_nfnet.models import count_nf_regnet_params, count_nf_resnet_params, count_nfnet_params
from keras_nfnet.models.normfree import NormFreeNet

FULL = ("test_nfnet", "eca_nfnet_l0", "nfnet_l0", "nf_regnet_b1", "nf_resnet50")
REDUCED_DEPTHS = (1, 1, 1, 1)


def _structure(spec):
    return dataclasses.replace(spec, depths=REDUCED_DEPTHS, train_size=0, test_size=0, crop_pct=0.0)


def _reduced_rows() -> list[str]:
    seen, rows = set(), []
    for name, spec in NF_SPECS.items():
        key = _structure(spec)
        if name not in FULL and key not in seen:
            seen.add(key)
            rows.append(name)
    return rows


REDUCED = _reduced_rows()

# timm 1.0.31, sum(p.numel() for p in timm.create_model(name).parameters()).
TIMM_PARAMS = {
    "nfnet_l0": 35074488,
    "eca_nfnet_l0": 24143924,
    "eca_nfnet_l1": 41407728,
    "eca_nfnet_l2": 56722348,
    "eca_nfnet_l3": 72036968,
    "nf_resnet26": 15995176,
    "nf_resnet50": 25557032,
    "nf_resnet101": 44549160,
    "nf_seresnet26": 17395976,
    "nf_seresnet50": 28088024,
    "nf_seresnet101": 49326872,
    "nf_ecaresnet26": 15995220,
    "nf_ecaresnet50": 25557118,
    "nf_ecaresnet101": 44549331,
    "nf_regnet_b0": 8764288,
    "nf_regnet_b1": 10223984,
    "nf_regnet_b2": 14314608,
    "nf_regnet_b3": 18593832,
    "nf_regnet_b4": 30210816,
    "nf_regnet_b5": 49741728,
    "test_nfnet": 383080,
    "nfnet_f0": 71489272,
    "nfnet_f1": 132634232,
    "nfnet_f2": 193779192,
    "nfnet_f3": 254924152,
    "nfnet_f4": 316069112,
    "nfnet_f5": 377214072,
    "nfnet_f6": 438359032,
    "nfnet_f7": 499503992,
}


@pytest.fixture(scope="module")
def zoo_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("timm_zoo")
    entries = [*FULL, *(f"{name}:reduced" for name in REDUCED)]
    run_python([str(TESTS / "timm_zoo_reference.py"), str(out), *entries], cwd=TESTS)
    return out


def test_every_timm_row_is_in_the_table():
    assert set(NF_SPECS) == set(TIMM_PARAMS)


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_count_equals_timms(name):
    assert count_normfree_params(get_spec(name)) == TIMM_PARAMS[name]


@pytest.mark.parametrize("name", [*FULL, *REDUCED])
def test_timm_state_dict_gives_timms_logits(name, zoo_reference):
    ref = np.load(zoo_reference / f"{name}.npz")
    spec = NF_SPECS[name]
    if name in REDUCED:
        spec = dataclasses.replace(spec, depths=REDUCED_DEPTHS)
    model = NormFreeNet(
        spec, weights=str(zoo_reference / f"{name}.safetensors"), classifier_activation=None
    )
    assert model.count_params() == int(ref["params"])
    for size in ("64x64", "61x75"):
        got = np.asarray(model(ref[f"x{size}"], training=False))
        want = ref[f"logits{size}"]
        assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-4, size


def test_create_model_loads_a_timm_state_dict_by_row_name(zoo_reference):
    ref = np.load(zoo_reference / "test_nfnet.npz")
    model = keras_nfnet.create_model(
        "test_nfnet",
        weights=str(zoo_reference / "test_nfnet.safetensors"),
        classifier_activation=None,
    )
    assert isinstance(model, keras_nfnet.AGCModel)
    got = np.asarray(model(ref["x61x75"], training=False))
    np.testing.assert_allclose(got, ref["logits61x75"], rtol=1e-4, atol=1e-4 * np.abs(got).max())


def test_every_family_returns_an_agc_model():
    small = {"input_shape": (32, 32, 3), "classes": 3}
    for name in ("test_nfnet", "dm_nf_resnet26", "dm_nf_regnet_b0"):
        model = keras_nfnet.create_model(name, **small)
        assert isinstance(model, keras_nfnet.AGCModel), name


def test_list_models_pretrained_is_exactly_the_rows_with_a_url():
    with_url = {*weights.PRETRAINED_MODELS} | {
        f"dm_nfnet_{v.lower()}" for v in weights.PRETRAINED_WEIGHTS
    }
    assert set(keras_nfnet.list_models(pretrained=True)) == with_url
    assert set(keras_nfnet.list_models()) >= with_url | set(NF_SPECS)
    for name in weights.PRETRAINED_MODELS:
        assert (
            weights.PRETRAINED_MODELS[name].urls["timm"].startswith("https://huggingface.co/timm/")
        )


def test_unknown_model_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'eca_nfnet_l9'.*eca_nfnet_l0"):
        keras_nfnet.create_model("eca_nfnet_l9")


def test_imagenet_for_a_row_without_weights_is_refused_before_building():
    with pytest.raises(ValueError, match=r"No pretrained weights exist for 'eca_nfnet_l3'"):
        keras_nfnet.create_model("eca_nfnet_l3", weights="imagenet")


def test_imagenet_for_a_timm_row_downloads_checks_the_pin_and_caches(
    zoo_reference, server, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    data = (zoo_reference / "test_nfnet.safetensors").read_bytes()
    ref = np.load(zoo_reference / "test_nfnet.npz")
    sha = hashlib.sha256(data).hexdigest()
    entry = dataclasses.replace(
        weights.PRETRAINED_MODELS["test_nfnet"],
        urls={"timm": f"{server.url}/test_nfnet"},
        sha256={"timm": sha},
    )
    monkeypatch.setitem(weights.PRETRAINED_MODELS, "test_nfnet", entry)
    server.files["/test_nfnet"] = data[:-1] + bytes([data[-1] ^ 1])  # not the pinned file
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        keras_nfnet.create_model("test_nfnet", weights="imagenet")
    assert not any((tmp_path / "keras" / "models").iterdir())
    server.files["/test_nfnet"] = data
    model = keras_nfnet.create_model("test_nfnet", weights="imagenet", classifier_activation=None)
    got = np.asarray(model(ref["x64x64"], training=False))
    np.testing.assert_allclose(got, ref["logits64x64"], rtol=1e-4, atol=1e-4 * np.abs(got).max())
    assert sorted(p.name for p in (tmp_path / "keras" / "models").iterdir()) == [
        "test_nfnet.safetensors",
        f"test_nfnet_timm_{sha[:12]}.weights.h5",
    ]


def test_deepmind_rows_count_as_the_deepmind_tables():
    # The F, NF-ResNet and NF-RegNet tables' exact counts are asserted in test_nfnet.py,
    # test_nf_resnet.py and test_nf_regnet.py through these functions.
    assert count_normfree_params(DM_SPECS["dm_nfnet_f0"]) == count_nfnet_params("F0") == 71489284
    assert count_normfree_params(DM_SPECS["dm_nfnet_f7_plus"]) == count_nfnet_params("F7+")
    assert count_normfree_params(DM_SPECS["dm_nf_resnet50"]) == 25557048
    assert count_normfree_params(DM_SPECS["dm_nf_seresnet50"]) == 35635704
    assert count_normfree_params(DM_SPECS["dm_nf_regnet_b0"]) == 8595372
    for v in ("26", "101", "152", "200"):
        assert count_normfree_params(DM_SPECS[f"dm_nf_resnet{v}"]) == count_nf_resnet_params(v)
    for v in ("B1", "B4", "B8"):
        spec = DM_SPECS[f"dm_nf_regnet_{v.lower()}"]
        assert count_normfree_params(spec) == count_nf_regnet_params(v)
    model = keras_nfnet.create_model("dm_nf_regnet_b0", input_shape=(32, 32, 3))
    assert model.count_params() == 8595372


def _pinned():
    tables = {**weights.PRETRAINED_WEIGHTS, **weights.PRETRAINED_MODELS}
    return [
        (name, source)
        for name, entry in tables.items()
        for source, sha in entry.sha256.items()
        if sha is not None
    ]


def test_the_known_pins_are_the_four_public_records():
    assert sorted(_pinned()) == [
        ("F0", "timm"),
        ("F4", "timm"),
        ("eca_nfnet_l0", "timm"),
        ("nfnet_l0", "timm"),
    ]


@pytest.mark.parametrize("name, source", _pinned())
def test_every_pinned_hash_refuses_a_wrong_file_and_caches_nothing(
    name, source, server, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    key, entry = weights.registry_entry(name)
    url = entry.urls[source]
    revision = url.split("/resolve/")[1].split("/")[0]
    assert revision != "main" and len(revision) >= 7  # a pinned file commit, not a branch
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    table = (
        weights.PRETRAINED_MODELS
        if key in weights.PRETRAINED_MODELS
        else weights.PRETRAINED_WEIGHTS
    )
    # Same path and the registry's own pinned hash; only the host is the loopback server.
    moved = dataclasses.replace(entry, urls={**entry.urls, source: server.url + path})
    monkeypatch.setitem(table, key, moved)
    server.files[path] = b"not the published file"
    with pytest.raises(ValueError, match=f"SHA-256 mismatch.*expected {entry.sha256[source]}"):
        weights.download_checkpoint(name, source)
    assert not any((tmp_path / "keras" / "models").iterdir())
