"""Atomic file writes: a file holds its old contents or its complete new ones, never a part.

Every file keras_nfnet and ``training/`` write themselves (weight downloads, converted weights,
checkpoints, ``.keras`` models, TFLite flatbuffers, plots, configs) goes through `atomic_path`;
TensorBoard logs and what Keras' own ``model.export`` writes do not. The writer fills a
temporary file in the same folder, which is synced to disk and then moved over the target with
``os.replace`` (atomic within one file system, on POSIX and Windows). A writer that raises leaves
the previous file untouched and its temporary removed; a process killed mid-write leaves the
previous file untouched and a ``.tmp-*`` file beside it, which `remove_stale_temporaries` deletes
later: while its writer lives, a temporary holds a lock, so only orphans are removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import struct
import tempfile
import time
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

TEMP_PREFIX = ".tmp-"
# The writer's lock is an open-file-description lock (Linux): it conflicts across processes and
# file descriptions, survives the writer's library opening and closing the file (a POSIX lockf
# would not), and ignores the flock that h5py takes on the same file (flock would collide).
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
# A temporary untouched this long, and not locked by a live writer, is an orphan. Without OFD
# locks (macOS, Windows) age is the only sign, so it must exceed any write's pauses by far.
ORPHAN_AGE_S = 60.0 if _OFD_SETLK is not None else 3600.0


def _try_lock(fd: int) -> bool:
    """Take a write lock on the whole file without waiting; False if someone else holds one."""
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        fcntl.fcntl(fd, _OFD_SETLK, request)
        return True
    except OSError:
        return False


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
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=f"-{name}")
    if _OFD_SETLK is not None:  # held until the block ends: the mark of a live writer
        _try_lock(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before it takes the target's name
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        os.close(fd)
        if os.path.exists(tmp):
            os.remove(tmp)


def _is_orphan(tmp: str, now: float) -> bool:
    try:
        if now - os.stat(tmp).st_mtime < ORPHAN_AGE_S:
            return False
        if _OFD_SETLK is None:
            return True
        fd = os.open(tmp, os.O_RDWR)
    except OSError:
        return False  # vanished meanwhile, or not ours to open
    try:
        return _try_lock(fd)  # False: a live writer holds it
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the `atomic_path` temporaries in ``folder`` that a killed process left behind.

    A temporary counts as left behind when no live writer holds its lock and it was not modified
    for `ORPHAN_AGE_S` seconds. Returns the removed paths.

    Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> orphan = os.path.join(folder, ".tmp-abc-model.safetensors")
    >>> open(orphan, "wb").close(); os.utime(orphan, (0, 0))
    >>> [os.path.basename(p) for p in remove_stale_temporaries(folder)], os.listdir(folder)
    (['.tmp-abc-model.safetensors'], [])
    """
    now, removed = time.time(), []
    for tmp in sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), TEMP_PREFIX + "*"))):
        if os.path.isfile(tmp) and _is_orphan(tmp, now):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
                removed.append(tmp)
    return removed


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
