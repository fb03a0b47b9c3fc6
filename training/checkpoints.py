"""The run checkpoint: model and optimizer variables plus the loop state, written atomically.

``model_dir/checkpoint.npz`` holds every model variable (RNG states of dropout and stochastic
depth included), every optimizer variable (step counter, momentum, EMA) and a JSON ``state``
(loop, best metric, variable paths). It is written to a temporary file beside it and moved into
place (`keras_nfnet.atomic`), so a process killed at any moment leaves the previous complete
checkpoint; `load_checkpoint` checks every count and shape before it assigns anything.
"""

from __future__ import annotations

import io
import json
import zipfile

import keras
import numpy as np

from keras_nfnet.atomic import atomic_path, atomic_write_bytes
from training.configs import ConfigError

CHECKPOINT = "checkpoint.npz"


class CheckpointError(ConfigError):
    """``checkpoint.npz`` cannot be read, or was written by a run whose model or optimizer does
    not match the current one."""


# ----------------------------------------------------------------------------- files


def save_keras_atomic(model: keras.Model, path: str) -> None:
    """`model.save(path)`, atomically (`keras_nfnet.atomic`)."""
    with atomic_path(path) as tmp:
        model.save(tmp, overwrite=True)


def _model_variables(model: keras.Model) -> list:
    # `variables` includes the RNG states of dropout / stochastic depth (deterministic resume).
    return list(model.variables)


def save_checkpoint(path: str, model, optimizer, state: dict) -> None:
    """Atomically write model and optimizer variables and a JSON ``state`` to ``path`` (.npz)."""
    arrays = {}
    for prefix, variables in (("model", _model_variables(model)), ("opt", optimizer.variables)):
        for i, v in enumerate(variables):
            arrays[f"{prefix}/{i:05d}"] = np.asarray(keras.ops.convert_to_numpy(v.value))
    paths = {
        "model": [v.path for v in _model_variables(model)],
        "opt": [v.path for v in optimizer.variables],
    }
    arrays["state"] = np.frombuffer(json.dumps({**state, "paths": paths}).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


# What np.load and reading an entry of a damaged .npz raise.
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile)


def _unreadable(path: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {path!r} cannot be read: {why}. It is truncated or corrupt (a write killed "
        "by a full disk, a copy cut short?). Checkpoints are replaced atomically, so no earlier "
        "one is left: delete the file to restart the run from scratch, or restore a backup copy "
        "of it."
    )


def _read_state(f, path: str) -> dict:
    try:
        state = json.loads(bytes(f["state"]).decode())
    except KeyError:
        raise _unreadable(path, "it has no 'state' entry") from None
    except ValueError as err:  # also UnicodeDecodeError and json.JSONDecodeError
        raise _unreadable(path, f"its 'state' entry is not valid JSON ({err})") from err
    except _READ_ERRORS as err:
        raise _unreadable(path, f"its 'state' entry: {err}") from err
    paths = state.get("paths") if isinstance(state, dict) else None
    if (
        not isinstance(paths, dict)
        or not all(isinstance(paths.get(k), list) for k in ("model", "opt"))
        or not isinstance(state.get("loop"), int)
    ):
        raise _unreadable(path, "its 'state' entry lacks the loop or the variable paths")
    return state


def _entry_shapes(f) -> dict[str, tuple[int, ...]]:
    """The shape of every array in an open .npz, from the headers (no data is read)."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    shapes = {}
    for member in f.zip.namelist():
        name = member.removesuffix(".npy")
        with f.zip.open(member) as fp:
            reader = readers.get(np.lib.format.read_magic(fp))
            shapes[name] = tuple(reader(fp)[0]) if reader else tuple(f[name].shape)
    return shapes


def load_checkpoint(path: str, model, optimizer) -> dict:
    """Restore what `save_checkpoint` wrote (the optimizer must be built); return the state.

    The variable counts and every saved shape are checked against ``model`` and ``optimizer``
    before any variable is assigned.

    Raises:
        CheckpointError: ``path`` cannot be read (not an .npz, truncated, an entry missing, a
            state that is not the JSON `save_checkpoint` writes), naming the file and what to do;
            or it was written by a different configuration (a variable count or shape differs).
    """
    groups = (("model", _model_variables(model)), ("opt", optimizer.variables))
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array, not an .npz archive")
    except _READ_ERRORS as err:
        raise _unreadable(path, str(err) or type(err).__name__) from err
    with f:
        state = _read_state(f, path)
        try:
            shapes = _entry_shapes(f)
        except _READ_ERRORS as err:
            raise _unreadable(path, str(err)) from err
        for prefix, variables in groups:
            saved_paths = state["paths"][prefix]
            if len(saved_paths) != len(variables):
                raise CheckpointError(
                    f"Checkpoint {path!r} holds {len(saved_paths)} {prefix} variables, the "
                    f"current run has {len(variables)}: it was written by a different "
                    "configuration. Use a new model_dir or the original config."
                )
            for i, v in enumerate(variables):
                key = f"{prefix}/{i:05d}"
                if key not in shapes:
                    raise _unreadable(path, f"its entry {key!r} is missing")
                if shapes[key] != tuple(v.shape):
                    raise CheckpointError(
                        f"Checkpoint {path!r}: variable {saved_paths[i]!r} has shape "
                        f"{shapes[key]}, the current model's {v.path!r} has {tuple(v.shape)}: "
                        "it was written by a different configuration. Use a new model_dir or "
                        "the original config."
                    )
        for prefix, variables in groups:
            for i, v in enumerate(variables):
                key = f"{prefix}/{i:05d}"
                try:
                    value = f[key]
                except _READ_ERRORS as err:
                    raise _unreadable(path, f"its entry {key!r}: {err}") from err
                v.assign(value)
    return state
