"""Hostile downloads, damaged cache files and bad arguments: each fails fast, says what is wrong,
and leaves nothing behind in the cache.

The download tests use the loopback servers of tests/loopback.py and the reduced network's
timm-format checkpoint (tests/timm_reference.py), altered one way per case.
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
import safetensors.numpy
from conftest import TINY_VARIANT
from loopback import StallingServer
from test_hostile_pickles import binint, in_module
from test_weights import cache_files, tiny_imagenet

from keras_nfnet import weights
from keras_nfnet.atomic import atomic_path, remove_stale_temporaries
from keras_nfnet.convert import __main__ as convert_cli
from keras_nfnet.models.nfnet import NFNet


def altered(data: bytes, change) -> bytes:
    tensors = dict(safetensors.numpy.load(data))
    change(tensors)
    return safetensors.numpy.save(tensors)


def _set(key, make):
    return lambda t: t.__setitem__(key, make(t[key]))


# Each alteration parses as safetensors but fails one check of the strict load.
BAD_FILES = {
    "nan": (_set("stem.conv2.weight", lambda w: np.where(w == w.flat[0], np.nan, w)), "non-finite"),
    "wrong_shape": (_set("stages.0.0.conv2.weight", lambda w: w[:, :, :1, :1]), "Shape mismatch"),
    "missing_tensor": (lambda t: t.pop("final_conv.bias"), "Missing 1 tensor"),
    "extra_tensor": (lambda t: t.__setitem__("surplus", np.zeros(3, "f4")), "Unexpected 1"),
    "scalar_for_matrix": (_set("head.fc.weight", lambda w: np.array(1.0, "f4")), "Shape mismatch"),
    "int64_gain": (_set("stem.conv1.gain", lambda g: g.astype("int64")), "dtype int64"),
    "float64_bias": (_set("head.fc.bias", lambda b: b.astype("float64")), "dtype float64"),
    "gain_same_size": (_set("stem.conv3.gain", lambda g: g.reshape(2, 4)), r"\(2, 4\)"),
    "se_kernel_same_size": (
        _set("stages.0.0.attn_last.fc1.weight", lambda w: w.reshape(w.shape[0], 4, 8)),
        "Shape mismatch",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_download_failing_any_check_leaves_nothing_cached(
    case, server, registry, tiny_files, tmp_path
):
    change, message = BAD_FILES[case]
    data, _ = tiny_files
    server.files[registry()] = altered(data, change)
    for attempt in (1, 2):  # the second call finds nothing cached and downloads again
        with pytest.raises(ValueError, match=message) as error:
            tiny_imagenet()
        assert "was deleted; the next call downloads again" in str(error.value)
        assert cache_files(tmp_path) == []
        assert len(server.requests) == attempt


def test_the_good_file_loads_after_a_bad_one_was_refused(server, registry, tiny_files, tmp_path):
    data, ref = tiny_files
    path = registry()
    server.files[path] = altered(data, BAD_FILES["gain_same_size"][0])
    with pytest.raises(ValueError):
        tiny_imagenet()
    server.files[path] = data
    logits = np.asarray(tiny_imagenet()(ref["x64"], training=False))
    np.testing.assert_allclose(logits, ref["logits64"], rtol=1e-4, atol=1e-4)
    assert cache_files(tmp_path) == ["dm_nfnet_tiny.safetensors", "nfnet_tiny_timm.weights.h5"]


HUGE_ARRAY = in_module(b"cnumpy\nndarray\n(" + binint(65536) + binint(65536) + b"t\x85R")
DEEPMIND_BAD_FILES = {
    "global_off_the_allowlist": (pickle.dumps(print), r"builtins\.print"),
    "32_GiB_array": (HUGE_ARRAY, r"shape \(65536, 65536\)"),
    "list_leaf": (pickle.dumps({"NFNet/~/linear": {"w": [[0.0] * 8] * 8}}), "is a list"),
}


@pytest.mark.parametrize("case", sorted(DEEPMIND_BAD_FILES))
def test_a_refused_deepmind_pickle_is_removed_from_the_cache(case, server, registry, tmp_path):
    data, message = DEEPMIND_BAD_FILES[case]
    server.files[registry(source="deepmind")] = data
    model = NFNet(TINY_VARIANT, classes=10)
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"{message}.*was deleted"):
        weights.load_pretrained_weights(model, TINY_VARIANT, source="deepmind")
    assert time.monotonic() - start < 10
    assert cache_files(tmp_path) == []


@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setenv(weights.CONNECT_TIMEOUT_ENV, "2")
    monkeypatch.setenv(weights.READ_TIMEOUT_ENV, "0.5")


@pytest.mark.parametrize(
    ("body", "message"),
    [(None, "no answer within the timeouts"), (b"x" * (1 << 20), "stalled: no data for 0.5 s")],
    ids=["never_answers", "stalls_after_1MB"],
)
def test_a_stalled_server_times_out_and_leaves_no_temporary(
    body, message, short_timeouts, registry, monkeypatch, tmp_path
):
    stalling = StallingServer(body=body, declared=100 << 20)
    try:
        registry()
        entry = weights.PRETRAINED_WEIGHTS["TINY"]
        monkeypatch.setitem(
            weights.PRETRAINED_WEIGHTS,
            "TINY",
            weights.PretrainedCheckpoint(
                entry.variant, {"timm": f"{stalling.url}/model"}, classes=10
            ),
        )
        start = time.monotonic()
        with pytest.raises(OSError, match=message) as error:
            tiny_imagenet()
        assert time.monotonic() - start < 10
        assert f"{stalling.url}/model" in str(error.value)
        assert "Nothing was cached" in str(error.value)
        assert "python -m keras_nfnet.convert" in str(error.value)  # the offline route
        assert cache_files(tmp_path) == []
    finally:
        stalling.close()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan"])
def test_a_bad_timeout_setting_is_named(value, monkeypatch):
    monkeypatch.setenv(weights.READ_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=f"KERAS_NFNET_READ_TIMEOUT='{value}'"):
        weights.download_timeouts()


def test_download_timeouts_default_and_override(monkeypatch):
    monkeypatch.delenv(weights.CONNECT_TIMEOUT_ENV, raising=False)
    monkeypatch.delenv(weights.READ_TIMEOUT_ENV, raising=False)
    assert weights.download_timeouts() == (30.0, 60.0)
    monkeypatch.setenv(weights.CONNECT_TIMEOUT_ENV, "5")
    monkeypatch.setenv(weights.READ_TIMEOUT_ENV, "7.5")
    assert weights.download_timeouts() == (5.0, 7.5)


def test_orphaned_temporaries_are_removed_and_live_ones_kept(tmp_path):
    orphan = tmp_path / ".tmp-a1-dm_nfnet_f0.safetensors"
    young = tmp_path / ".tmp-b2-dm_nfnet_f0.safetensors"
    other = tmp_path / "dm_nfnet_f0.safetensors"
    for path in (orphan, young, other):
        path.write_bytes(b"partial")
    os.utime(orphan, (0, 0))
    os.utime(other, (0, 0))
    with atomic_path(tmp_path / "nfnet_f0.weights.h5") as live:
        os.utime(live, (0, 0))  # old but locked by this live writer
        removed = remove_stale_temporaries(tmp_path)
        assert os.path.exists(live)
    assert removed == [str(orphan)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        young.name,
        "dm_nfnet_f0.safetensors",
        "nfnet_f0.weights.h5",
    ]


def test_a_download_clears_orphans_a_killed_run_left(server, registry, tiny_files, tmp_path):
    data, _ = tiny_files
    server.files[registry()] = data
    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    orphan = folder / ".tmp-k1ll3d-dm_nfnet_tiny.safetensors"
    orphan.write_bytes(b"")
    os.utime(orphan, (0, 0))
    tiny_imagenet()
    assert cache_files(tmp_path) == ["dm_nfnet_tiny.safetensors", "nfnet_tiny_timm.weights.h5"]


def test_a_damaged_converted_file_is_rebuilt_from_the_download(
    server, registry, tiny_files, tmp_path, capsys
):
    data, ref = tiny_files
    server.files[registry()] = data
    want = np.asarray(tiny_imagenet()(ref["x64"], training=False))
    converted = tmp_path / "keras" / "models" / "nfnet_tiny_timm.weights.h5"
    converted.write_bytes(converted.read_bytes()[:1000])  # truncated
    got = np.asarray(tiny_imagenet()(ref["x64"], training=False))
    np.testing.assert_array_equal(got, want)
    assert len(server.requests) == 1  # rebuilt from the cached download, no new request
    assert str(converted) in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(tiny_imagenet()(ref["x64"], training=False)), want)


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_a_weights_argument_that_is_no_weights_file_names_the_file(content, tmp_path):
    path = tmp_path / "model.weights.h5"
    if content == "text":
        path.write_text("not an HDF5 file")
    else:
        NFNet(TINY_VARIANT, classes=10).save_weights(path)
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="Could not load weights from") as error:
        NFNet(TINY_VARIANT, classes=10, weights=str(path))
    assert str(path) in str(error.value)
    assert "Expected a Keras '.weights.h5' file" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (32, 32, 0)}, r"Received: input_shape=\(32, 32, 0\)"),
        ({"input_shape": ("a", 64, 3)}, r"Received: input_shape=\('a', 64, 3\)"),
        ({"input_shape": 64}, "Received: input_shape=64"),
        ({"input_shape": (64.5, 64, 3)}, r"Received: input_shape=\(64.5, 64, 3\)"),
        ({"dropout_rate": "x"}, "Received: dropout_rate='x'"),
        ({"dropout_rate": 1.5}, "Received: dropout_rate=1.5"),
        ({"stochdepth_rate": True}, "Received: stochdepth_rate=True"),
        ({"classes": True}, "Received: classes=True"),
        ({"classes": 2.0}, "Received: classes=2.0"),
        ({"include_top": "no"}, "Received: include_top='no'"),
    ],
)
def test_bad_builder_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NFNet(TINY_VARIANT, **kwargs)


@pytest.fixture
def cli_must_not_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the input was read before the arguments were checked")

    monkeypatch.setattr(convert_cli, "sha256_of", refuse)
    monkeypatch.setattr(convert_cli, "convert_checkpoint", refuse)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["MISSING.safetensors", "out.weights.h5"], "input file 'MISSING.safetensors' does not"),
        (["INPUT", "out.h5"], "must end in '.weights.h5'. Received: 'out.h5'"),
        (["INPUT", "no/such/dir/out.weights.h5"], "output folder"),
    ],
)
def test_convert_cli_checks_arguments_before_reading(
    args, message, cli_must_not_read, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "INPUT").write_bytes(b"\0" * 16)
    with pytest.raises(SystemExit) as exit_info:
        convert_cli.main(["--source", "timm", "--variant", "F0", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_convert_cli_bad_variant_is_a_usage_error(cli_must_not_read, tmp_path, capsys):
    (tmp_path / "in.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit):
        convert_cli.main(
            [
                "--source",
                "timm",
                "--variant",
                "F9",
                str(tmp_path / "in.safetensors"),
                "o.weights.h5",
            ]
        )
    assert "Unknown NFNet variant 'F9'" in capsys.readouterr().err


def test_convert_cli_bad_file_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"garbage")
    code = convert_cli.main(
        ["--source", "timm", "--variant", "F0", str(bad), str(tmp_path / "out.weights.h5")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "not a readable safetensors file" in err
    assert not (tmp_path / "out.weights.h5").exists()
