"""Atomic writes (keras_nfnet.atomic): the target holds its old or its complete new contents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_nfnet.atomic import atomic_path, atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, **kwargs) -> int:
    """Run ``code`` in a fresh interpreter that imports this checkout; return its exit code."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, **kwargs).returncode


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.bin"]


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n")
    code = (
        "import os, sys\n"
        "from keras_nfnet.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'w').write('new: ')\n"
        "    os._exit(3)\n"
    )
    assert _python(code, str(target)) == 3
    assert target.read_text() == "old: 1\n"


def test_the_temporary_ends_with_the_target_name_so_writers_see_its_extension(tmp_path):
    with atomic_path(tmp_path / "f0.weights.h5") as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert tmp.endswith("-f0.weights.h5")
        open(tmp, "wb").close()
    assert os.listdir(tmp_path) == ["f0.weights.h5"]


def test_written_files_get_the_permissions_of_any_new_file(tmp_path):
    # mkstemp makes owner-only files; the written file follows the process's umask instead.
    target = tmp_path / "plain.txt"
    code = (
        "import sys\n"
        "from keras_nfnet.atomic import atomic_write_text\n"
        "atomic_write_text(sys.argv[1], 'x')\n"
    )
    assert _python(code, str(target), preexec_fn=lambda: os.umask(0o027)) == 0
    assert os.stat(target).st_mode & 0o777 == 0o640


def test_success_replaces_the_contents(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old contents, longer than the new")
    atomic_write_bytes(target, b"TFL3")
    assert target.read_bytes() == b"TFL3"
    assert os.listdir(tmp_path) == ["model.tflite"]
