"""Atomic file writes: a file holds its old contents or its complete new ones, never a part.

Every file keras_nfnet and ``training/`` write themselves (weight downloads, converted weights,
checkpoints, ``.keras`` models, TFLite flatbuffers, plots, configs) goes through `atomic_path`;
TensorBoard logs and what Keras' own ``model.export`` writes do not. The writer fills a
temporary file in the same folder, which is synced to disk and then moved over the target with
``os.replace`` (atomic within one file system, on POSIX and Windows). A writer that raises leaves
the previous file untouched and its temporary removed; a process killed mid-write leaves the
previous file untouched and a ``.tmp-*`` file beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: `mkstemp` creates files readable by their owner only, and the written
# file should get the permissions any new file gets (a shared weights cache stays shared).
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else vanishes.

    The temporary name ends with ``path``'s own file name, so writers that read the format from
    the extension (``model.save``, ``save_weights``, ``np.savez``, ``savefig``) see the right
    one. The folder must exist.

    Example:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "numbers.txt")
    >>> with atomic_path(target) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("1 2 3")
    >>> open(target).read(), os.listdir(os.path.dirname(target))
    ('1 2 3', ['numbers.txt'])
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=f"-{name}")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before it takes the target's name
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (`atomic_path`).

    Example:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "blob.bin")
    >>> atomic_write_bytes(target, b"NFNet")
    >>> open(target, "rb").read()
    b'NFNet'
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
