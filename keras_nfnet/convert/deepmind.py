"""DeepMind Haiku NFNet files (``F0_haiku.npz`` …) -> Keras, with a restricted unpickler.

The DeepMind files are dill pickles despite their ``.npz`` name (checkpoints.md §1.2). Unpickling
runs whatever the file names, so they are read only through `RestrictedUnpickler`
(checkpoints.md §1.4): ``find_class`` resolves an explicit allowlist of exact ``(module, name)``
pairs and refuses every other global by name, ``persistent_load`` refuses persistent ids, and
nothing here ever calls ``pickle.load`` or ``dill.load``.

The allowlist covers the forms the files can plausibly take, each synthesized in the tests with
the real libraries and inspected with ``pickletools.genops``:

* plain ``pickle`` of ``{module: {leaf: ndarray}}``, protocols 2-5 (NumPy's ``_reconstruct``,
  ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``; protocol 2 encodes bytes with
  ``_codecs.encode``);
* the same written by ``dill.dump``: dill wraps NumPy's reconstruction in
  ``dill._dill._create_array``;
* JAX arrays (``jax._src.array._reconstruct_array``), as dill or pickle writes them;
* an ``OrderedDict`` container.

NumPy 2 renamed ``numpy.core`` to ``numpy._core``; both spellings of the few names above map to
the installed objects. dill's and JAX's helpers are never imported: each maps to a local stand-in
that rebuilds a plain NumPy array and checks what it is handed. A file naming any other global
(a Haiku mapping type, say) is refused with that global in the message, so the allowlist can be
extended deliberately after inspecting such a file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from collections.abc import Mapping

import keras
import numpy as np

from keras_nfnet.convert.nfnet_map import assign_arrays, nfnet_weight_map
from keras_nfnet.models.nfnet import NFNetVariant

_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray


def _reconstruct(subtype, shape, dtype):
    # numpy's own _reconstruct would build any ndarray subclass the file names; only the base
    # class can reach here through the allowlist, but say so explicitly.
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"Refusing to rebuild an array of type {subtype!r}.")
    return _multiarray._reconstruct(subtype, shape, dtype)


def _dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"Refusing an object dtype ({dtype!r}) in a checkpoint.")
    return dtype


def _frombuffer(buffer, dtype, shape, order):
    return np.frombuffer(buffer, dtype=_dtype(dtype)).reshape(shape, order=order)


def _scalar(dtype, *data):
    return _multiarray.scalar(_dtype(dtype), *data)


def _codecs_encode(text, encoding="latin1"):
    # Protocol 2 stores bytes as ``_codecs.encode(str, "latin1")``; allow nothing else.
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(
            f"Refusing _codecs.encode with {type(text).__name__} and encoding {encoding!r}."
        )
    return text.encode("latin1")


def _rebuild(fun, args, state):
    if fun is not _reconstruct:
        raise pickle.UnpicklingError(f"Refusing to rebuild an array with {fun!r}.")
    array = fun(*args)
    array.__setstate__(state)
    if array.dtype.hasobject:
        raise pickle.UnpicklingError("Refusing an object array in a checkpoint.")
    return array


def _dill_create_array(fun, args, state, npdict=None):
    """Stand-in for ``dill._dill._create_array``: the array, without any ``__dict__`` state."""
    if npdict:
        raise pickle.UnpicklingError("Refusing an array that carries extra attributes.")
    return _rebuild(fun, args, state)


def _jax_reconstruct_array(fun, args, arr_state, aval_state):
    """Stand-in for ``jax._src.array._reconstruct_array``: the host NumPy array.

    JAX passes ``aval_state`` such as ``{"weak_type": False}``; it carries no values.
    """
    if not isinstance(aval_state, dict):
        raise pickle.UnpicklingError(f"Unexpected JAX array state {aval_state!r}.")
    return _rebuild(fun, args, arr_state)


_NUMPY_CORE = ("numpy.core", "numpy._core")

# Exact (module, name) -> object. Nothing else is ever resolved (checkpoints.md §1.4).
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("dill._dill", "_create_array"): _dill_create_array,
    ("jax._src.array", "_reconstruct_array"): _jax_reconstruct_array,
    **{(f"{core}.multiarray", "_reconstruct"): _reconstruct for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _scalar for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): _frombuffer for core in _NUMPY_CORE},
}


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that resolves only `ALLOWED_GLOBALS` and no persistent ids.

    Example:
    >>> import io, pickle
    >>> import numpy as np
    >>> data = pickle.dumps({"NFNet/~/linear": {"b": np.zeros(3, "float32")}})
    >>> RestrictedUnpickler(io.BytesIO(data)).load()["NFNet/~/linear"]["b"].shape
    (3,)
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(print))).load()
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: Refusing pickle global 'builtins.print': not in the allowlist ...
    """

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"Refusing pickle global '{module}.{name}': not in the allowlist of "
                "keras_nfnet.convert.deepmind.ALLOWED_GLOBALS (arrays and mappings only). "
                "The file may be malicious, or a format this converter does not know yet."
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"Refusing persistent id {pid!r} in a checkpoint.")


def flatten_params(tree: Mapping) -> dict[str, np.ndarray]:
    """``{module: {leaf: array}}`` -> ``{"module:leaf": float32 array}`` (`WeightEntry.dm_key`)."""
    if not isinstance(tree, Mapping):
        raise ValueError(
            f"A DeepMind NFNet file holds a mapping {{module: {{leaf: array}}}}; "
            f"this one holds a {type(tree).__name__}."
        )
    flat: dict[str, np.ndarray] = {}
    for module, leaves in tree.items():
        if not isinstance(leaves, Mapping):
            raise ValueError(
                f"Module {module!r} holds a {type(leaves).__name__}, not a mapping of leaves."
            )
        for leaf, value in leaves.items():
            array = np.asarray(value)
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"Tensor '{module}:{leaf}' has dtype {array.dtype}, not float.")
            flat[f"{module}:{leaf}"] = array.astype("float32")
    return flat


def read_deepmind(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a DeepMind NFNet file with `RestrictedUnpickler`; keys are ``"module:leaf"``.

    Example:
    >>> import pickle, tempfile, numpy as np
    >>> f = tempfile.NamedTemporaryFile(suffix=".npz", delete=False)
    >>> pickle.dump({"NFNet/~/linear": {"b": np.ones(2, "float32")}}, f); f.close()
    >>> read_deepmind(f.name)
    {'NFNet/~/linear:b': array([1., 1.], dtype=float32)}
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        tree = RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"{os.fspath(path)!r}: {error}") from error
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable DeepMind NFNet pickle (truncated or "
            f"corrupted?): {type(error).__name__}: {error}"
        ) from error
    return flatten_params(tree)


def load_deepmind_arrays(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    variant: str | NFNetVariant,
    include_top: bool = True,
) -> None:
    """Load DeepMind arrays (keys ``"module:leaf"``, from `read_deepmind`) into an NFNet.

    No re-layout is needed: DeepMind kernels are already HWIO / (in, out) (checkpoints.md §1.9).
    With ``include_top=False`` the classifier ``NFNet/~/linear`` is dropped; every other key
    must match exactly (`assign_arrays`).
    """
    if not include_top:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("NFNet/~/linear:")}
    assign_arrays(model, nfnet_weight_map(variant, include_top=include_top), arrays)
