"""Quiet TensorFlow's start-up lines in this project's ``python -m`` programs.

TensorFlow 2.21 writes these to stderr while it is imported, whatever ``TF_CPP_MIN_LOG_LEVEL``
says::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. You may see slightly ...

and writes them twice: ``libtensorflow_framework.so.2`` and the profiler plugin
(``_pywrap_profiler_plugin.so``) each carry their own copy of that start-up code and of absl's
logging, and each logs the notice from a static initializer, while the library loads and before
anything has read ``TF_CPP_MIN_LOG_LEVEL``. No environment variable reaches them, so the lines are
filtered out where they are written: file descriptor 2.

When this module is imported by ``python -m keras_nfnet.<tool>`` or ``python -m training.<tool>``
(or `quiet_entry_point` is called):

* ``TF_CPP_MIN_LOG_LEVEL=3``, ``GRPC_VERBOSITY=ERROR`` and ``GLOG_minloglevel=2`` become the
  defaults (`os.environ.setdefault`: a value the user set wins);
* the first ``import tensorflow`` runs with stderr filtered: absl's ``WARNING: All log messages
  before absl::InitializeLog()`` line and the absl-format log lines (``I0000 00:00:...``) below
  ``TF_CPP_MIN_LOG_LEVEL`` are dropped; every other line (a Python warning, a traceback, a fatal
  log line) passes through as it is written. ``TF_CPP_MIN_LOG_LEVEL=0`` filters nothing.

Imported anywhere else (a notebook, a test, another program) the module changes nothing. It
imports nothing but the standard library, so it can run before Keras and TensorFlow load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

ENTRY_POINT_PACKAGES = ("keras_nfnet", "training")
DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "2"}

_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
# absl / glog prefix: severity, MMDD hh:mm:ss.micros, thread id, file:line]. Before
# absl::InitializeLog the seconds field is the Unix time ("I0000 00:00:1796225752.706014").
_LOG_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s\]]+:\d+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as an integer (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def is_startup_noise(line: bytes, level: int) -> bool:
    """Whether ``TF_CPP_MIN_LOG_LEVEL=level`` should have hidden this stderr line.

    Example:
    >>> is_startup_noise(b"I0000 00:00:17.0 42 port.cc:153] oneDNN custom operations are on.", 1)
    True
    >>> is_startup_noise(b"I0000 00:00:17.0 42 port.cc:153] oneDNN custom operations are on.", 0)
    False
    >>> is_startup_noise(b"F0000 00:00:17.0 42 x.cc:1] Check failed", 3)
    False
    >>> is_startup_noise(b"UserWarning: something", 3)
    False
    """
    if level < 1:
        return False
    if line.startswith(_ABSL_PREAMBLE):
        return True
    match = _LOG_LINE.match(line)
    return match is not None and _SEVERITY[match[1]] < level


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[bytes], bool]) -> Iterator[None]:
    """Within the block, drop the lines written to file descriptor 2 for which ``drop`` is true.

    Works at the descriptor level, so it also sees what C++ libraries write. The other lines are
    passed on as each one is completed (a thread reads a pipe), so a crash inside the block still
    shows what came before it.
    """
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2: nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    reader = os.fdopen(read_fd, "rb")

    def pump() -> None:
        with reader:
            for line in reader:
                if not drop(line):
                    _write_all(saved, line)

    thread = threading.Thread(target=pump, name="keras_nfnet.quiet", daemon=True)
    thread.start()
    try:
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees end of file
        thread.join(timeout=10)
        if not thread.is_alive():
            os.close(saved)


class _QuietTensorFlowImport:
    """A one-shot `sys.meta_path` finder: the first ``import tensorflow`` runs filtered."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "tensorflow":
            return None
        _remove_hook()
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def quiet_exec_module(module) -> None:
            level = min_log_level()
            with filtered_stderr(lambda line: is_startup_noise(line, level)):
                exec_module(module)

        loader.exec_module = quiet_exec_module
        return spec


def _remove_hook() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_QuietTensorFlowImport)


def quiet_tensorflow_import() -> None:
    """Filter TensorFlow's start-up lines when it is first imported (nothing if it already is)."""
    if "tensorflow" not in sys.modules and _QuietTensorFlowImport not in sys.meta_path:
        sys.meta_path.insert(0, _QuietTensorFlowImport)


def quiet_entry_point() -> None:
    """Default `DEFAULTS` in the environment and filter TensorFlow's start-up lines."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_tensorflow_import()


def running_module(argv: list[str] | None = None) -> str | None:
    """The module ``python -m MODULE`` runs, from the interpreter's command line, else None.

    Example:
    >>> running_module(["python", "-X", "utf8", "-m", "training.train", "--help"])
    'training.train'
    >>> running_module(["python", "script.py", "-m", "x"]) is None
    True
    """
    argv = getattr(sys, "orig_argv", []) if argv is None else argv
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg.startswith("-m"):
            return arg[2:]
        if arg in ("-W", "-X"):  # options that take the next argument
            next(args, None)
        elif arg in ("-c", "-", "--") or not arg.startswith("-"):
            return None
    return None


def is_entry_point() -> bool:
    """Whether this process is ``python -m keras_nfnet.<tool>`` or ``python -m training.<tool>``."""
    module = running_module()
    return module is not None and module.partition(".")[0] in ENTRY_POINT_PACKAGES


if is_entry_point():
    quiet_entry_point()
