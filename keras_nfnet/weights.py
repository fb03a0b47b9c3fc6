"""Pretrained NFNet-F0…F6 weights: registry, download, hash check, one-time conversion, cache.

``keras_nfnet.NFNetF0(weights="imagenet")`` calls `load_pretrained_weights`, which

1. returns at once if the converted Keras file is already in the cache;
2. otherwise downloads the published checkpoint (`fetch`: a Keras progress bar, connect and
   read timeouts from `download_timeouts`) to a temporary name in the Keras cache
   (``$KERAS_HOME/models``, ``~/.keras/models`` by default), checks its SHA-256 when one is
   pinned, and only then moves it into place;
3. reads it (safetensors, or the DeepMind pickle through the restricted unpickler), fills every
   weight of the model strictly, and writes the converted ``.weights.h5`` beside the download
   (atomically), so later calls load that file and make no request.

The default source is timm's safetensors copy of the DeepMind weights (checkpoints.md §0.1):
parsing it runs no code. Load it with DeepMind numerics (the `NFNet` default): the arrays are
DeepMind's own.

**No file hash is known yet.** Neither the timm hub files nor the DeepMind files have a SHA-256
confirmed from a trustworthy observation (checkpoints.md §1.3, §2.6), so the registry below
carries ``None`` and downloads are checked only structurally (every tensor present, every shape
right, finite float32). Each download prints its SHA-256. Pin one, and every later download and
cached copy is verified against it, in either of two ways:

* the environment variable ``KERAS_NFNET_SHA256_<VARIANT>_<SOURCE>``, e.g.
  ``KERAS_NFNET_SHA256_F0_TIMM=<64 hex digits>``;
* ``keras_nfnet.weights.pin_sha256("F0", "<64 hex digits>", source="timm")`` in Python.

Example:
>>> from keras_nfnet.weights import PRETRAINED_WEIGHTS, checkpoint_sha256
>>> sorted(PRETRAINED_WEIGHTS)
['F0', 'F1', 'F2', 'F3', 'F4', 'F5', 'F6']
>>> checkpoint_sha256("F0") is None  # not pinned: no trustworthy hash is known yet
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import math
import os
import re
import urllib.error
import urllib.request

import keras

from keras_nfnet.atomic import atomic_path, remove_stale_temporaries
from keras_nfnet.convert.checkpoint import (
    check_source,
    load_checkpoint_arrays,
    read_checkpoint,
    save_weights_atomic,
)
from keras_nfnet.models.common import load_weights_file
from keras_nfnet.models.nfnet import NFNET_VARIANTS, NFNetVariant, get_variant

TIMM_URL = "https://huggingface.co/timm/dm_nfnet_{v}.dm_in1k/resolve/main/model.safetensors"
DEEPMIND_URL = "https://storage.googleapis.com/dm-nfnets/{V}_haiku.npz"


@dataclasses.dataclass(frozen=True)
class PretrainedCheckpoint:
    """One published checkpoint: where each source lives and its pinned SHA-256, if any.

    Attributes:
        variant: the variant name or `NFNetVariant` the arrays fit.
        urls: download URL per source (``"timm"``, ``"deepmind"``).
        sha256: pinned SHA-256 per source; a missing or ``None`` entry means not yet known.
        classes: classifier width of the checkpoint.
        top1: published ImageNet top-1 (DM protocol, checkpoints.md §4), for the docs.
    """

    variant: str | NFNetVariant
    urls: dict[str, str]
    sha256: dict[str, str | None] = dataclasses.field(default_factory=dict)
    classes: int = 1000
    top1: float | None = None


def _published(name: str, top1: float) -> PretrainedCheckpoint:
    # checkpoints.md §1.1 and §2.1. SHA-256: none confirmed yet (§1.3, §2.6); see pin_sha256.
    return PretrainedCheckpoint(
        variant=name,
        urls={"timm": TIMM_URL.format(v=name.lower()), "deepmind": DEEPMIND_URL.format(V=name)},
        sha256={"timm": None, "deepmind": None},
        top1=top1,
    )


# checkpoints.md §0: DeepMind published F0-F6 (F6 trained with SAM); F7 and F+ have no weights.
PRETRAINED_WEIGHTS: dict[str, PretrainedCheckpoint] = {
    name: _published(name, top1)
    for name, top1 in zip(
        ("F0", "F1", "F2", "F3", "F4", "F5", "F6"), (83.6, 84.7, 85.1, 85.7, 85.9, 86.0, 86.5)
    )
}

_SHA256 = re.compile(r"[0-9a-f]{64}")


def find_checkpoint(variant: str | NFNetVariant) -> tuple[str, PretrainedCheckpoint]:
    """The registry entry for a variant name or `NFNetVariant`, or a ValueError saying why not."""
    if isinstance(variant, NFNetVariant):
        for name, entry in PRETRAINED_WEIGHTS.items():
            if get_variant(entry.variant) == variant:
                return name, entry
        raise ValueError(
            "No pretrained weights exist for this custom NFNetVariant. "
            f"weights='imagenet' is available for {', '.join(PRETRAINED_WEIGHTS)}."
        )
    key = str(variant).upper()
    if key in PRETRAINED_WEIGHTS:
        return key, PRETRAINED_WEIGHTS[key]
    if key in NFNET_VARIANTS:
        raise ValueError(
            f"No pretrained weights exist for NFNet-{key}: DeepMind published F0-F6 only "
            f"(F7 and the plus variants were never released). weights='imagenet' is available "
            f"for {', '.join(PRETRAINED_WEIGHTS)}; use weights=None or a weights file."
        )
    get_variant(variant)  # raises the unknown-variant error
    raise AssertionError("unreachable")


def check_pretrained(
    variant: str | NFNetVariant, include_top: bool, classes: int
) -> tuple[str, PretrainedCheckpoint]:
    """Validate ``weights="imagenet"`` against the other builder arguments (before building)."""
    name, entry = find_checkpoint(variant)
    if include_top and classes != entry.classes:
        raise ValueError(
            f"weights='imagenet' with include_top=True needs classes={entry.classes} (the "
            f"published classifier). Received: classes={classes}. Use include_top=False for "
            "another number of classes."
        )
    return name, entry


def checkpoint_sha256(name: str, source: str = "timm") -> str | None:
    """The pinned SHA-256 of a checkpoint: the environment variable first, then the registry."""
    env = os.environ.get(f"KERAS_NFNET_SHA256_{name.upper()}_{check_source(source).upper()}")
    value = env or PRETRAINED_WEIGHTS[name.upper()].sha256.get(source)
    if value is not None and not _SHA256.fullmatch(value.lower()):
        raise ValueError(f"A SHA-256 is 64 hex digits. Received for {name}/{source}: {value!r}.")
    return None if value is None else value.lower()


def pin_sha256(name: str, sha256: str, source: str = "timm") -> None:
    """Pin the SHA-256 a checkpoint download must have (e.g. one you verified yourself).

    Example:
    >>> pin_sha256("F0", "0" * 64)  # doctest: +SKIP
    """
    key = name.upper()
    find_checkpoint(key)
    if not _SHA256.fullmatch(sha256.lower()):
        raise ValueError(f"A SHA-256 is 64 hex digits. Received: sha256={sha256!r}.")
    entry = PRETRAINED_WEIGHTS[key]
    PRETRAINED_WEIGHTS[key] = dataclasses.replace(
        entry, sha256={**entry.sha256, check_source(source): sha256.lower()}
    )


def cache_dir() -> str:
    """The Keras cache root: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` if the home
    folder is read-only), as Keras itself resolves it."""
    home = os.path.expanduser("~")
    return os.environ.get("KERAS_HOME") or os.path.join(
        home if os.access(home, os.W_OK) else "/tmp", ".keras"
    )


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_name(name: str, source: str) -> str:
    return f"dm_nfnet_{name.lower()}.safetensors" if source == "timm" else f"{name}_haiku.npz"


# Connect covers the TCP and TLS handshake; read bounds every wait for bytes (the response
# headers and each block of the body), so a server that stalls at any point is given up on.
DEFAULT_CONNECT_TIMEOUT_S = 30.0
DEFAULT_READ_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_ENV = "KERAS_NFNET_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "KERAS_NFNET_READ_TIMEOUT"
_CHUNK = 1 << 20


def download_timeouts() -> tuple[float, float]:
    """``(connect, read)`` timeouts in seconds for weight downloads.

    The defaults are `DEFAULT_CONNECT_TIMEOUT_S` and `DEFAULT_READ_TIMEOUT_S`; the environment
    variables ``KERAS_NFNET_CONNECT_TIMEOUT`` and ``KERAS_NFNET_READ_TIMEOUT`` (seconds, > 0)
    override them.

    Example:
    >>> download_timeouts()
    (30.0, 60.0)
    """
    values = []
    for env, default in (
        (CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S),
        (READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT_S),
    ):
        raw = os.environ.get(env)
        if raw is None or not raw.strip():
            values.append(default)
            continue
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{env} must be a number of seconds > 0. Received: {env}={raw!r}.")
        values.append(value)
    return values[0], values[1]


def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    """A urllib opener (redirects, proxies as usual) whose sockets wait at most ``read_timeout``
    for each read once connected; the connect timeout is the request's own ``timeout``."""

    class HTTPConnection(http.client.HTTPConnection):
        def connect(self):
            super().connect()
            self.sock.settimeout(read_timeout)

    class HTTPSConnection(http.client.HTTPSConnection):
        def connect(self):
            super().connect()
            self.sock.settimeout(read_timeout)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(HTTPConnection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(HTTPSConnection, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def fetch(url: str, path: str | os.PathLike, timeouts: tuple[float, float] | None = None) -> int:
    """Download ``url`` into ``path`` with a Keras progress bar; return the number of bytes.

    ``timeouts`` is ``(connect, read)`` in seconds (default `download_timeouts`). Raises
    ``OSError`` on an HTTP error, a timeout, or a body shorter than its ``Content-Length``.
    """
    connect_timeout, read_timeout = timeouts or download_timeouts()
    request = urllib.request.Request(url, headers={"User-Agent": "keras-nfnet"})
    try:
        response = _opener(read_timeout).open(request, timeout=connect_timeout)
    except (urllib.error.URLError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise OSError(
                f"no answer within the timeouts ({connect_timeout:g} s to connect, "
                f"{read_timeout:g} s for the response; set {CONNECT_TIMEOUT_ENV} / "
                f"{READ_TIMEOUT_ENV} to change them)"
            ) from None
        raise OSError(str(error)) from None
    with response, open(path, "wb") as file:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        progress = keras.utils.Progbar(total, unit_name="B")
        received = 0
        while True:
            try:
                chunk = response.read(_CHUNK)
            except TimeoutError:
                raise OSError(
                    f"the server stalled: no data for {read_timeout:g} s after {received} bytes "
                    f"(set {READ_TIMEOUT_ENV} to wait longer)"
                ) from None
            except http.client.IncompleteRead as error:
                received += len(error.partial)
                break  # reported below with the byte counts
            if not chunk:
                break
            file.write(chunk)
            received += len(chunk)
            progress.update(received)
    if total is not None and received != total:
        raise OSError(f"the connection closed after {received} of {total} bytes")
    return received


def offline_routes(name: str, source: str) -> str:
    """What to do when the weights cannot be downloaded (named in every download error)."""
    return (
        f"Offline, download {PRETRAINED_WEIGHTS[name].urls[source]} elsewhere and either convert "
        f"it: python -m keras_nfnet.convert --source {source} --variant {name} FILE "
        f"nfnet_{name.lower()}.weights.h5, then pass weights='nfnet_{name.lower()}.weights.h5'; "
        f"or copy it to {os.path.join(cache_dir(), 'models', _download_name(name, source))}."
    )


def download_checkpoint(name: str, source: str = "timm") -> str:
    """The cached checkpoint file of a registry entry, downloaded (and hash-checked) if needed.

    A download goes to a temporary name and is moved into place only after its hash matched
    (when one is pinned), so a failed, stalled or corrupted download never sits in the cache.
    Temporaries that killed runs left in the cache folder are deleted first.
    """
    name = name.upper()
    entry = PRETRAINED_WEIGHTS[name]
    url, expected = entry.urls[check_source(source)], checkpoint_sha256(name, source)
    folder = os.path.join(cache_dir(), "models")
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    target = os.path.join(folder, _download_name(name, source))
    if os.path.exists(target):
        if expected is None or file_sha256(target) == expected:
            return target
        print(f"Cached {target} does not have the pinned SHA-256 {expected}; downloading again.")
    timeouts = download_timeouts()
    print(f"Downloading {url}")
    # The download lands in a temporary file beside the target, which takes the target's name
    # only after the hash check passed.
    with atomic_path(target) as tmp:
        try:
            fetch(url, tmp, timeouts)
        except OSError as error:
            raise OSError(
                f"Downloading NFNet-{name} weights from {url} failed: {error}. Nothing was "
                f"cached in {folder}. {offline_routes(name, source)}"
            ) from None
        actual = file_sha256(tmp)
        if expected is not None and actual != expected:
            raise ValueError(
                f"SHA-256 mismatch for {url}: expected {expected}, got {actual}. The "
                "download is corrupted or the file changed upstream; it was deleted, "
                "nothing was cached."
            )
        if expected is None:
            print(
                f"{url} has SHA-256 {actual}. No hash is pinned for NFNet-{name} "
                f"({source}): set KERAS_NFNET_SHA256_{name}_{source.upper()}={actual} to "
                "verify later downloads against it."
            )
    return target


def converted_path(name: str, source: str = "timm", include_top: bool = True) -> str:
    """Where the converted Keras weights of a checkpoint are cached (beside the download).

    The name carries the pinned SHA-256 prefix, so pinning a new hash converts again.
    """
    sha = checkpoint_sha256(name, source)
    stem = f"nfnet_{name.lower()}_{source}" + (f"_{sha[:12]}" if sha else "")
    stem += "" if include_top else "_notop"
    return os.path.join(cache_dir(), "models", f"{stem}.weights.h5")


def load_pretrained_weights(
    model: keras.Model,
    variant: str | NFNetVariant,
    include_top: bool = True,
    source: str = "timm",
) -> str:
    """Fill ``model`` (an NFNet of ``variant``) with the published ImageNet weights.

    Returns the path of the converted Keras weights file it loaded or wrote. Every file that
    fails a check leaves the cache: a download that does not parse or does not fit the model
    exactly (names, shapes, dtypes, finite values) is deleted, and so is a converted file that
    no longer loads, which is then rebuilt from the download. The next call downloads again.

    Example:
    >>> import keras_nfnet
    >>> model = keras_nfnet.NFNetF0(weights="imagenet")  # doctest: +SKIP
    """
    name, entry = find_checkpoint(variant)
    converted = converted_path(name, source, include_top)
    if os.path.exists(converted):
        try:
            load_weights_file(model, converted)
            return converted
        except ValueError as error:
            print(f"{error}\nDeleting the damaged cached file and converting again.")
            os.remove(converted)
    checkpoint = download_checkpoint(name, source)
    try:
        arrays = read_checkpoint(source, checkpoint, variant, classes=entry.classes)
        load_checkpoint_arrays(model, arrays, source, variant, include_top=include_top)
    except ValueError as error:
        # A file that fails any check must not stay in the cache and poison every later call.
        os.remove(checkpoint)
        raise ValueError(
            f"{error} The cached file {checkpoint} was deleted; the next call downloads again."
        ) from None
    return save_weights_atomic(model, converted)
