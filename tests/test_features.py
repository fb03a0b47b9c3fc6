"""Feature pyramids: ``features_only=True`` returns ``{"P1": ..., "P5": ...}``, tapped where timm
taps them.

timm builds seeded models in one subprocess (tests/timm_features_reference.py), saves their full
state dicts and records the outputs of its own ``features_only=True`` networks; the Keras models
load those files with ``weights=path`` and must give the same five maps. One model per family,
made small with spec overrides (timm overlays the same keywords on its config), is built once per
module and shared by the shape, parity and save/load tests. The module runs the layers' unfused
path (`reference_path`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import keras
import numpy as np
import pytest
from conftest import TESTS, run_python
from tiny import TINY_VARIANT

import keras_nfnet
from keras_nfnet import weights
from keras_nfnet.architecture.rows import NF_RESNET_VARIANTS, NF_SPECS, get_spec
from keras_nfnet.convert.normfree_map import normfree_weight_map
from keras_nfnet.models.nf_resnet import NFResNet
from keras_nfnet.models.nfnet import NFNet

LEVELS = ("P1", "P2", "P3", "P4", "P5")
SMALL_ECA = {
    "depths": (1, 1, 1, 1),
    "channels": (64, 128, 256, 256),
    "stem_channels": 64,
    "group_size": 16,
    "head_channels": 384,
}
SMALL_RESNET = {"depths": (1, 1, 1, 1), "channels": (64, 128, 256, 512), "stem_channels": 32}
REDUCED = {"depths": (1, 1, 1, 1)}

# key: (timm row, our row, spec overrides); timm overlays the same overrides on its config
# (`_timm_kwargs`). "dm_tiny" is DeepMind's F layout, tests/tiny.py, timm's config of it in
# tests/timm_reference.py.
PARITY = {
    "dm_tiny": ("tiny", None, {}),
    "test_nfnet": ("test_nfnet", "test_nfnet", {}),
    "eca_nfnet_l0_small": ("eca_nfnet_l0", "eca_nfnet_l0", SMALL_ECA),
    "nf_resnet50_small": ("nf_resnet50", "nf_resnet50", SMALL_RESNET),
    "nf_regnet_b0_reduced": ("nf_regnet_b0", "nf_regnet_b0", REDUCED),
}
# timm's NfCfg names for the NFSpec fields of different names.
TIMM_FIELDS = {"stem_channels": "stem_chs", "head_channels": "num_features"}
TIMM_ROWS = [*NF_SPECS, *(f"dm_nfnet_f{i}" for i in range(7))]  # the rows timm has
DM_SE_RESNET = dataclasses.replace(NF_RESNET_VARIANTS["26"], width=1, depths=(1, 1, 1, 1))


# The unfused path (conftest.py): these tests check feature maps, not the fused kernels.
pytestmark = pytest.mark.usefixtures("reference_path")


def _timm_kwargs(overrides: dict) -> dict:
    return {TIMM_FIELDS.get(field, field): value for field, value in overrides.items()}


@pytest.fixture(scope="module")
def timm_features(tmp_path_factory):
    out = tmp_path_factory.mktemp("timm_features")
    request = {
        "models": {
            key: {"model": timm_row, "kwargs": _timm_kwargs(overrides)}
            for key, (timm_row, _, overrides) in PARITY.items()
        },
        "info": TIMM_ROWS,
    }
    run_python(
        [str(TESTS / "timm_features_reference.py"), str(out), json.dumps(request)], cwd=TESTS
    )
    return out


def _build(key: str, weights_path=None):
    """The Keras side of ``PARITY[key]`` as a features model, and its `feature_info`."""
    if key == "dm_tiny":
        spec = TINY_VARIANT.spec("timm")
        return NFNet(TINY_VARIANT, "timm", weights=weights_path, features_only=True), spec
    _, name, overrides = PARITY[key]
    model = keras_nfnet.create_model(
        name, weights=weights_path, features_only=True, input_shape=(None, None, 3), **overrides
    )
    return model, dataclasses.replace(get_spec(name), **overrides)


@pytest.fixture(scope="module")
def pyramids(timm_features):
    """Every family's features model with timm's seeded weights, and its spec."""
    built = {key: _build(key, str(timm_features / f"{key}.safetensors")) for key in PARITY}
    built["dm_nf_seresnet_tiny"] = (
        NFResNet(DM_SE_RESNET, use_se=True, features_only=True),
        DM_SE_RESNET.spec(use_se=True),
    )
    built["nf_seresnet26_small"] = (
        keras_nfnet.create_model("nf_seresnet26", features_only=True, **SMALL_RESNET),
        dataclasses.replace(get_spec("nf_seresnet26"), **SMALL_RESNET),
    )
    return built


FAMILIES = [*PARITY, "dm_nf_seresnet_tiny", "nf_seresnet26_small"]


@pytest.mark.parametrize("size", [(128, 128), (97, 131)])
@pytest.mark.parametrize("key", FAMILIES)
def test_level_n_is_two_to_the_n_smaller_rounded_up(key, size, pyramids):
    model, spec = pyramids[key]
    h, w = size
    maps = model(np.zeros((1, h, w, 3), "float32"), training=False)
    assert sorted(maps) == list(LEVELS)
    for info in keras_nfnet.feature_info(spec):
        r = info["reduction"]
        want = (1, math.ceil(h / r), math.ceil(w / r), info["channels"])
        assert tuple(maps[info["level"]].shape) == want, (info["level"], key)


@pytest.mark.parametrize("key", list(PARITY))
def test_features_equal_timms_features_only_outputs(key, pyramids, timm_features):
    model, _ = pyramids[key]
    ref = np.load(timm_features / f"{key}.npz")
    for size in ("64x64", "61x75"):
        maps = model(ref[f"x{size}"], training=False)
        for level in LEVELS:
            want = ref[f"{level}_{size}"]
            got = np.asarray(maps[level])
            assert got.shape == want.shape, (level, size)
            assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-4, (level, size)


def test_features_are_the_full_models_activations_with_its_weights(tmp_path):
    full = keras_nfnet.create_model("test_nfnet", input_shape=(None, None, 3), classes=7)
    path = str(tmp_path / "full.weights.h5")
    full.save_weights(path)  # with its classifier, which the features model does not use
    features = keras_nfnet.create_model("test_nfnet", features_only=True, weights=path)
    taps = keras_nfnet.feature_info("test_nfnet")
    inner = keras.Model(full.input, [full.get_layer(t["layer"]).output for t in taps])
    x = np.random.default_rng(2).standard_normal((2, 61, 75, 3)).astype("float32")
    want = inner(x, training=False)
    got = features(x, training=False)
    for t, w in zip(taps, want):
        np.testing.assert_allclose(np.asarray(got[t["level"]]), np.asarray(w), rtol=0, atol=1e-6)


def test_a_features_model_saves_and_loads_in_safe_mode(pyramids, tmp_path):
    model, _ = pyramids["test_nfnet"]
    path = str(tmp_path / "pyramid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, keras_nfnet.AGCModel)
    x = np.random.default_rng(3).standard_normal((2, 64, 48, 3)).astype("float32")
    want, got = model(x, training=False), loaded(x, training=False)
    assert sorted(got) == list(LEVELS)
    for level in LEVELS:
        np.testing.assert_array_equal(np.asarray(got[level]), np.asarray(want[level]))


def test_a_features_model_trains_with_agc():
    model = keras_nfnet.create_model(
        "test_nfnet", depths=(1, 1, 1), channels=(32, 64, 96), features_only=True
    )
    x = np.random.default_rng(4).standard_normal((2, 32, 32, 3)).astype("float32")
    targets = {k: np.zeros_like(np.asarray(v)) for k, v in model(x, training=False).items()}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=True)
    before = model.get_layer("stem_conv0").kernel.numpy().copy()
    model.train_on_batch(x, targets)
    assert np.max(np.abs(model.get_layer("stem_conv0").kernel.numpy() - before)) > 1e-5


def test_imagenet_weights_fill_a_features_model_through_the_notop_cache(
    timm_features, server, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    data = (timm_features / "test_nfnet.safetensors").read_bytes()
    entry = dataclasses.replace(
        weights.PRETRAINED_MODELS["test_nfnet"],
        urls={"timm": f"{server.url}/test_nfnet"},
        sha256={"timm": hashlib.sha256(data).hexdigest()},
    )
    monkeypatch.setitem(weights.PRETRAINED_MODELS, "test_nfnet", entry)
    server.files["/test_nfnet"] = data
    # A headless model downloads and writes the "_notop" cache; the features model reads it.
    keras_nfnet.create_model("test_nfnet", weights="imagenet", include_top=False)
    del server.files["/test_nfnet"]
    model = keras_nfnet.create_model("test_nfnet", weights="imagenet", features_only=True)
    ref = np.load(timm_features / "test_nfnet.npz")
    maps = model(ref["x61x75"], training=False)
    for level in LEVELS:
        want = ref[f"{level}_61x75"]
        assert np.max(np.abs(np.asarray(maps[level]) - want)) / np.max(np.abs(want)) < 1e-4


@pytest.mark.parametrize("name", keras_nfnet.list_models())
def test_feature_info_channels_are_the_weights_the_taps_come_from(name):
    info = keras_nfnet.feature_info(name)
    assert [i["level"] for i in info] == list(LEVELS)
    assert [i["reduction"] for i in info] == [2, 4, 8, 16, 32]
    # The converter's table holds every Keras weight's shape (test_zoo.py loads it into the
    # real models): a tap's channels are those of the conv that produces it.
    entries = normfree_weight_map(get_spec(name))
    kernels = {e.layer: e.shape[-1] for e in entries if e.attr == "kernel"}
    for i in info:
        assert kernels[_producer(i["layer"])] == i["channels"], (name, i)


def _producer(layer: str) -> str:
    """The conv whose output a tap is: itself, or a block merge's residual branch (``conv2``)."""
    for merge in ("_add", "_skip_gain"):
        if layer.endswith(merge):
            return layer.removesuffix(merge) + "_conv2"
    return layer


