"""DeepMind Haiku NFNet files (``F0_haiku.npz`` …) -> Keras, with a restricted, bounded unpickler.

The DeepMind files are dill pickles despite their ``.npz`` name (docs/checkpoints.md §1.2).
Unpickling runs whatever the file names, so they are read only through `RestrictedUnpickler`
(docs/checkpoints.md §1.4): ``find_class`` resolves an explicit allowlist of exact
``(module, name)`` pairs and refuses every other global by name, ``persistent_load`` refuses
persistent ids, and nothing here ever calls ``pickle.load`` or ``dill.load``.

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
the same stand-ins. No allowlisted name resolves to a NumPy, dill or JAX function: each maps to
a local stand-in that checks what it is handed and rebuilds a plain NumPy array (or scalar, or
dtype) itself. A file naming any other global (a Haiku mapping type, say) is refused with that
global in the message, so the allowlist can be extended deliberately after inspecting such a file.

An allowlist alone does not bound what a file can make the reader do, so reading is also bounded
(every refusal is a `PickleLimitError`, a ``ValueError`` naming the limit and the value found):

* **Before anything is unpickled**, `scan_pickle` walks the opcodes with ``pickletools.genops``
  (nothing runs) and simulates the stack, the marks and the memo: at most `MAX_PICKLE_OPS`
  opcodes; containers (tuples, lists, dicts, sets, frozensets, built objects) nested at most
  `MAX_NESTING_DEPTH` deep, counting containers filled later through memo references, so cycles
  are refused too; memo indices below `MAX_PICKLE_OPS`; dict keys and set elements only strings
  and numbers (hashing a deep or shared tuple key can crash or stall the interpreter); no item
  assignment into anything but containers and built objects; frames no longer than the data
  left. The scan is iterative and linear in the stream.
* **Every array's shape is checked before it is allocated**, inside the stand-ins for
  ``ndarray``, ``_reconstruct``, ``_frombuffer``, ``scalar`` and the array ``__setstate__`` that
  pickle's BUILD calls (dill's and JAX's wrappers go through the same): at most
  `MAX_ARRAY_NDIM` dimensions and `DEFAULT_MAX_ARRAY_ELEMENTS` elements per array, and a running
  total of array bytes. With an *expected layout* (``{"module:leaf": shape}``, e.g.
  `expected_deepmind_shapes`), only the layout's shapes are accepted, each no more often than the
  layout has it, and the total may not exceed the layout's float32 bytes plus
  `ARRAY_SLACK_BYTES`. Without one, the total may not exceed `DEFAULT_MAX_TOTAL_BYTES` nor what
  the stream can encode (its size plus `ARRAY_SLACK_BYTES`: real files carry every byte of their
  arrays, so anything more is shared references being multiplied). Bytes made by
  ``_codecs.encode`` are bounded by the stream size the same way.
* `read_deepmind` refuses a file larger than `DEFAULT_MAX_FILE_BYTES`, or, with a layout, than
  twice the layout's float32 bytes plus `LAYOUT_FILE_SLACK_BYTES`; `flatten_params` refuses
  leaves that are not NumPy arrays or scalars (a list is never converted) and, with a layout, any
  missing, extra or mis-shaped key.

Memory is therefore bounded by the file itself, the arrays the bounds admit, and one float32 copy
of them (`flatten_params`).
"""

from __future__ import annotations

import collections
import contextvars
import io
import math
import os
import pickle
import pickletools
import re
from collections.abc import Mapping, Sequence

import numpy as np

_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray

MAX_PICKLE_OPS = 1_000_000  # a real F6 file has ~40 opcodes per array, ~1,000 arrays
MAX_NESTING_DEPTH = 32  # real files nest {module: {leaf: array}} about 7 deep, dtypes included
MAX_ARRAY_NDIM = 8  # real arrays have at most 4 dimensions (HWIO kernels)
DEFAULT_MAX_ARRAY_ELEMENTS = 2**28  # 1 GiB of float32; the largest real array has ~8M elements
DEFAULT_MAX_TOTAL_BYTES = 4 * 2**30  # all arrays of one stream without a layout (F6: 1.75 GB)
DEFAULT_MAX_FILE_BYTES = 4 * 2**30  # the largest file read without a layout
ARRAY_SLACK_BYTES = 2**20  # over the layout's bytes, or over the stream size
LAYOUT_FILE_SLACK_BYTES = 16 * 2**20  # a file may be 2x its layout's bytes plus this
_LAYOUT_ITEMSIZE = 4  # both sources publish float32 arrays (nfnet_map.CHECKPOINT_DTYPE)


