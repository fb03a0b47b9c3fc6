"""NFNet-F builders: exact counts, the β/stochastic-depth table, parity with timm, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY_VARIANT

import keras_nfnet
from keras_nfnet.convert import load_timm_arrays, read_safetensors
from keras_nfnet.models.nfnet import (
    NFNET_VARIANTS,
    PLUS_WIDTHS,
    NFNet,
    count_nfnet_params,
    nfnet_plan,
)

# docs/nfnet_reference.md §1.2-§1.3: exact parameter counts (1000 classes).
EXACT_PARAMS = {
    "F0": 71_489_284, "F1": 132_634_256, "F2": 193_779_228, "F3": 254_924_200,
    "F4": 316_069_172, "F5": 377_214_144, "F6": 438_359_116, "F7": 499_504_088,
    "F0+": 118_824_516, "F1+": 220_357_008, "F2+": 321_889_500, "F3+": 423_421_992,
    "F4+": 524_954_484, "F5+": 626_486_976, "F6+": 728_019_468, "F7+": 829_551_960,
}  # fmt: skip


def test_every_variant_has_the_exact_parameter_count():
    assert set(NFNET_VARIANTS) == set(EXACT_PARAMS)
    for name, expected in EXACT_PARAMS.items():
        assert count_nfnet_params(name) == expected, name


@pytest.mark.parametrize(
    "builder,variant",
    [(keras_nfnet.NFNetF0, "F0"), (keras_nfnet.NFNetF1, "F1"), (keras_nfnet.NFNetF2, "F2")],
)
def test_built_models_have_the_exact_parameter_count(builder, variant):
    model = builder()
    assert model.count_params() == EXACT_PARAMS[variant]
    assert (
        len(model.weights) == 17 * sum(NFNET_VARIANTS[variant].depths) + 29
    )  # docs/checkpoints.md §1.8
    keras.backend.clear_session()


def test_plan_and_builder_agree_on_a_custom_variant():
    model = NFNet(TINY_VARIANT, classes=7)
    assert model.count_params() == count_nfnet_params(TINY_VARIANT, classes=7)
    headless = NFNet(TINY_VARIANT, include_top=False)
    assert headless.count_params() == count_nfnet_params(TINY_VARIANT, include_top=False)


# docs/nfnet_reference.md §3.3, F0 per-block values with R = 0.25.
F0_TABLE = [
    # stage, b, in, out, width, groups, stride, beta, stochdepth
    (0, 0, 128, 256, 128, 1, 1, 1.0, 0.0),
    (1, 0, 256, 512, 256, 2, 2, 0.98058, 0.02083),
    (1, 1, 512, 512, 256, 2, 1, 0.98058, 0.04167),
    (2, 0, 512, 1536, 768, 6, 2, 0.96225, 0.06250),
    (2, 1, 1536, 1536, 768, 6, 1, 0.98058, 0.08333),
    (2, 2, 1536, 1536, 768, 6, 1, 0.96225, 0.10417),
    (2, 3, 1536, 1536, 768, 6, 1, 0.94491, 0.12500),
    (2, 4, 1536, 1536, 768, 6, 1, 0.92848, 0.14583),
    (2, 5, 1536, 1536, 768, 6, 1, 0.91287, 0.16667),
    (3, 0, 1536, 1536, 768, 6, 2, 0.89803, 0.18750),
    (3, 1, 1536, 1536, 768, 6, 1, 0.98058, 0.20833),
    (3, 2, 1536, 1536, 768, 6, 1, 0.96225, 0.22917),
]


def test_f0_plan_equals_the_reference_table():
    plan = nfnet_plan("F0")
    assert len(plan) == len(F0_TABLE)
    for p, (s, b, cin, cout, width, groups, stride, beta, rate) in zip(plan, F0_TABLE):
        assert (p.stage, p.index, p.in_channels, p.out_channels) == (s, b, cin, cout)
        assert (p.width, p.groups, p.stride, p.projection) == (width, groups, stride, b == 0)
        assert p.beta == pytest.approx(beta, abs=5e-6)
        assert p.stochdepth_rate == pytest.approx(rate, abs=5e-6)


def test_f0_layers_carry_the_plan_values():
    model = keras_nfnet.NFNetF0()
    for p, (s, b, *_, beta, rate) in zip(nfnet_plan("F0"), F0_TABLE):
        assert model.get_layer(f"stage{s}_block{b}_preact").scale == pytest.approx(beta, abs=5e-6)
        assert model.get_layer(f"stage{s}_block{b}_conv1").groups == p.groups
        assert model.get_layer(f"stage{s}_block{b}_conv1").strides == (p.stride, p.stride)
        if rate == 0:
            assert f"stage{s}_block{b}_drop_path" not in [layer.name for layer in model.layers]
        else:
            assert model.get_layer(f"stage{s}_block{b}_drop_path").rate == pytest.approx(
                rate, abs=5e-6
            )
    assert model.get_layer("top_dropout").rate == 0.2
    keras.backend.clear_session()


# §3.3: transition β of every variant (stages 1-3) and the smallest within-stage β.
TRANSITION_BETAS = {
    "F0": (0.98058, 0.96225, 0.89803, 0.91287), "F1": (0.96225, 0.92848, 0.82199, 0.83333),
    "F2": (0.94491, 0.89803, 0.76249, 0.77152), "F3": (0.92848, 0.87039, 0.71429, 0.72169),
    "F4": (0.91287, 0.84515, 0.67420, 0.68041), "F5": (0.89803, 0.82199, 0.64018, 0.64550),
    "F6": (0.88388, 0.80064, 0.61085, 0.61546), "F7": (0.87039, 0.78087, 0.58521, 0.58926),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(TRANSITION_BETAS))
def test_transition_betas_of_every_variant(variant):
    plan = nfnet_plan(variant)
    *transitions, smallest = TRANSITION_BETAS[variant]
    assert [p.beta for p in plan if p.index == 0] == pytest.approx([1.0, *transitions], abs=5e-6)
    assert min(p.beta for p in plan if p.index > 0) == pytest.approx(smallest, abs=5e-6)
    plus = nfnet_plan(variant + "+")  # same depths and betas, wider stages
    assert [p.beta for p in plus] == [p.beta for p in plan]
    assert [p.out_channels for p in plus if p.index == 0] == list(PLUS_WIDTHS)
    assert [p.out_channels for p in plan if p.index == 0] == [256, 512, 1536, 1536]
    # Last block gets R(N-1)/N, not R.
    assert plan[-1].stochdepth_rate == pytest.approx(0.25 * (len(plan) - 1) / len(plan))


def assert_logits_close(got, ref, tol):
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < tol, f"max error {err:.2e} relative to the max logit"


def _timm_parity(timm_reference, config, variant, sizes, classes):
    ref_dir = timm_reference(config, sizes)
    model = NFNet(variant, classes=classes, classifier_activation=None, numerics="timm")
    load_timm_arrays(model, read_safetensors(ref_dir / "model.safetensors"), variant)
    ref = np.load(ref_dir / "reference.npz")
    for size in sizes:
        assert_logits_close(model.predict(ref[f"x{size}"], verbose=0), ref[f"logits{size}"], 1e-4)
    return model, ref


def test_tiny_nfnet_matches_timm_in_timm_numerics(timm_reference):
    # 64 px: even maps everywhere; 61 px: asymmetric SAME padding and odd pooled maps.
    model, ref = _timm_parity(timm_reference, "tiny", TINY_VARIANT, (64, 61), classes=10)
    # Parity is not vacuous: the residual branches carry signal (skip gains are non-zero) ...
    assert min(abs(float(w.numpy())) for w in model.weights if w.name == "skip_gain") > 0
    # ... and DeepMind numerics give visibly different logits for the same weights.
    dm = NFNet(TINY_VARIANT, classes=10, classifier_activation=None)
    dm.set_weights(model.get_weights())
    err = (
        np.abs(dm.predict(ref["x64"], verbose=0) - ref["logits64"]).max()
        / np.abs(ref["logits64"]).max()
    )
    assert err > 1e-4


def test_f0_matches_timm_dm_nfnet_f0_in_timm_numerics(timm_reference):
    _timm_parity(timm_reference, "f0", "F0", (192, 161), classes=1000)
    keras.backend.clear_session()


def test_model_round_trips_through_keras_file_in_safe_mode(tmp_path):
    model = NFNet(TINY_VARIANT, classes=5, input_shape=(48, 48, 3))
    rng = np.random.default_rng(1)
    for w in model.weights:  # every variable non-default, so a dropped one would show
        w.assign(np.asarray(w) + rng.normal(scale=0.1, size=w.shape))
    x = np.random.default_rng(2).normal(size=(3, 48, 48, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [layer.get_config() for layer in restored.layers] == [
        layer.get_config() for layer in model.layers
    ]


@pytest.mark.parametrize("policy,tol", [("mixed_float16", 2e-2), ("mixed_bfloat16", 6e-2)])
def test_mixed_precision_outputs_stay_close_to_float32(policy, tol, tmp_path):
    x = np.random.default_rng(3).normal(size=(4, 64, 64, 3)).astype("float32")
    reference = NFNet(TINY_VARIANT, classes=10, classifier_activation=None)
    for w in reference.weights:
        if w.name == "skip_gain":
            w.assign(1.0)
    reference.save_weights(tmp_path / "w.weights.h5")
    expected = reference.predict(x, verbose=0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = NFNet(TINY_VARIANT, classes=10, classifier_activation=None)
        mixed.load_weights(tmp_path / "w.weights.h5")
        got = mixed.predict(x, verbose=0)
        assert got.dtype == np.float32  # the classifier runs in float32 (§7)
        assert mixed.get_layer("stage1_block0_conv1").kernel.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Stated tolerance, relative to the largest logit: fp16 2e-2, bf16 6e-2 (8-bit mantissa).
    assert_logits_close(got, expected, tol)


def test_any_input_size_is_accepted_and_features_have_the_right_shape():
    model = NFNet(TINY_VARIANT, include_top=False)
    assert model.predict(np.zeros((1, 45, 70, 3), "float32"), verbose=0).shape == (1, 2, 3, 192)
    pooled = NFNet(TINY_VARIANT, include_top=False, pooling="max")
    assert pooled.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 192)


def test_softmax_head_and_input_tensor():
    inp = keras.Input((32, 32, 3))
    model = NFNet(TINY_VARIANT, input_tensor=inp, classes=4)
    y = model.predict(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), verbose=0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert model.inputs[0] is inp


def test_dropout_and_stochdepth_overrides():
    model = NFNet(TINY_VARIANT, dropout_rate=0.0, stochdepth_rate=0.5)
    names = [layer.name for layer in model.layers]
    assert "top_dropout" not in names
    assert model.get_layer("stage3_block0_drop_path").rate == pytest.approx(0.5 * 5 / 6)
    no_drop = [layer.name for layer in NFNet(TINY_VARIANT, stochdepth_rate=0.0).layers]
    assert [n for n in no_drop if n.endswith("_drop_path")] == []
    assert sum(n.endswith("_skip_gain") for n in no_drop) == sum(TINY_VARIANT.depths)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(variant="F9"), r"'F9'.*F0, F1, F2, F3, F4, F5, F6, F7, F0\+"),
        (dict(pooling="avg"), r"include_top=True, pooling='avg'"),
        (dict(include_top=False, pooling="mean"), r"pooling='mean'"),
        (dict(input_shape=(64, 64, 1), weights="w.weights.h5"), r"input_shape=\(64, 64, 1\)"),
        (dict(input_shape=(16, 64, 3)), r"at least 32.*input_shape=\(16, 64, 3\)"),
        (dict(stochdepth_rate=1.0), r"stochdepth_rate=1.0"),
        (dict(stochdepth_rate=-0.1), r"stochdepth_rate=-0.1"),
        (dict(numerics="pytorch"), r"'pytorch'.*'deepmind', 'timm'"),
        (dict(weights="no/such/file.weights.h5"), r"weights='no/such/file.weights.h5'"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_value(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.weights.h5").write_bytes(b"")
    kwargs = {"variant": TINY_VARIANT, **kwargs}
    with pytest.raises(ValueError, match=message):
        NFNet(**kwargs)


def test_preprocess_input_and_decode_predictions():
    x = np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 255.0)]).astype("float32")
    y = np.asarray(keras_nfnet.preprocess_input(x))
    np.testing.assert_allclose(
        y[0, 0, 0], -np.array([0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-6
    )
    preds = np.zeros((1, 1000), "float32")
    preds[0, [0, 945, 1]] = [0.2, 0.5, 0.3]
    decoded = keras_nfnet.decode_predictions(preds, top=3)[0]
    assert [d[1] for d in decoded] == ["bell_pepper", "goldfish", "tench"]
    with pytest.raises(ValueError, match=r"\(1, 10\)"):
        keras_nfnet.decode_predictions(np.zeros((1, 10)))
