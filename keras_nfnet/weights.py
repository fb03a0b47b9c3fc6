"""Pretrained weights of every published row: registry, download, hash check, conversion, cache.

``keras_nfnet.NFNetF0(weights="imagenet")`` calls `load_pretrained_weights`, which

1. returns at once if the converted Keras file is already in the cache;
2. otherwise downloads the published checkpoint (`fetch`: a Keras progress bar, connect and
   read timeouts from `download_timeouts`) to a temporary name in the Keras cache
   (``$KERAS_HOME/models``, ``~/.keras/models`` by default), checks its SHA-256 when one is
   pinned, and only then moves it into place;
3. reads it (safetensors, or the DeepMind pickle through the restricted unpickler), fills every
   weight of the model strictly, and writes the converted ``.weights.h5`` beside the download
   (atomically), so later calls load that file and make no request.

The registry has two tables: `PRETRAINED_WEIGHTS` (DeepMind's F0-F6, keyed ``"F0"`` …, from
timm's safetensors copy by default, docs/checkpoints.md §0.1, or DeepMind's own pickles) and
`PRETRAINED_MODELS` (timm's own rows, keyed by `create_model` name). Parsing safetensors runs no
code. Load the F weights with DeepMind numerics (the `NFNet` default): the arrays are DeepMind's.

**SHA-256 pins.** A hash is pinned where a public record of it is known: the Hugging Face file
pages of ``dm_nfnet_f0``, ``dm_nfnet_f4``, ``nfnet_l0`` and ``eca_nfnet_l0`` (quoted, with their
file commits, in issue 17 of this repository's tracker); their URLs carry that commit as the
revision. The others carry ``None`` and ``main`` and are checked structurally (every tensor
present, every shape right, finite float32); each such download prints its SHA-256. Pin one, and
every later download and cached copy is verified against it, in either of two ways:

* the environment variable ``KERAS_NFNET_SHA256_<VARIANT>_<SOURCE>``, e.g.
  ``KERAS_NFNET_SHA256_F0_TIMM=<64 hex digits>``;
* ``keras_nfnet.weights.pin_sha256("F0", "<64 hex digits>", source="timm")`` in Python.

Example:
>>> from keras_nfnet.weights import PRETRAINED_WEIGHTS, checkpoint_sha256
>>> sorted(PRETRAINED_WEIGHTS)
['F0', 'F1', 'F2', 'F3', 'F4', 'F5', 'F6']
>>> checkpoint_sha256("F0")[:12], checkpoint_sha256("F1") is None
('5e6596290aa0', True)
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

from keras_nfnet.architecture.rows import (
    NFNET_VARIANTS,
    NFNetVariant,
    dm_nfnet_name,
    get_spec,
    get_variant,
    resolve_spec,
)
from keras_nfnet.architecture.spec import NFSpec
from keras_nfnet.atomic import atomic_path, remove_stale_temporaries
from keras_nfnet.convert.checkpoint import (
    check_source,
    load_checkpoint_arrays,
    load_weights_file,
    read_checkpoint,
    save_weights_atomic,
)

HF_URL = "https://huggingface.co/timm/{repo}/resolve/{revision}/model.safetensors"
DEEPMIND_URL = "https://storage.googleapis.com/dm-nfnets/{V}_haiku.npz"


@dataclasses.dataclass(frozen=True)
class PretrainedCheckpoint:
    """One published checkpoint: where each source lives and its pinned SHA-256, if any.

    Attributes:
        variant: the variant name or `NFNetVariant` the arrays fit.
        urls: download URL per source (``"timm"``, ``"deepmind"``).
        sha256: pinned SHA-256 per source; a missing or ``None`` entry means not yet known.
        classes: classifier width of the checkpoint.
        top1: published ImageNet top-1 (DM protocol, docs/checkpoints.md §4), for the docs.
    """

    variant: str | NFNetVariant
    urls: dict[str, str]
    sha256: dict[str, str | None] = dataclasses.field(default_factory=dict)
    classes: int = 1000
    top1: float | None = None


# SHA-256 and file commit of each Hugging Face file where a public record of them is known: the
# file pages, as quoted in issue 17 of this repository's tracker (size in brackets). Never guessed.
_HF_PINS: dict[str, tuple[str, str]] = {
    # dm_nfnet_f0.dm_in1k (286 MB)
    "dm_nfnet_f0": ("7cb8ea6", "5e6596290aa0bce6f2b8569088b6fc6c7c25487a9c99432d356fd6f3caae548d"),
    # dm_nfnet_f4.dm_in1k
    "dm_nfnet_f4": ("371e2d4", "2a888cfb9a20e0fde412c7bd579b60d54db632450389bf059dd1cf8a83d85ff1"),
    # nfnet_l0.ra2_in1k (140 MB)
    "nfnet_l0": ("f5ad926", "fce06fcc634422a28b462ab884e831e8ecabb24673a6309af4724be74adfeec8"),
    # the repo timm/eca_nfnet_l0 (96.6 MB)
    "eca_nfnet_l0": ("be75922", "35d0ec82a306483b79acfa9e0376e7585565900b698b77271456a98d9d7797ed"),
}


def _hf(name: str, repo: str) -> tuple[str, str | None]:
    """``(url, sha256)`` of a timm hub file: pinned revision and hash where known, else main."""
    revision, sha256 = _HF_PINS.get(name, ("main", None))
    return HF_URL.format(repo=repo, revision=revision), sha256


def _published(name: str, top1: float) -> PretrainedCheckpoint:
    # docs/checkpoints.md §1.1 and §2.1. DeepMind's own files have no published SHA-256 (§1.3).
    url, sha256 = _hf(dm_nfnet_name(name), f"dm_nfnet_{name.lower()}.dm_in1k")
    return PretrainedCheckpoint(
        variant=name,
        urls={"timm": url, "deepmind": DEEPMIND_URL.format(V=name)},
        sha256={"timm": sha256, "deepmind": None},
        top1=top1,
    )


# docs/checkpoints.md §0: DeepMind published F0-F6 (F6 trained with SAM); F7 and F+ have no
# weights. top1: timm's results-imagenet.csv (timm's protocol), not re-measured here.
PRETRAINED_WEIGHTS: dict[str, PretrainedCheckpoint] = {
    name: _published(name, top1)
    for name, top1 in zip(
        ("F0", "F1", "F2", "F3", "F4", "F5", "F6"),
        (83.486, 84.702, 85.194, 85.686, 85.836, 86.098, 86.362),
    )
}


def _timm_hub(repo: str, top1: float | None) -> PretrainedCheckpoint:
    name = repo.split(".")[0]
    url, sha256 = _hf(name, repo)
    return PretrainedCheckpoint(
        variant=name, urls={"timm": url}, sha256={"timm": sha256}, top1=top1
    )


# timm's published weights of `NF_SPECS` rows (timm's pretrained_cfg hf_hub_id). top1: timm's
# results-imagenet.csv at the row's test size, not re-measured here.
PRETRAINED_MODELS: dict[str, PretrainedCheckpoint] = {
    "nfnet_l0": _timm_hub("nfnet_l0.ra2_in1k", 82.752),
    "eca_nfnet_l0": _timm_hub("eca_nfnet_l0.ra2_in1k", 82.578),
    "eca_nfnet_l1": _timm_hub("eca_nfnet_l1.ra2_in1k", 84.010),
    "eca_nfnet_l2": _timm_hub("eca_nfnet_l2.ra3_in1k", 84.702),
    "nf_resnet50": _timm_hub("nf_resnet50.ra2_in1k", 80.640),
    "nf_regnet_b1": _timm_hub("nf_regnet_b1.ra2_in1k", 79.306),
    "test_nfnet": _timm_hub("test_nfnet.r160_in1k", None),
}


def pretrained_names() -> set[str]:
    """The `create_model` names ``weights="imagenet"`` serves (the rows with a URL)."""
    return {*PRETRAINED_MODELS, *(dm_nfnet_name(v) for v in PRETRAINED_WEIGHTS)}


def registered_key(spec: NFSpec) -> str | None:
    """The registry name of a spec: a `PRETRAINED_WEIGHTS` key or DeepMind F variant whose spec
    it is (any numerics), a timm row of `PRETRAINED_MODELS`, or None for a custom spec."""
    plain = dataclasses.replace(spec, numerics="deepmind")
    dm = {**{k: e.variant for k, e in PRETRAINED_WEIGHTS.items()}, **NFNET_VARIANTS}
    for key, variant in dm.items():
        if resolve_spec(variant) == plain:
            return key
    return next((n for n in PRETRAINED_MODELS if get_spec(n) == spec), None)


def _dm_variant_of(key) -> str | NFNetVariant | None:
    """The DeepMind F variant a pretrained key names (``"dm_nfnet_f0"``, ``"F0"``, an
    `NFNetVariant`, a `PRETRAINED_WEIGHTS` key), else None (a timm row name)."""
    if isinstance(key, NFNetVariant) or key in PRETRAINED_WEIGHTS:
        return key
    if isinstance(key, str) and key.upper() in NFNET_VARIANTS:
        return key.upper()
    return next((v for v in NFNET_VARIANTS if key == dm_nfnet_name(v)), None)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def registry_entry(name: str) -> tuple[str, PretrainedCheckpoint]:
    """``(key, entry)`` of a registry name: an `NF_SPECS` row of `PRETRAINED_MODELS` as given,
    an F-variant of `PRETRAINED_WEIGHTS` in any case (``"f0"`` is ``"F0"``)."""
    if name in PRETRAINED_MODELS:
        return name, PRETRAINED_MODELS[name]
    key = str(name).upper()
    if key in PRETRAINED_WEIGHTS:
        return key, PRETRAINED_WEIGHTS[key]
    raise ValueError(
        f"No pretrained weights are registered for {name!r}. Registered: "
        f"{', '.join([*PRETRAINED_WEIGHTS, *PRETRAINED_MODELS])}."
    )


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
    _check_classes(entry, include_top, classes)
    return name, entry


def _check_classes(entry: PretrainedCheckpoint, include_top: bool, classes: int) -> None:
    """``include_top=True`` needs the published classifier's width."""
    if include_top and classes != entry.classes:
        raise ValueError(
            f"weights='imagenet' with include_top=True needs classes={entry.classes} (the "
            f"published classifier). Received: classes={classes}. Use include_top=False for "
            "another number of classes."
        )


