"""NF-RegNets (docs/nfnet_reference.md §10)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_nfnet.layers import SkipGain, WSConv2D
from keras_nfnet.models.nf_regnet import (
    NF_REGNET_VARIANTS,
    NFRegNet,
    NFRegNetB0,
    NFRegNetVariant,
    count_nf_regnet_params,
    nf_regnet_plan,
)

# §10 table: (stage outputs, final conv width, millions of parameters with 1000 classes).
PAPER = {
    "B0": ((36, 78, 156, 330), 960, 8.60),
    "B1": ((36, 78, 156, 330), 960, 10.02),
    "B2": ((42, 84, 174, 366), 1064, 13.79),
    "B3": ((42, 96, 186, 396), 1152, 18.14),
    "B4": ((48, 108, 216, 462), 1344, 29.32),
    "B5": ((60, 126, 252, 528), 1536, 48.71),
    "B6": ((66, 138, 282, 594), 1728, 70.05),
    "B7": ((72, 156, 312, 660), 1920, 101.74),
    "B8": ((78, 174, 342, 726), 2112, 142.31),
}


@pytest.mark.parametrize("variant", list(PAPER))
def test_widths_and_parameter_counts_match_the_table(variant):
    widths, final_conv, params_m = PAPER[variant]
    row = NF_REGNET_VARIANTS[variant]
    assert row.widths == widths
    assert row.final_conv_width == final_conv
    assert round(count_nf_regnet_params(variant) / 1e6, 2) == params_m


def test_b0_built_parameter_count_matches_the_counter():
    model = NFRegNetB0()
    assert model.count_params() == count_nf_regnet_params("B0") == 8_595_372
    assert sum(isinstance(layer, SkipGain) for layer in model.layers) == 16
    # §8: NF-RegNet's classifier kernel starts at zero.
    assert not np.any(keras.ops.convert_to_numpy(model.get_layer("predictions").kernel))


def test_plan_expansion_groups_and_strides():
    plan = nf_regnet_plan("B0")
    # §10: expansion 1 for the network's first block, 2.25 after, from the *input* width,
    # rounded down to a multiple of the group size 8.
    assert (plan[0].in_channels, plan[0].width, plan[0].groups) == (36, 32, 4)
    for p in plan[1:]:
        assert p.width == int(p.in_channels * 2.25) // 8 * 8
        assert p.groups == p.width // 8
        assert p.se_hidden == int(p.width * 0.5)  # SE on the expanded width
    assert [p.stride for p in plan] == [2 if p.index == 0 else 1 for p in plan]
    # Every stage starts with stride 2, so every block 0 projects (pool + WS 1x1).
    assert [p.stage for p in plan if p.projection] == [0, 1, 2, 3]


def test_block_order_se_before_conv2():
    model = NFRegNet("B0", input_shape=(32, 32, 3), classes=5)
    se = model.get_layer("stage1_block1_se")
    assert se.gate_multiplier == 2.0
    assert se.input.shape[-1] == nf_regnet_plan("B0")[2].width
    assert model.get_layer("stage1_block1_act2").input is se.output
    assert model.get_layer("stage1_block1_preact").activation == "silu"
    conv1 = model.get_layer("stage1_block0_conv1")
    assert conv1.groups == 80 // 8 and conv1.strides == (2, 2)
    assert isinstance(model.get_layer("stem_conv"), WSConv2D)
    assert model.get_layer("stem_conv").strides == (2, 2)


def test_forward_and_safe_mode_round_trip(tmp_path):
    tiny = NFRegNetVariant(base_widths=(16, 24, 32, 48), depths=(1, 2, 1, 1))
    model = NFRegNet(tiny, input_shape=(32, 32, 3), classes=3, classifier_activation=None)
    assert model.count_params() == count_nf_regnet_params(tiny, classes=3)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    path = tmp_path / "nf_regnet.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    features = keras.Model(model.input, model.get_layer("final_act").output)
    restored_features = keras.Model(restored.input, restored.get_layer("final_act").output)
    np.testing.assert_allclose(restored_features(x), features(x), rtol=1e-5, atol=1e-6)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match=r"'B9'.*B0, B1"):
        NFRegNet("B9")
