"""Hostile DeepMind pickles: reading bounds memory, nesting and work (convert/deepmind.py).

Each hostile file is built here, from crafted objects or raw opcodes, and read in a fresh
interpreter whose address space is capped at 3 GiB above its baseline (``RLIMIT_AS``); that
interpreter imports only NumPy and ``deepmind.py`` itself (by path: the module imports no Keras
or TensorFlow at import time). A bound that works refuses the file with a ``ValueError`` naming
the limit, quickly; without it the reader would hit the cap (``MemoryError``) or crash.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import dill
import numpy as np
import pytest
from tiny import TINY_VARIANT

from keras_nfnet.convert import deepmind
from keras_nfnet.convert.deepmind import (
    MAX_NESTING_DEPTH,
    MAX_PICKLE_OPS,
    PickleLimitError,
    RestrictedUnpickler,
    layout_file_limit,
    read_deepmind,
    scan_pickle,
)
from keras_nfnet.convert.deepmind_layout import expected_deepmind_shapes
from keras_nfnet.convert.nfnet_map import keras_variable, nfnet_weight_map
from keras_nfnet.models.nfnet import NFNET_VARIANTS, NFNet, count_nfnet_params

MODULE_FILE = Path(deepmind.__file__)
CAP_BYTES = 3 * 2**30

# Runs in the capped interpreter: argv = module file, pickle file, layout JSON or "-", mode.
HARNESS = r"""
import importlib.util, json, resource, sys, time

def vm_size():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

module_file, path, layout, mode, cap = sys.argv[1:6]
spec = importlib.util.spec_from_file_location("deepmind_under_test", module_file)
dm = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = dm
spec.loader.exec_module(dm)
heavy = sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules)
baseline = vm_size()
limit = baseline + int(cap)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
expected = None
if layout != "-":
    with open(layout) as f:
        expected = {k: tuple(v) for k, v in json.load(f).items()}
report = {"heavy_imports": heavy, "baseline": baseline, "limit": limit}
start = time.perf_counter()
try:
    if mode == "control":
        import numpy as np
        np.ones(2**30, "float32")  # 4 GiB: must fail under the cap
    else:
        dm.read_deepmind(path, expected)
    report["outcome"] = "loaded"
except ValueError as error:
    report.update(outcome="refused", type=type(error).__name__, message=str(error))
except MemoryError as error:
    report.update(outcome="memory_error", message=repr(error))
