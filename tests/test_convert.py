"""Checkpoint converters: timm safetensors and DeepMind pickles -> Keras (docs/checkpoints.md
§1-§3)."""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools

import dill
import numpy as np
import pytest
from conftest import TINY_VARIANT, run_python

from keras_nfnet.convert import (
    RestrictedUnpickler,
    load_deepmind_arrays,
    nfnet_weight_map,
    read_deepmind,
)
from keras_nfnet.convert.__main__ import convert_checkpoint
from keras_nfnet.convert.__main__ import main as convert_main
from keras_nfnet.convert.deepmind import ALLOWED_GLOBALS
from keras_nfnet.convert.nfnet_map import keras_variable
from keras_nfnet.models.nfnet import NFNet


def relative_error(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def dm_tree(model, variant, container=dict):
    """A DeepMind-style ``{module: {leaf: array}}`` tree with a distinct value pattern per array.

    DeepMind arrays have the Keras layout (docs/checkpoints.md §1.9), so shapes come from the model.
    """
    tree = container()
    for index, entry in enumerate(nfnet_weight_map(variant)):
        shape = tuple(keras_variable(model, entry).shape)
        size = int(np.prod(shape))
        value = (index + 1 + 1e-6 * np.arange(size, dtype="float32")).reshape(shape)
        tree.setdefault(entry.dm_module, container())[entry.dm_leaf] = value.astype("float32")
    return tree


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every global a pickle stream names, found with pickletools without executing anything."""
    found, memo, pushed = set(), {}, []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            pushed.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(int(arg)))
        elif op.name == "GLOBAL":
            found.add(tuple(arg.split(" ")))
        elif op.name == "STACK_GLOBAL":
            found.add((pushed[-2], pushed[-1]))
        else:
            pushed.append(None)
    return found


# --- timm -----------------------------------------------------------------------------------


def test_f0_timm_file_converts_to_keras_weights_reproducing_timm_logits(timm_reference, tmp_path):
    ref_dir = timm_reference("f0", (192, 161))
    out = tmp_path / "f0.weights.h5"
    # The command line, in-process: python -m keras_nfnet.convert --source timm --variant F0 ...
    assert (
        convert_main(
            ["--source", "timm", "--variant", "F0", str(ref_dir / "model.safetensors"), str(out)]
        )
        == 0
    )
    assert sorted(os.listdir(tmp_path)) == ["f0.weights.h5"]  # no temporary file left
    model = NFNet("F0", numerics="timm", classifier_activation=None, weights=str(out))
    ref = np.load(ref_dir / "reference.npz")
    got = np.asarray(model(ref["x192"], training=False))  # (the 161 px case: test_nfnet.py)
    assert relative_error(got, ref["logits192"]) < 1e-4


def test_tiny_timm_file_converts_to_keras_weights_reproducing_timm_logits(timm_reference, tmp_path):
    ref_dir = timm_reference("tiny", (64, 61))
    out = convert_checkpoint(
        "timm", TINY_VARIANT, ref_dir / "model.safetensors", tmp_path / "tiny.weights.h5"
    )
    model = NFNet(
        TINY_VARIANT, classes=10, numerics="timm", classifier_activation=None, weights=out
    )
    ref = np.load(ref_dir / "reference.npz")
    for size in (64, 61):
        got = np.asarray(model(ref[f"x{size}"], training=False))
        assert relative_error(got, ref[f"logits{size}"]) < 1e-4


def test_truncated_safetensors_file_is_a_clear_error(timm_reference, tmp_path):
    data = (timm_reference("tiny", (64, 61)) / "model.safetensors").read_bytes()
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        convert_checkpoint("timm", TINY_VARIANT, bad, tmp_path / "x.weights.h5")
    assert not (tmp_path / "x.weights.h5").exists()


# --- DeepMind -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def f0_model():
    return NFNet("F0", stochdepth_rate=0.0)


@pytest.mark.parametrize("form", ["pickle", "dill", "dill_ordereddict"])
def test_f0_deepmind_file_lands_every_array_in_its_layer(form, f0_model, tmp_path):
    container = collections.OrderedDict if form == "dill_ordereddict" else dict
    tree = dm_tree(f0_model, "F0", container)
    # docs/checkpoints.md §1.8: F0 has 94 parameter-owning modules and 233 leaf arrays.
    assert len(tree) == 94 and sum(len(leaves) for leaves in tree.values()) == 233
    assert "NFNet/~/nf_block/~/conv_shortcut" in tree and "NFNet/~/nf_block_0" not in tree
    assert set(tree["NFNet/~/nf_block_1/~/squeeze_excite/~/linear_1"]) == {"w", "b"}
    path = tmp_path / "F0_haiku.npz"
    with open(path, "wb") as file:
        (pickle if form == "pickle" else dill).dump(tree, file)
    arrays = read_deepmind(path)
    del tree
    load_deepmind_arrays(f0_model, arrays, "F0")
    for entry in nfnet_weight_map("F0"):
        np.testing.assert_array_equal(
            keras_variable(f0_model, entry).numpy(), arrays[entry.dm_key], err_msg=entry.dm_key
        )
    assert sum(int(np.prod(a.shape)) for a in arrays.values()) == 71_489_284


@pytest.fixture(scope="module")
def tiny_model():
    return NFNet(TINY_VARIANT, classes=10)


def test_deepmind_missing_entry_fails_naming_the_key(tiny_model):
    arrays = {f"{m}:{k}": v for m, leaves in dm_tree(tiny_model, TINY_VARIANT).items()
              for k, v in leaves.items()}  # fmt: skip
    del arrays["NFNet/~/nf_block_2/~/conv1b:gain"]
    with pytest.raises(ValueError, match=r"Missing 1 .*nf_block_2/~/conv1b:gain"):
        load_deepmind_arrays(tiny_model, arrays, TINY_VARIANT)


def test_deepmind_extra_entry_fails_naming_the_key(tiny_model):
    arrays = {f"{m}:{k}": v for m, leaves in dm_tree(tiny_model, TINY_VARIANT).items()
              for k, v in leaves.items()}  # fmt: skip
    arrays["NFNet/~/nf_block_7/~/conv0:w"] = np.zeros((1, 1, 96, 48), "float32")
    with pytest.raises(ValueError, match=r"Unexpected 1 .*nf_block_7/~/conv0:w"):
        load_deepmind_arrays(tiny_model, arrays, TINY_VARIANT)


def test_deepmind_misshaped_entry_fails_naming_the_key_and_both_shapes(tiny_model):
    arrays = {f"{m}:{k}": v for m, leaves in dm_tree(tiny_model, TINY_VARIANT).items()
              for k, v in leaves.items()}  # fmt: skip
    arrays["NFNet/~/nf_block_1/~/squeeze_excite/~/linear_1:w"] = np.zeros((64, 32), "float32")
    with pytest.raises(
        ValueError, match=r"squeeze_excite/~/linear_1:w.*\(64, 32\).*expects \(32, 64\)"
    ):
        load_deepmind_arrays(tiny_model, arrays, TINY_VARIANT)


def test_deepmind_tiny_file_without_top_drops_only_the_classifier(tiny_model, tmp_path):
    tree = dm_tree(tiny_model, TINY_VARIANT)
    path = tmp_path / "tiny_haiku.npz"
    path.write_bytes(dill.dumps(tree))
    out = convert_checkpoint("deepmind", TINY_VARIANT, path, tmp_path / "notop.weights.h5", False)
    notop = NFNet(TINY_VARIANT, include_top=False, input_shape=(48, 40, 3), weights=out)
    conv = notop.get_layer("final_conv")
    np.testing.assert_array_equal(conv.kernel.numpy(), tree["NFNet/~/final_conv"]["w"])
    np.testing.assert_array_equal(conv.gain.numpy(), tree["NFNet/~/final_conv"]["gain"])


# --- safety (docs/checkpoints.md §1.4) ------------------------------------------------------------


class RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class WritesFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [RunsCommand, WritesFile])
@pytest.mark.parametrize("writer", [pickle, dill])
def test_pickle_that_would_run_code_is_refused_and_nothing_runs(payload, writer, tmp_path):
    marker = tmp_path / "pwned"
    tree = {"NFNet/~/linear": {"b": np.ones(3, "float32"), "w": payload(marker)}}
    path = tmp_path / "F0_haiku.npz"
    path.write_bytes(writer.dumps(tree))
    refused = "posix.system" if payload is RunsCommand else "builtins.exec"
    with pytest.raises(ValueError, match=f"Refusing pickle global '{refused}'"):
        read_deepmind(path)
    assert not marker.exists()


def test_dill_pickled_function_and_persistent_ids_are_refused(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing pickle global 'dill\._dill"):
        RestrictedUnpickler(io.BytesIO(dill.dumps({"f": lambda: 0}))).load()

    class Persistent(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref" if isinstance(obj, np.ndarray) else None

    buffer = io.BytesIO()
    Persistent(buffer).dump({"a": np.ones(2)})
    with pytest.raises(pickle.UnpicklingError, match="persistent id 'ref'"):
        RestrictedUnpickler(io.BytesIO(buffer.getvalue())).load()


def test_object_arrays_are_refused():
    data = pickle.dumps({"m": {"w": np.array([1, "x"], dtype=object)}})
    with pytest.raises(pickle.UnpicklingError, match="object"):
        RestrictedUnpickler(io.BytesIO(data)).load()


def test_allowlist_covers_every_form_synthesized_with_the_real_libraries(tmp_path):
    tree = {"NFNet/~/nf_block": {"skip_gain": np.array(0.5, "float32")},
            "NFNet/~/linear": {"w": np.ones((2, 3), "float32"), "b": np.float32(2.0)}}  # fmt: skip
    streams = {f"pickle{p}": pickle.dumps(tree, protocol=p) for p in (2, 3, 4, 5)}
    streams["dill"] = dill.dumps(tree)
    streams["dill2"] = dill.dumps(tree, protocol=2)
    streams["dill_ordereddict"] = dill.dumps(collections.OrderedDict(tree))
    # JAX arrays written with dill, made in a subprocess (JAX is not imported in this process).
    jax_file = tmp_path / "jax.pkl"
    run_python(
        [
            "-c",
            "import sys, dill, jax.numpy as jnp; open(sys.argv[1], 'wb').write(dill.dumps("
            "{'NFNet/~/linear': {'w': jnp.arange(6.0).reshape(2, 3)}}))",
            str(jax_file),
        ],
        env={"JAX_PLATFORMS": "cpu"},
    )
    streams["dill_jax"] = jax_file.read_bytes()
    assert ("jax._src.array", "_reconstruct_array") in pickle_globals(streams["dill_jax"])
    assert ("dill._dill", "_create_array") in pickle_globals(streams["dill"])
    for form, data in streams.items():
        assert pickle_globals(data) <= set(ALLOWED_GLOBALS), form
        loaded = RestrictedUnpickler(io.BytesIO(data)).load()
        for module, leaves in loaded.items():
            for leaf, value in leaves.items():
                want = np.arange(6.0).reshape(2, 3) if form == "dill_jax" else tree[module][leaf]
                np.testing.assert_array_equal(np.asarray(value), want, err_msg=form)
                assert isinstance(value, np.ndarray | np.generic), (form, type(value))


def test_weights_a_deepmind_npz_loads_directly_into_the_generic_builder(tiny_model, tmp_path):
    from keras_nfnet.models.normfree import NormFreeNet

    tree = dm_tree(tiny_model, TINY_VARIANT)
    path = tmp_path / "tiny_haiku.npz"
    path.write_bytes(dill.dumps(tree))
    model = NormFreeNet(TINY_VARIANT.spec(), classes=10, weights=path)
    for entry in nfnet_weight_map(TINY_VARIANT):
        module, leaf = entry.dm_key.split(":")
        np.testing.assert_array_equal(
            keras_variable(model, entry).numpy(), tree[module][leaf], err_msg=entry.dm_key
        )
    x = np.random.default_rng(0).normal(size=(2, 40, 48, 3)).astype("float32")
    tiny_model.set_weights(model.get_weights())
    np.testing.assert_array_equal(model(x, training=False), tiny_model(x, training=False))


def test_weights_npz_for_a_row_without_a_deepmind_layout_is_refused(tmp_path):
    from keras_nfnet.models.normfree import NormFreeNet

    path = tmp_path / "x.npz"
    path.write_bytes(dill.dumps({"NFNet/~/linear": {"b": np.zeros(3, "float32")}}))
    with pytest.raises(ValueError, match="no DeepMind layout"):
        NormFreeNet("test_nfnet", input_shape=(32, 32, 3), weights=path)