@pytest.mark.parametrize("name", TIMM_ROWS)
def test_feature_info_is_timms(name, timm_features):
    timm_info = json.loads((timm_features / "feature_info.json").read_text())[name]
    ours = [
        {"channels": i["channels"], "reduction": i["reduction"], "module": i["timm_module"]}
        for i in keras_nfnet.feature_info(name)
    ]
    assert ours == timm_info


def test_feature_info_of_the_rows_users_fine_tune():
    def levels(name):
        info = keras_nfnet.feature_info(name)
        return [(i["channels"], i["reduction"], i["timm_module"]) for i in info]

    stages = ["stages.0", "stages.1", "stages.2"]
    assert levels("dm_nfnet_f0") == list(
        zip((64, 256, 512, 1536, 3072), (2, 4, 8, 16, 32), ["stem.conv3", *stages, "final_conv"])
    )
    assert [c for c, _, _ in levels("eca_nfnet_l0")] == [64, 256, 512, 1536, 2304]
    assert levels("nf_resnet50") == list(
        zip((64, 256, 512, 1024, 2048), (2, 4, 8, 16, 32), ["stem.conv", *stages, "stages.3"])
    )
    assert [c for c, _, _ in levels("nf_regnet_b1")] == [40, 40, 80, 160, 960]
    assert [c for c, _, _ in levels("test_nfnet")] == [64, 32, 64, 96, 192]
    assert keras_nfnet.feature_info("dm_nf_resnet50")[-1]["layer"] == "stage3_block2_skip_gain"