report["seconds"] = time.perf_counter() - start
print(json.dumps(report))
"""


def read_capped(tmp_path, data: bytes, expected=None, mode="read") -> dict:
    """Write ``data`` and read it with `read_deepmind` in a capped interpreter; its report."""
    path = tmp_path / "hostile_haiku.npz"
    path.write_bytes(data)
    layout = "-"
    if expected is not None:
        layout = str(tmp_path / "layout.json")
        Path(layout).write_text(json.dumps({k: list(v) for k, v in expected.items()}))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(MODULE_FILE), str(path), layout, mode, str(CAP_BYTES)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    wall = time.perf_counter() - start
    assert proc.returncode == 0, (
        f"capped reader exited {proc.returncode} (negative: killed by that signal)\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy_imports"] == [], report
    report["wall"] = wall
    return report


def assert_refused(report: dict, pattern: str, seconds: float = 5.0) -> None:
    assert report["outcome"] == "refused", report
    assert report["type"] == "ValueError", report
    assert "hostile_haiku.npz" in report["message"], report
    assert re.search(pattern, report["message"]), report["message"]
    assert report["seconds"] < seconds, report


# --- crafting ------------------------------------------------------------------------------


def unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def in_module(value_ops: bytes, module="NFNet/~/linear", leaf="w") -> bytes:
    """Protocol-2 opcodes for ``{module: {leaf: <value_ops>}}``."""
    return b"\x80\x02}" + unicode(module) + b"}" + unicode(leaf) + value_ops + b"ss."


def binint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


class SharedState:
    """Pickles as ``_reconstruct(ndarray, (0,), b'b')`` + BUILD with one shared state tuple."""

    def __init__(self, args, state):
        self.args, self.state = args, state

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, self.args, self.state)


def shared_bytes_arrays(count: int, size: int) -> bytes:
    """``count`` arrays all built from one memoised ``size``-element float32 byte string."""
    state = (1, (size,), np.dtype("float32"), False, np.ones(size, "float32").tobytes())
    args = (np.ndarray, (0,), b"b")
    tree = {"NFNet/~/linear": {f"w{i}": SharedState(args, state) for i in range(count)}}
    return pickle.dumps(tree, protocol=4)


def dm_tree_from_shapes(shapes, container=dict):
    tree = container()
    for index, (key, shape) in enumerate(shapes.items()):
        module, leaf = key.rsplit(":", 1)
        size = int(np.prod(shape))
        value = (index + 1e-6 * np.arange(size, dtype="float32")).reshape(shape)
        tree.setdefault(module, container())[leaf] = value.astype("float32")
    return tree


# --- the three attacks of the review, in a capped interpreter ------------------------------


def test_the_cap_is_real(tmp_path):
    # Control: a 4 GiB allocation fails in the harness, so a refusal below is the bound's doing.
    report = read_capped(tmp_path, b"", mode="control")
    assert report["outcome"] == "memory_error", report


@pytest.mark.parametrize("layout", [False, True])
def test_shared_nested_lists_are_refused_not_expanded(layout, tmp_path):
    # 64**5 = 2**30 floats (8 GiB through np.asarray) from a ~1.5 KB memoised pickle.
    nested = [0.0] * 64
    for _ in range(4):
        nested = [nested] * 64
    data = pickle.dumps({"NFNet/~/linear": {"w": nested, "b": np.zeros(1000, "float32")}}, 4)
    assert len(data) < 20_000
    expected = expected_deepmind_shapes("F0") if layout else None
    report = read_capped(tmp_path, data, expected)
    assert_refused(report, r"Tensor 'NFNet/~/linear:w' is a list, not a NumPy array")


@pytest.mark.parametrize("layout", [False, True])
@pytest.mark.parametrize("constructor", ["ndarray", "_reconstruct"])
def test_huge_array_constructor_is_refused_before_allocation(constructor, layout, tmp_path):
    shape = b"(" + binint(65536) + binint(65536) + b"t"  # 65536 x 65536 float64: 32 GiB
    if constructor == "ndarray":
        ops = b"cnumpy\nndarray\n" + shape + b"\x85R"
    else:
        ops = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + shape + b"C\x01d\x87R"
    data = in_module(ops)
    assert len(data) < 120
    expected = expected_deepmind_shapes("F0") if layout else None
    report = read_capped(tmp_path, data, expected)
    assert_refused(
        report,
        r"shape \(65536, 65536\) \(4,294,967,296 elements\), above the limit of "
        r"268,435,456 elements per array \(DEFAULT_MAX_ARRAY_ELEMENTS\)",
    )


def test_deep_tuple_dict_key_is_refused_by_the_scan(tmp_path):
    # A dict key nested 200,000 deep: hashing it overflows the C stack (segfault). Raw opcodes.
    data = b"\x80\x04}" + b"N" + b"\x85" * 200_000 + b"}s."
    ops = collections.Counter(op.name for op, _, _ in pickletools.genops(data))
    assert ops["TUPLE1"] == 200_000 and ops["SETITEM"] == 1 and len(data) > 200_000
    report = read_capped(tmp_path, data)
    assert_refused(
        report,
        rf"containers nest {MAX_NESTING_DEPTH + 1} deep, above the limit of "
        rf"{MAX_NESTING_DEPTH} \(MAX_NESTING_DEPTH\)",
    )


# --- further amplifications, in a capped interpreter ---------------------------------------


def test_memoised_array_bytes_shared_by_many_arrays_are_refused(tmp_path):
    # 4,000 arrays over one 1 MiB byte string: 4 GiB of float32 copies from a ~1.2 MB file.
    data = shared_bytes_arrays(4000, 2**18)
    assert len(data) < 2**21
    report = read_capped(tmp_path, data)
    assert_refused(report, r"arrays would total [\d,]+ bytes, above the limit of [\d,]+ bytes")


def test_memoised_text_encoded_again_and_again_is_refused(tmp_path):
    # Protocol 2's _codecs.encode makes a fresh bytes object per call: 4,000 x 1 MiB.
    text = unicode("a" * 2**20)
    head = b"\x80\x02]c_codecs\nencode\nq\x00" + text + unicode("latin1") + b"\x86q\x01Ra"
    data = head + b"h\x00h\x01Ra" * 4000 + b"."
    report = read_capped(tmp_path, data)
    assert_refused(report, r"_codecs.encode: encoded bytes would total [\d,]+, above the limit")


def test_huge_memo_index_is_refused(tmp_path):
    # LONG_BINPUT 2**31 - 1 makes the C unpickler size its memo to 2**32 pointers (32 GiB).
    data = b"\x80\x04N" + b"r" + struct.pack("<I", 2**31 - 1) + b"."
    report = read_capped(tmp_path, data)
    assert_refused(
        report, rf"memo index 2,147,483,647 outside the limit of 0..{MAX_PICKLE_OPS - 1}"
    )


def test_declared_huge_bytes_length_is_refused(tmp_path):
    # BINBYTES8 declaring 1 TiB: the C unpickler allocates the declared size before reading.
    data = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x" * 16 + b"."
    report = read_capped(tmp_path, data)
    assert_refused(report, r"malformed pickle stream: expected 1099511627776 bytes in a bytes8")


# --- the scan and the stand-ins, in this process ---------------------------------------------


def refuse(data: bytes, pattern: str, expected=None):
    start = time.perf_counter()
    with pytest.raises(PickleLimitError, match=pattern):
        RestrictedUnpickler(io.BytesIO(data), expected=expected).load()
    assert time.perf_counter() - start < 5.0


def test_cycles_are_refused_as_too_deep():
    cycle: list = []
    cycle.append(cycle)
    refuse(pickle.dumps({"m": {"w": cycle}}), r"containers nest 33 deep, above the limit of 32")


def test_depth_counts_containers_filled_later_through_the_memo():
    # Lists are created shallow and each appended into the previous one afterwards (BINGET +
    # APPEND), so no single op builds a deep container: the scan must propagate depths.
    count = 40
    ops = b"\x80\x02" + b"]q\x00"  # list 0
    for i in range(1, count):
        ops += b"h" + bytes([i - 1]) + b"]q" + bytes([i]) + b"a0"  # list i into list i-1
    refuse(ops + b"h\x00.", r"containers nest 3\d deep, above the limit of 32")


def test_deep_but_legal_nesting_passes_the_scan():
    value: object = 1.0
    for _ in range(MAX_NESTING_DEPTH):
        value = [value]
    assert scan_pickle(pickle.dumps(value)) > 0
    with pytest.raises(PickleLimitError, match="nest 33 deep"):
        scan_pickle(pickle.dumps([value]))


def test_opcode_count_is_bounded():
    data = b"\x80\x04" + b"N0" * (MAX_PICKLE_OPS // 2 + 1) + b"N."
    refuse(data, rf"more than {MAX_PICKLE_OPS:,} opcodes \(MAX_PICKLE_OPS\)")


@pytest.mark.parametrize(
    "tree",
    [{("a", "b"): 1}, {frozenset({1}): 1}, {"m": {1, (2, 3)}}],
    ids=["tuple_key", "frozenset_key", "tuple_in_set"],
)
def test_keys_and_set_elements_must_be_strings_or_numbers(tree):
    refuse(pickle.dumps(tree), r"container or built object; checkpoint keys must be strings")


def test_item_assignment_into_an_array_is_refused():
    data = pickle.dumps(np.zeros(4, "float32"), protocol=2)
    assert data.endswith(b"b.")
    nested = pickle.dumps([[0.0] * 64] * 64, protocol=2)[2:-1]  # value ops without PROTO/STOP
    with pytest.raises(pickle.UnpicklingError, match="item assignment into an array"):
        RestrictedUnpickler(io.BytesIO(data[:-1] + b"K\x00" + nested + b"s.")).load()


def test_build_on_an_allowlisted_function_is_refused():
    # BUILD on a global would set attributes on the module's own stand-in function.
    refuse(b"\x80\x02c_codecs\nencode\n}b.", "added to something that is not a container")


def test_dtype_state_other_than_plain_numeric_is_refused():
    data = pickle.dumps({"m": {"w": np.zeros(2, "float32")}}, protocol=4)
    plain = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    assert data.count(plain) == 1
    elsize = data.replace(plain, b"J\x00\x00\x00\x40J\xff\xff\xff\xffK\x00t")
    with pytest.raises(pickle.UnpicklingError, match="dtype state other than a plain numeric"):
        RestrictedUnpickler(io.BytesIO(elsize)).load()


def test_frame_longer_than_the_data_is_refused():
    refuse(b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "a frame of .* longer than the data")


@pytest.mark.parametrize(
    "leaf", [(1.0, 2.0), 0.5, [np.zeros(2, "float32")]], ids=["tuple", "float", "list"]
)
def test_leaves_that_are_not_arrays_are_refused(leaf, tmp_path):
    path = tmp_path / "leaf.npz"
    path.write_bytes(pickle.dumps({"NFNet/~/linear": {"b": leaf}}))
    with pytest.raises(ValueError, match=r"leaf.npz.*'NFNet/~/linear:b' is a \w+, not a NumPy"):
        read_deepmind(path)


def test_without_a_layout_arrays_may_not_exceed_what_the_stream_encodes():
    # A 2 GiB zero-filled array is under the per-array element limit, not under the stream's.
    shape = b"(" + binint(2**14) + binint(2**14) + b"t"
    data = in_module(b"cnumpy\nndarray\n" + shape + b"\x85R")
    refuse(data, r"arrays would total 2,147,483,648 bytes, above the limit of 1,048,6\d\d bytes")


# --- the expected layout -------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["F0", TINY_VARIANT], ids=["F0", "tiny"])
def test_expected_shapes_match_a_built_model(variant):
    model = NFNet(variant, classes=1000, stochdepth_rate=0.0)
    shapes = expected_deepmind_shapes(variant)
    entries = nfnet_weight_map(variant)
    assert list(shapes) == [e.dm_key for e in entries]
    for entry in entries:
        assert shapes[entry.dm_key] == tuple(keras_variable(model, entry).shape), entry.dm_key
    notop = expected_deepmind_shapes(variant, include_top=False)
    assert set(shapes) - set(notop) == {"NFNet/~/linear:w", "NFNet/~/linear:b"}


@pytest.mark.parametrize("name", list(NFNET_VARIANTS))
def test_expected_shapes_count_every_parameter(name):
    shapes = expected_deepmind_shapes(name, classes=10)
    assert sum(int(np.prod(s)) for s in shapes.values()) == count_nfnet_params(name, classes=10)


def test_f0_layout_file_reads_with_the_expected_layout(tmp_path):
    shapes = expected_deepmind_shapes("F0")
    tree = dm_tree_from_shapes(shapes)
    path = tmp_path / "F0_haiku.npz"
    with open(path, "wb") as file:
        dill.dump(tree, file)
    assert path.stat().st_size <= layout_file_limit(shapes)
    start = time.perf_counter()
    arrays = read_deepmind(path, expected=shapes)
    assert time.perf_counter() - start < 30
    assert list(arrays) == list(shapes)
    for key, shape in shapes.items():
        module, leaf = key.rsplit(":", 1)
        assert arrays[key].shape == shape and arrays[key].dtype == np.float32
        np.testing.assert_array_equal(arrays[key], tree[module][leaf], err_msg=key)
    assert type(arrays["NFNet/~/nf_block:skip_gain"]) is np.ndarray


@pytest.mark.parametrize("form", ["pickle2", "pickle4", "pickle5", "dill", "dill_ordereddict"])
def test_tiny_layout_file_reads_in_every_form(form, tmp_path):
    shapes = expected_deepmind_shapes(TINY_VARIANT, classes=10)
    container = collections.OrderedDict if form == "dill_ordereddict" else dict
    tree = dm_tree_from_shapes(shapes, container)
    tree["NFNet/~/nf_block_1"]["skip_gain"] = np.float32(0.25)  # a NumPy scalar leaf
    path = tmp_path / "tiny_haiku.npz"
    path.write_bytes(
        pickle.dumps(tree, protocol=int(form[-1]))
        if form.startswith("pickle")
        else dill.dumps(tree)
    )
    arrays = read_deepmind(path, expected=shapes)
    assert {k: a.shape for k, a in arrays.items()} == shapes
    assert arrays["NFNet/~/nf_block_1:skip_gain"] == np.float32(0.25)


def tiny_file(tmp_path, edit) -> tuple[Path, dict]:
    shapes = expected_deepmind_shapes(TINY_VARIANT, classes=10)
    tree = dm_tree_from_shapes(shapes)
    edit(tree)
    path = tmp_path / "tiny_haiku.npz"
    path.write_bytes(dill.dumps(tree))
    return path, shapes


SE1 = "NFNet/~/nf_block_1/~/squeeze_excite/~/linear_1"


def test_wrong_shape_is_refused_before_it_is_allocated(tmp_path):
    def edit(tree):
        tree[SE1]["w"] = np.zeros((64, 33), "float32")

    path, shapes = tiny_file(tmp_path, edit)
    assert shapes[f"{SE1}:w"] == (32, 64) and (64, 33) not in shapes.values()
    with pytest.raises(
        ValueError, match=r"tiny_haiku.npz.*array of shape \(64, 33\): no array of the expected"
    ):
        read_deepmind(path, expected=shapes)


def test_shape_of_another_key_is_refused_naming_the_key(tmp_path):
    # The swapped shapes both belong to the layout, so only the per-key check can see them.
    stem0, stem1 = "NFNet/~/stem_conv0", "NFNet/~/stem_conv1"

    def edit(tree):
        tree[stem0]["w"], tree[stem1]["w"] = tree[stem1]["w"], tree[stem0]["w"]

    path, shapes = tiny_file(tmp_path, edit)
    with pytest.raises(
        ValueError,
        match=rf"'{stem0}:w' has shape \(3, 3, 2, 4\); the expected layout has \(3, 3, 3, 2\)",
    ):
        read_deepmind(path, expected=shapes)


def test_more_arrays_of_a_shape_than_the_layout_has_are_refused(tmp_path):
    def edit(tree):
        tree["NFNet/~/linear"]["extra"] = np.zeros(10, "float32")  # (10,): the head bias only

    path, shapes = tiny_file(tmp_path, edit)
    assert list(shapes.values()).count((10,)) == 1
    with pytest.raises(ValueError, match=r"shape \(10,\): the expected layout has only 1 array"):
        read_deepmind(path, expected=shapes)


def test_missing_and_extra_keys_are_refused(tmp_path):
    path, shapes = tiny_file(tmp_path, lambda tree: tree[SE1].pop("b"))
    with pytest.raises(ValueError, match=rf"Missing 1 tensor.*{SE1}:b"):
        read_deepmind(path, expected=shapes)
    # An extra array of a layout shape takes another key's place: the count refuses it.
    smaller = dict(shapes)
    del smaller[f"{SE1}:b"]
    path, _ = tiny_file(tmp_path, lambda tree: None)
    with pytest.raises(ValueError, match=r"shape \(64,\): the expected layout has only"):
        read_deepmind(path, expected=smaller)
    # An empty array allocates nothing and passes the stand-ins; the per-key check names it.
    path, _ = tiny_file(tmp_path, lambda tree: tree[SE1].update(extra=np.zeros(0, "float32")))
    with pytest.raises(ValueError, match=rf"'{SE1}:extra' is not in the expected layout"):
        read_deepmind(path, expected=shapes)


def test_files_larger_than_the_layout_allows_are_refused_unread(tmp_path):
    shapes = expected_deepmind_shapes(TINY_VARIANT, classes=10)
    limit = layout_file_limit(shapes)
    path = tmp_path / "big_haiku.npz"
    with open(path, "wb") as file:
        file.truncate(limit + 1)  # sparse
    with pytest.raises(ValueError, match=rf"big_haiku.npz.*above the limit of {limit:,} bytes"):
        read_deepmind(path, expected=shapes)
    with open(path, "wb") as file:
        file.truncate(deepmind.DEFAULT_MAX_FILE_BYTES + 1)
    with pytest.raises(ValueError, match=r"above the limit of 4,294,967,296 bytes"):
        read_deepmind(path)