class PickleLimitError(pickle.UnpicklingError, ValueError):
    """A pickle that breaks one of this module's bounds; the message names the limit."""


def _int(n: int) -> str:
    # Formatting an int of more than 4,300 digits raises; attacker values can be that long.
    return f"{n:,}" if n.bit_length() <= 128 else f"an integer of {n.bit_length()} bits"


# --- the pre-scan ---------------------------------------------------------------------------


class _Node:
    """A container or built object in the simulated stack: its nesting depth and its holders."""

    __slots__ = ("depth", "parents")

    def __init__(self) -> None:
        self.depth = 1
        self.parents: list[_Node] | None = None


_KEY = object()  # a str, bytes, number, bool or None: depth 0, safe to hash
_LEAF = object()  # any other value that holds nothing: a global, a bytearray, a buffer

_KEY_OPS = frozenset(
    [
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "FLOAT",
        "BINFLOAT",
    ]
)
_LEAF_OPS = frozenset(["BYTEARRAY8", "NEXT_BUFFER", "GLOBAL", "PERSID", "EXT1", "EXT2", "EXT4"])


class _Scan:
    def __init__(self, size: int, max_ops: int, max_depth: int) -> None:
        self.size, self.max_ops, self.max_depth = size, max_ops, max_depth
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.pos = 0

    def fail(self, what: str) -> PickleLimitError:
        return PickleLimitError(f"Refusing the pickle: {what} (opcode at byte {self.pos}).")

    def pop(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise self.fail("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            raise self.fail("no MARK to pop to")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self):
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack[-1]

    def keys_only(self, items: Sequence, what: str) -> None:
        if any(item is not _KEY for item in items):
            raise self.fail(
                f"a {what} that is a container or built object; checkpoint keys must be "
                "strings or numbers"
            )

    def new(self, children: Sequence) -> _Node:
        node = _Node()
        self.link(node, children)
        return node

    def link(self, node, children: Sequence) -> None:
        """``children`` now live in ``node``: record it and raise the depths above."""
        if node.__class__ is not _Node:
            raise self.fail("an item added to something that is not a container")
        depth = 0
        for child in children:
            if child.__class__ is _Node:
                if child.parents is None:
                    child.parents = [node]
                else:
                    child.parents.append(node)
                depth = max(depth, child.depth)
        self.deepen(node, depth + 1)

    def deepen(self, node: _Node, depth: int) -> None:
        # Iterative; each node's depth only grows and stays <= max_depth, so the total work is
        # at most max_depth times the number of container-to-container links.
        if depth <= node.depth:
            return
        self.check_depth(depth)
        node.depth = depth
        work = [node]
        while work:
            child = work.pop()
            depth = child.depth + 1
            for parent in child.parents or ():
                if depth > parent.depth:
                    self.check_depth(depth)
                    parent.depth = depth
                    work.append(parent)

    def check_depth(self, depth: int) -> None:
        if depth > self.max_depth:
            raise self.fail(
                f"containers nest {depth} deep, above the limit of {self.max_depth} "
                "(MAX_NESTING_DEPTH)"
            )

    def put(self, index) -> None:
        if not isinstance(index, int) or not 0 <= index < self.max_ops:
            raise self.fail(f"memo index {_int(index)} outside the limit of 0..{self.max_ops - 1}")
        self.memo[index] = self.top()

    def step(self, name: str, arg) -> bool:
        stack = self.stack
        if name in _KEY_OPS:
            stack.append(_KEY)
        elif name in _LEAF_OPS:
            stack.append(_LEAF)
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"):
            stack.append(_Node())
        elif name == "MARK":
            self.marks.append(len(stack))
        elif name in ("LIST", "TUPLE"):
            stack.append(self.new(self.pop_mark()))
        elif name == "DICT":
            items = self.pop_mark()
            if len(items) % 2:
                raise self.fail("odd number of items for DICT")
            self.keys_only(items[0::2], "dict key")
            stack.append(self.new(items))
        elif name == "FROZENSET":
            items = self.pop_mark()
            self.keys_only(items, "set element")
            stack.append(self.new(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = [self.pop() for _ in range(int(name[-1]))]
            stack.append(self.new(items))
        elif name == "APPEND":
            value = self.pop()
            self.link(self.top(), [value])
        elif name == "APPENDS":
            items = self.pop_mark()
            self.link(self.top(), items)
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            self.keys_only([key], "dict key")
            self.link(self.top(), [key, value])
        elif name == "SETITEMS":
            items = self.pop_mark()
            if len(items) % 2:
                raise self.fail("odd number of items for SETITEMS")
            self.keys_only(items[0::2], "dict key")
            self.link(self.top(), items)
        elif name == "ADDITEMS":
            items = self.pop_mark()
            self.keys_only(items, "set element")
            self.link(self.top(), items)
        elif name == "BUILD":
            state = self.pop()
            self.link(self.top(), [state])
        elif name == "STACK_GLOBAL":
            self.pop()
            self.pop()
            stack.append(_LEAF)
        elif name in ("REDUCE", "NEWOBJ"):
            args = self.pop()
            self.pop()
            stack.append(self.new([args]))
        elif name == "NEWOBJ_EX":
            kwargs, args = self.pop(), self.pop()
            self.pop()
            stack.append(self.new([args, kwargs]))
        elif name in ("OBJ", "INST"):
            stack.append(self.new(self.pop_mark()))
        elif name == "BINPERSID":
            self.pop()
            stack.append(_LEAF)
        elif name == "POP":
            if self.marks and self.marks[-1] == len(stack):
                self.marks.pop()
            else:
                self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            if len(stack) <= (self.marks[-1] if self.marks else 0):
                raise self.fail("stack underflow")
            stack.append(stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.put(arg)
        elif name == "MEMOIZE":
            self.put(len(self.memo))
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise self.fail(f"memo index {_int(arg)} read before it is written")
            stack.append(self.memo[arg])
        elif name == "READONLY_BUFFER":
            self.top()
        elif name == "FRAME":
            if arg > self.size - self.pos - 9:
                raise self.fail(f"a frame of {_int(arg)} bytes, longer than the data left")
        elif name == "STOP":
            self.pop()
            return True
        elif name != "PROTO":
            raise self.fail(f"unknown opcode {name}")
        return False


def scan_pickle(
    data: bytes, max_ops: int = MAX_PICKLE_OPS, max_depth: int = MAX_NESTING_DEPTH
) -> int:
    """Check a pickle stream's structure without running it; return its length in bytes.

    Raises `PickleLimitError` naming the limit for more than ``max_ops`` opcodes, containers
    nested deeper than ``max_depth`` (cycles included), an out-of-range memo index, a dict key
    or set element that is not a string or number, an item added to something that is not a
    container, or a malformed stream.

    Example:
    >>> import pickle
    >>> scan_pickle(pickle.dumps({"NFNet/~/linear": {"b": [1.0, 2.0]}}, protocol=2))
    63
    >>> scan_pickle(b"\\x80\\x02}" + b"N" + b"\\x85" * 40 + b"Ns.")  # a 40-deep tuple key
    Traceback (most recent call last):
    ...
    keras_nfnet.convert.deepmind.PickleLimitError: Refusing the pickle: containers nest 33 deep,
    above the limit of 32 (MAX_NESTING_DEPTH) (opcode at byte 36).
    """
    scan = _Scan(len(data), max_ops, max_depth)
    ops = pickletools.genops(io.BytesIO(data))
    count = 0
    while True:
        try:
            op, arg, pos = next(ops)
        except StopIteration:
            raise PickleLimitError("Refusing the pickle: it ends without a STOP opcode.") from None
        except ValueError as error:  # truncated or invalid opcodes and arguments
            raise PickleLimitError(f"Refusing a malformed pickle stream: {error}") from None
        count += 1
        if count > max_ops:
            raise PickleLimitError(
                f"Refusing the pickle: more than {max_ops:,} opcodes (MAX_PICKLE_OPS), "
                f"the limit is reached at byte {pos}."
            )
        scan.pos = pos
        if scan.step(op.name, arg):
            return pos + 1


# --- bounded stand-ins ----------------------------------------------------------------------


class _Bounds:
    """The allocation budget of one `RestrictedUnpickler.load`."""

    def __init__(
        self,
        expected: Mapping[str, Sequence[int]] | None,
        max_total_bytes: int,
        max_array_elements: int,
        stream_bytes: int,
    ) -> None:
        self.max_array_elements = max_array_elements
        self.layout: collections.Counter | None = None
        limits = [(max_total_bytes, "max_total_bytes, by default DEFAULT_MAX_TOTAL_BYTES")]
        if expected is not None:
            self.layout = collections.Counter(tuple(int(d) for d in s) for s in expected.values())
            layout_bytes = sum(math.prod(s) * n for s, n in self.layout.items()) * _LAYOUT_ITEMSIZE
            limits.append(
                (layout_bytes + ARRAY_SLACK_BYTES, "the expected layout's float32 bytes + 1 MiB")
            )
        limits.append(
            (stream_bytes + ARRAY_SLACK_BYTES, "what the stream encodes: its size + 1 MiB")
        )
        self.max_total_bytes, self.total_reason = min(limits)
        self.remaining = collections.Counter(self.layout) if self.layout is not None else None
        self.total_bytes = 0
        self.max_encoded_bytes = stream_bytes + ARRAY_SLACK_BYTES
        self.encoded_bytes = 0

    def shape(self, shape, what: str) -> tuple[int, ...]:
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, tuple | list):
            raise pickle.UnpicklingError(
                f"Refusing {what} whose shape is a {type(shape).__name__}."
            )
        if len(shape) > MAX_ARRAY_NDIM:
            raise PickleLimitError(
                f"Refusing {what} of {_int(len(shape))} dimensions, above the limit of "
                f"{MAX_ARRAY_NDIM} (MAX_ARRAY_NDIM)."
            )
        for dim in shape:
            if type(dim) is not int or dim < 0:
                raise pickle.UnpicklingError(
                    f"Refusing {what}: a shape dimension is not a non-negative int."
                )
            if dim > self.max_array_elements:
                raise PickleLimitError(
                    f"Refusing {what} with a dimension of {_int(dim)}, above the limit of "
                    f"{self.max_array_elements:,} elements per array (DEFAULT_MAX_ARRAY_ELEMENTS)."
                )
        return tuple(shape)

    def admit(self, shape, dtype: np.dtype, what: str = "an array") -> tuple[int, ...]:
        """Check an array of ``shape`` and ``dtype`` against every bound and book its bytes."""
        shape = self.shape(shape, what)
        size = math.prod(shape)
        if size > self.max_array_elements:
            raise PickleLimitError(
                f"Refusing {what} of shape {shape} ({_int(size)} elements), above the limit of "
                f"{self.max_array_elements:,} elements per array (DEFAULT_MAX_ARRAY_ELEMENTS)."
            )
        if size and self.remaining is not None:
            if shape not in self.layout:
                raise PickleLimitError(
                    f"Refusing {what} of shape {shape}: no array of the expected layout has that "
                    f"shape (the layout has {len(self.layout)} distinct shapes)."
                )
            if not self.remaining[shape]:
                raise PickleLimitError(
                    f"Refusing {what} of shape {shape}: the expected layout has only "
                    f"{self.layout[shape]} array(s) of that shape."
                )
            self.remaining[shape] -= 1
        total = self.total_bytes + size * dtype.itemsize
        if total > self.max_total_bytes:
            raise PickleLimitError(
                f"Refusing {what} of shape {shape} ({dtype}): arrays would total {_int(total)} "
                f"bytes, above the limit of {self.max_total_bytes:,} bytes ({self.total_reason})."
            )
        self.total_bytes = total
        return shape

    def encode(self, size: int) -> None:
        total = self.encoded_bytes + size
        if total > self.max_encoded_bytes:
            raise PickleLimitError(
                f"Refusing _codecs.encode: encoded bytes would total {total:,}, above the limit of "
                f"{self.max_encoded_bytes:,} (the stream's size + 1 MiB)."
            )
        self.encoded_bytes = total


_BOUNDS: contextvars.ContextVar[_Bounds | None] = contextvars.ContextVar(
    "keras_nfnet_pickle_bounds", default=None
)


def _bounds() -> _Bounds:
    bounds = _BOUNDS.get()
    if bounds is None:
        raise pickle.UnpicklingError(
            "Checkpoint stand-ins run only inside RestrictedUnpickler.load."
        )
    return bounds


_DTYPE_CODE = re.compile(r"[<>|=]?[A-Za-z][0-9]{0,2}")


def _dtype_from_code(code) -> np.dtype:
    if isinstance(code, bytes):
        code = code.decode("latin1")
    if not isinstance(code, str) or not _DTYPE_CODE.fullmatch(code):
        shown = code[:24] if isinstance(code, str) else type(code).__name__
        raise pickle.UnpicklingError(f"Refusing dtype {shown!r}: only plain numeric type codes.")
    dtype = np.dtype(code)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"Refusing an object dtype ({code!r}) in a checkpoint.")
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"Refusing dtype {code!r}: checkpoints hold numbers only.")
    return dtype


class _DTypeSpec:
    """Stand-in for a ``numpy.dtype`` built by the file: BUILD must not reach NumPy's setstate."""

    __slots__ = ("base", "dtype")

    def __init__(self, dtype: np.dtype) -> None:
        self.base = self.dtype = dtype

    def __setstate__(self, state) -> None:
        # NumPy writes (3, endian, None, None, None, -1, -1, 0) for plain numeric dtypes.
        if not (
            isinstance(state, tuple)
            and len(state) in (8, 9)
            and all(type(v) is int for v in (state[0], state[5], state[6], state[7]))
            and state[0] in (3, 4)
            and type(state[1]) is str
            and state[1] in ("<", ">", "|", "=")
            and all(v is None for v in (state[2], state[3], state[4], *state[8:]))
            and (state[5], state[6], state[7]) == (-1, -1, 0)
        ):
            raise pickle.UnpicklingError("Refusing a dtype state other than a plain numeric one.")
        endian = state[1]
        self.dtype = self.base if endian == "|" else self.base.newbyteorder(endian)

    def __repr__(self) -> str:
        return f"_DTypeSpec({self.dtype!r})"


def _as_dtype(spec) -> np.dtype:
    if isinstance(spec, _DTypeSpec):
        return spec.dtype
    return _dtype_from_code(spec)


class _CheckedArray(np.ndarray):
    """An array the stand-ins build; pickle's BUILD (``__setstate__``) is bounded like the rest.

    `RestrictedUnpickler.load` and `flatten_params` hand out plain ``np.ndarray`` views.
    """

    __slots__ = ()

    def __setstate__(self, state) -> None:
        bounds = _BOUNDS.get()
        if bounds is None:  # copy.deepcopy and the like, outside any load
            return super().__setstate__(state)
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("Refusing an array state that is not NumPy's tuple.")
        if len(state) == 5 and type(state[0]) is not int:
            raise pickle.UnpicklingError("Refusing an array state with a non-int version.")
        shape, spec, fortran, data = state[-4:]
        dtype = _as_dtype(spec)
        if type(fortran) is not bool or not isinstance(data, bytes):
            raise pickle.UnpicklingError(
                "Refusing an array state: arrays carry a bool order flag and raw bytes."
            )
        shape = bounds.admit(shape, dtype)
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"Refusing an array of shape {shape} ({dtype}) with {len(data):,} data bytes."
            )
        super().__setstate__((1, shape, dtype, fortran, data))

    def __setitem__(self, key, value) -> None:
        if _BOUNDS.get() is not None:
            raise pickle.UnpicklingError("Refusing item assignment into an array while unpickling.")
        super().__setitem__(key, value)


class _NDArrayStandIn:
    """Stand-in for ``numpy.ndarray``: the array type argument of ``_reconstruct``, and, when a
    file calls it, a bounded ``ndarray(shape, dtype)`` (zeros; buffers and strides refused)."""

    def __call__(self, *args):
        if not 1 <= len(args) <= 2:
            raise pickle.UnpicklingError(
                "Refusing numpy.ndarray with buffer, offset, strides or order arguments."
            )
        dtype = _as_dtype(args[1] if len(args) == 2 else "f8")
        shape = _bounds().admit(args[0], dtype, "numpy.ndarray")
        return np.zeros(shape, dtype).view(_CheckedArray)

    def __repr__(self) -> str:
        return "<checked numpy.ndarray stand-in>"


_NDARRAY = _NDArrayStandIn()


def _reconstruct(subtype, shape, dtype):
    """Stand-in for NumPy's ``_reconstruct``: a zero-filled base-class array, bounded."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"Refusing to rebuild an array of type {subtype!r}.")
    dtype = _as_dtype(dtype)
    shape = _bounds().admit(shape, dtype, "numpy _reconstruct")
    return np.zeros(shape, dtype).view(_CheckedArray)


def _dtype(spec, align=False, copy=False):
    if not isinstance(spec, str) or type(align) is not bool or type(copy) is not bool:
        raise pickle.UnpicklingError(
            "Refusing numpy.dtype arguments other than (code, bool, bool)."
        )
    return _DTypeSpec(_dtype_from_code(spec))


def _frombuffer(buffer, dtype, shape, order):
    dtype = _as_dtype(dtype)
    if not isinstance(buffer, bytes | bytearray) or order not in ("C", "F"):
        raise pickle.UnpicklingError("Refusing _frombuffer arguments other than in-band bytes.")
    shape = _bounds().admit(shape, dtype, "numpy _frombuffer")
    if len(buffer) != math.prod(shape) * dtype.itemsize:
        raise pickle.UnpicklingError(
            f"Refusing _frombuffer of shape {shape} ({dtype}) with {len(buffer):,} bytes."
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).view(_CheckedArray)


def _scalar(dtype, *data):
    dtype = _as_dtype(dtype)
    if len(data) != 1 or not isinstance(data[0], bytes) or len(data[0]) != dtype.itemsize:
        raise pickle.UnpicklingError(f"Refusing a {dtype} scalar without exactly its bytes.")
    _bounds().admit((), dtype, "numpy scalar")
    return _multiarray.scalar(dtype, data[0])


def _codecs_encode(text, encoding="latin1"):
    # Protocol 2 stores bytes as ``_codecs.encode(str, "latin1")``; allow nothing else.
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(
            f"Refusing _codecs.encode with {type(text).__name__} and encoding {encoding!r}."
        )
    _bounds().encode(len(text))
    return text.encode("latin1")


def _ordered_dict(*args):
    # OrderedDict pickles as OrderedDict() followed by SETITEMS; nothing else is needed.
    if args:
        raise pickle.UnpicklingError("Refusing OrderedDict called with arguments.")
    return collections.OrderedDict()


def _rebuild(fun, args, state):
    if fun is not _reconstruct or not isinstance(args, tuple):
        raise pickle.UnpicklingError(f"Refusing to rebuild an array with {fun!r}.")
    array = fun(*args)
    array.__setstate__(state)
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
        raise pickle.UnpicklingError("Unexpected JAX array state.")
    return _rebuild(fun, args, arr_state)


_NUMPY_CORE = ("numpy.core", "numpy._core")

# Exact (module, name) -> stand-in. Nothing else is ever resolved.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("collections", "OrderedDict"): _ordered_dict,
    ("_codecs", "encode"): _codecs_encode,
    ("dill._dill", "_create_array"): _dill_create_array,
    ("jax._src.array", "_reconstruct_array"): _jax_reconstruct_array,
    **{(f"{core}.multiarray", "_reconstruct"): _reconstruct for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _scalar for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): _frombuffer for core in _NUMPY_CORE},
}


def _plain(value):
    return value.view(np.ndarray) if isinstance(value, _CheckedArray) else value


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that resolves only `ALLOWED_GLOBALS`, no persistent ids, within bounds.

    ``load`` first checks the stream with `scan_pickle`, then unpickles it with every array
    checked before it is allocated (see the module docstring). ``file`` must be a seekable
    binary file; the rest of it is read into memory for the scan.

    Args:
        file: the pickle stream.
        expected: optional ``{"module:leaf": shape}`` layout (`expected_deepmind_shapes`); only
            its shapes, each at most as often as it has them, are then accepted.
        max_total_bytes: cap on the bytes of all arrays of one ``load``.
        max_array_elements: cap on the elements of one array.
        **kwargs: passed to `pickle.Unpickler`.

    Example:
    >>> import io, pickle
    >>> import numpy as np
    >>> data = pickle.dumps({"NFNet/~/linear": {"b": np.zeros(3, "float32")}})
    >>> RestrictedUnpickler(io.BytesIO(data)).load()["NFNet/~/linear"]["b"].shape
    (3,)
    >>> RestrictedUnpickler(io.BytesIO(data), expected={"NFNet/~/linear:b": (4,)}).load()
    Traceback (most recent call last):
    ...
    keras_nfnet.convert.deepmind.PickleLimitError: Refusing an array of shape (3,): no array ...
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(print))).load()
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: Refusing pickle global 'builtins.print': not in the allowlist ...
    """

    def __init__(
        self,
        file,
        *,
        expected: Mapping[str, Sequence[int]] | None = None,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        max_array_elements: int = DEFAULT_MAX_ARRAY_ELEMENTS,
        **kwargs,
    ) -> None:
        super().__init__(file, **kwargs)
        self._stream = file
        self._expected = expected
        self._max_total_bytes = max_total_bytes
        self._max_array_elements = max_array_elements

    def load(self):
        file = self._stream
        if not (hasattr(file, "seekable") and file.seekable()):
            raise pickle.UnpicklingError(
                "RestrictedUnpickler needs a seekable binary file: it scans a pickle before "
                "loading it."
            )
        start = file.tell()
        data = file.read()
        file.seek(start)
        if not isinstance(data, bytes):
            raise pickle.UnpicklingError("RestrictedUnpickler needs a binary file.")
        stream_bytes = scan_pickle(data)
        del data
        bounds = _Bounds(
            self._expected, self._max_total_bytes, self._max_array_elements, stream_bytes
        )
        token = _BOUNDS.set(bounds)
        try:
            tree = super().load()
        finally:
            _BOUNDS.reset(token)
        if isinstance(tree, dict):
            for leaves in tree.values():
                if isinstance(leaves, dict):
                    for leaf, value in list(leaves.items()):
                        if isinstance(value, _CheckedArray):
                            leaves[leaf] = _plain(value)
        return _plain(tree)

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


def layout_file_limit(expected: Mapping[str, Sequence[int]]) -> int:
    """The largest file `read_deepmind` accepts for a layout: 2x its float32 bytes + 16 MiB.

    Twice, so that protocol-2 files (bytes stored as UTF-8 text, up to 2 bytes per byte) pass.
    """
    layout_bytes = sum(math.prod(int(d) for d in s) for s in expected.values()) * _LAYOUT_ITEMSIZE
    return 2 * layout_bytes + LAYOUT_FILE_SLACK_BYTES


def flatten_params(
    tree: Mapping, expected: Mapping[str, Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """``{module: {leaf: array}}`` -> ``{"module:leaf": array}`` (`WeightEntry.dm_key`).

    Leaves must be NumPy arrays or NumPy scalars (0-d) of a float dtype, kept as stored (the
    strict load, `assign_arrays`, accepts float32 only); lists, tuples and Python numbers are
    refused, never converted. With ``expected`` (``{"module:leaf": shape}``) every key must be
    in it with exactly its shape, and none of it may be missing.
    """
    if not isinstance(tree, Mapping):
        raise ValueError(
            f"A DeepMind NFNet file holds a mapping {{module: {{leaf: array}}}}; "
            f"this one holds a {type(tree).__name__}."
        )
    flat: dict[str, np.ndarray] = {}
    for module, leaves in tree.items():
        if not isinstance(module, str):
            raise ValueError(f"A module name is a {type(module).__name__}, not a string.")
        if not isinstance(leaves, Mapping):
            raise ValueError(
                f"Module {module!r} holds a {type(leaves).__name__}, not a mapping of leaves."
            )
        for leaf, value in leaves.items():
            if not isinstance(leaf, str):
                raise ValueError(f"A leaf of {module!r} is named by a {type(leaf).__name__}.")
            key = f"{module}:{leaf}"
            if isinstance(value, np.ndarray):
                array = value.view(np.ndarray)
            elif isinstance(value, np.generic):
                array = np.asarray(value)
            else:
                raise ValueError(
                    f"Tensor {key!r} is a {type(value).__name__}, not a NumPy array: leaves must "
                    "be arrays (lists, tuples and Python numbers are refused, not converted)."
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"Tensor '{module}:{leaf}' has dtype {array.dtype}, not float.")
            if expected is not None:
                if key not in expected:
                    raise ValueError(f"Tensor {key!r} is not in the expected layout.")
                want = tuple(int(d) for d in expected[key])
                if array.shape != want:
                    raise ValueError(
                        f"Tensor {key!r} has shape {array.shape}; the expected layout has {want}."
                    )
            flat[key] = array
    if expected is not None:
        missing = [k for k in expected if k not in flat]
        if missing:
            raise ValueError(
                f"Missing {len(missing)} tensor(s) of the expected layout, first: {missing[:5]}."
            )
    return flat


def read_deepmind(
    path: str | os.PathLike, expected: Mapping[str, Sequence[int]] | None = None
) -> dict[str, np.ndarray]:
    """Read a DeepMind NFNet file with `RestrictedUnpickler`; keys are ``"module:leaf"``.

    ``expected`` is the ``{"module:leaf": shape}`` layout the file must have
    (`expected_deepmind_shapes`): only its shapes are allocated, and the file may be at most
    `layout_file_limit` bytes. Without it the default bounds of the module docstring apply.
    Every refusal, limit or malformed file is a ``ValueError`` naming the path.

    Example:
    >>> import pickle, tempfile, numpy as np
    >>> f = tempfile.NamedTemporaryFile(suffix=".npz", delete=False)
    >>> pickle.dump({"NFNet/~/linear": {"b": np.ones(2, "float32")}}, f); f.close()
    >>> read_deepmind(f.name)
    {'NFNet/~/linear:b': array([1., 1.], dtype=float32)}
    >>> read_deepmind(f.name, expected={"NFNet/~/linear:b": (3,)})
    Traceback (most recent call last):
    ...
    ValueError: '...': Refusing an array of shape (2,): no array of the expected layout has ...
    """
    name = os.fspath(path)
    if expected is not None:
        max_file, what = layout_file_limit(expected), "the expected layout (layout_file_limit)"
    else:
        max_file, what = DEFAULT_MAX_FILE_BYTES, "a DeepMind file (DEFAULT_MAX_FILE_BYTES)"
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        # At most size + 1 bytes: read(n) allocates n bytes up front.
        data = file.read(size + 1) if size <= max_file else b""
    if size > max_file or len(data) > max_file:
        raise ValueError(
            f"{name!r} is {max(size, len(data)):,} bytes, above the limit of {max_file:,} bytes "
            f"for {what}."
        )
    try:
        tree = RestrictedUnpickler(io.BytesIO(data), expected=expected).load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"{name!r}: {error}") from error
    except (
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
    ) as error:
        raise ValueError(
            f"{name!r} is not a readable DeepMind NFNet pickle (truncated or "
            f"corrupted?): {type(error).__name__}: {error}"
        ) from error
    del data
    try:
        return flatten_params(tree, expected)
    except ValueError as error:
        raise ValueError(f"{name!r}: {error}") from error