def test_spec_overrides_change_the_pyramid_as_they_change_the_model():
    info = keras_nfnet.feature_info("test_nfnet", depths=(1, 1, 1), channels=(32, 64, 96))
    assert [(i["level"], i["channels"]) for i in info] == [
        ("P1", 64),
        ("P2", 32),
        ("P3", 64),
        ("P4", 192),
    ]


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: keras_nfnet.create_model("test_nfnet", features_only=True, include_top=True),
            r"include_top must be False or left unset\. Received: include_top=True",
        ),
        (
            lambda: keras_nfnet.NFNetF0(True, features_only=True),
            r"include_top must be False or left unset",
        ),
        (
            lambda: keras_nfnet.create_model("nf_resnet50", features_only=True, pooling="avg"),
            r"pooling must be None\. Received: pooling='avg', features_only=True",
        ),
        (
            lambda: keras_nfnet.NFRegNetB0(include_top=False, pooling="max", features_only=True),
            r"pooling must be None",
        ),
        (
            lambda: keras_nfnet.create_model("test_nfnet", features_only="yes"),
            r"features_only must be True or False\. Received: features_only='yes'",
        ),
    ],
)
def test_a_head_argument_with_features_only_is_refused_before_building(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_feature_info_refuses_unknown_names_and_keywords():
    with pytest.raises(ValueError, match=r"Unknown model 'nfnet_x0'"):
        keras_nfnet.feature_info("nfnet_x0")
    with pytest.raises(TypeError, match=r"Received: pooling; accepted: depths"):
        keras_nfnet.feature_info("test_nfnet", pooling="avg")