def checkpoint_sha256(name: str, source: str = "timm") -> str | None:
    """The pinned SHA-256 of a checkpoint: the environment variable first, then the registry."""
    env = os.environ.get(f"KERAS_NFNET_SHA256_{name.upper()}_{check_source(source).upper()}")
    value = env or registry_entry(name)[1].sha256.get(source)
    if value is not None and not _SHA256.fullmatch(value.lower()):
        raise ValueError(f"A SHA-256 is 64 hex digits. Received for {name}/{source}: {value!r}.")
    return None if value is None else value.lower()


def pin_sha256(name: str, sha256: str, source: str = "timm") -> None:
    """Pin the SHA-256 a checkpoint download must have (e.g. one you verified yourself).

    Example:
    >>> pin_sha256("F0", "0" * 64)  # doctest: +SKIP
    """
    key, entry = registry_entry(name)
    if not _SHA256.fullmatch(sha256.lower()):
        raise ValueError(f"A SHA-256 is 64 hex digits. Received: sha256={sha256!r}.")
    table = PRETRAINED_MODELS if key in PRETRAINED_MODELS else PRETRAINED_WEIGHTS
    table[key] = dataclasses.replace(
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
    if name in PRETRAINED_MODELS:
        return f"{name}.safetensors"
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
    row = name if name in PRETRAINED_MODELS else dm_nfnet_name(name)
    return (
        f"Offline, download {registry_entry(name)[1].urls[source]} elsewhere and either pass "
        f"it as weights='FILE' to create_model({row!r}) (it is converted and checked on the "
        f"fly), or convert it once: python -m keras_nfnet.convert --source {source} --variant "
        f"{row} FILE {row}.weights.h5 and pass "
        f"weights='{row}.weights.h5'; or copy it to "
        f"{os.path.join(cache_dir(), 'models', _download_name(name, source))}."
    )


def download_verified(
    url: str,
    target: str | os.PathLike,
    sha256: str | None = None,
    *,
    what: str,
    offline: str = "",
    pin_env: str | None = None,
) -> str:
    """Download ``url`` to ``target`` unless a cached copy (with the pinned hash) is there.

    The download goes to a temporary name beside ``target`` and takes its name only after its
    SHA-256 matched ``sha256`` (when pinned), so a failed, stalled or corrupted download never
    sits in the cache; temporaries that killed runs left in the folder are deleted first.
    ``what`` names the file in messages, ``offline`` says what to do without a network, and
    ``pin_env`` is the variable that pins the hash of an unpinned download. Returns ``target``.
    """
    target = os.fspath(target)
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(folder)
    if os.path.exists(target):
        if sha256 is None or file_sha256(target) == sha256:
            return target
        print(f"Cached {target} does not have the pinned SHA-256 {sha256}; downloading again.")
    timeouts = download_timeouts()
    print(f"Downloading {url}")
    # The download lands in a temporary file beside the target, which takes the target's name
    # only after the hash check passed.
    with atomic_path(target) as tmp:
        try:
            fetch(url, tmp, timeouts)
        except OSError as error:
            raise OSError(
                f"Downloading {what} from {url} failed: {error}. Nothing was "
                f"cached in {folder}. {offline}".rstrip()
            ) from None
        actual = file_sha256(tmp)
        if sha256 is not None and actual != sha256:
            raise ValueError(
                f"SHA-256 mismatch for {url}: expected {sha256}, got {actual}. The "
                "download is corrupted or the file changed upstream; it was deleted, "
                "nothing was cached."
            )
        if sha256 is None:
            hint = ""
            if pin_env:
                hint = f": set {pin_env}={actual} to verify later downloads against it"
            print(f"{url} has SHA-256 {actual}. No hash is pinned for {what}{hint}.")
    return target


def download_checkpoint(name: str, source: str = "timm", url: str | None = None) -> str:
    """The cached checkpoint file of a registry entry, downloaded (and hash-checked) if needed.

    ``url`` downloads from there instead of the registry's URL (a mirror of the same file); the
    cache name and the pinned hash stay the registry entry's. See `download_verified`.
    """
    name, entry = registry_entry(name)
    url = url or entry.urls[check_source(source)]
    return download_verified(
        url,
        os.path.join(cache_dir(), "models", _download_name(name, source)),
        checkpoint_sha256(name, source),
        what=f"{name} weights",
        offline=offline_routes(name, source),
        pin_env=f"KERAS_NFNET_SHA256_{name}_{source.upper()}",
    )


def converted_path(name: str, source: str = "timm", include_top: bool = True) -> str:
    """Where the converted Keras weights of a checkpoint are cached (beside the download).

    The name carries the pinned SHA-256 prefix, so pinning a new hash converts again.
    """
    sha = checkpoint_sha256(name, source)
    base = name if name in PRETRAINED_MODELS else f"nfnet_{name.lower()}"
    stem = f"{base}_{source}" + (f"_{sha[:12]}" if sha else "")
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

    def fill(path: str) -> None:
        arrays = read_checkpoint(source, path, entry.variant, classes=entry.classes)
        load_checkpoint_arrays(model, arrays, source, entry.variant, include_top=include_top)

    return _load_through_cache(model, name, source, include_top, fill)


def check_pretrained_model(name, include_top: bool, classes: int) -> None:
    """Validate ``weights="imagenet"`` for a `create_model` row (or DeepMind F variant) before
    building it."""
    variant = _dm_variant_of(name)
    if variant is not None:
        check_pretrained(variant, include_top, classes)
        return
    if name not in PRETRAINED_MODELS:
        what = "a custom spec" if name is None else repr(name)
        raise ValueError(
            f"No pretrained weights exist for {what}. weights='imagenet' is available for "
            f"{', '.join(PRETRAINED_MODELS)} (and the DeepMind rows dm_nfnet_f0 ... "
            "dm_nfnet_f6); use weights=None or a weights file."
        )
    _check_classes(PRETRAINED_MODELS[name], include_top, classes)


def load_pretrained_model(model: keras.Model, name, include_top: bool = True) -> str:
    """Fill ``model`` (row ``name``, or a DeepMind F variant) with its published weights.

    Same download, hash check, strict conversion and cache as `load_pretrained_weights`.

    Example:
    >>> import keras_nfnet
    >>> model = keras_nfnet.create_model("eca_nfnet_l0", weights="imagenet")  # doctest: +SKIP
    """

    variant = _dm_variant_of(name)
    if variant is not None:
        return load_pretrained_weights(model, variant, include_top=include_top)

    def fill(path: str) -> None:
        arrays = read_checkpoint("timm", path)
        load_checkpoint_arrays(model, arrays, "timm", name, include_top=include_top)

    return _load_through_cache(model, name, "timm", include_top, fill)


def _load_through_cache(model, name: str, source: str, include_top: bool, fill) -> str:
    """Load the converted file if it loads; else download, ``fill(download)`` and convert.

    Every file that fails a check leaves the cache: a download that does not parse or does not
    fit the model exactly (names, shapes, dtypes, finite values) is deleted, and so is a
    converted file that no longer loads, which is then rebuilt from the download.
    """
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
        fill(checkpoint)
    except ValueError as error:
        # A file that fails any check must not stay in the cache and poison every later call.
        os.remove(checkpoint)
        raise ValueError(
            f"{error} The cached file {checkpoint} was deleted; the next call downloads again."
        ) from None
    return save_weights_atomic(model, converted)
