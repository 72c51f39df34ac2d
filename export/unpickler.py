"""A restricted unpickler for original BERG files: no code runs, no size is trusted.

Both the ``.pt`` checkpoints (a zip of pickle + raw tensor storages) and the
metadata ``.npy`` files (a pickled dict) are pickles. A pickle may name any
importable callable, so ``torch.load(weights_only=False)`` or
``np.load(allow_pickle=True)`` on a downloaded file runs whatever it says.
Refusing globals is not enough either: the C unpickler can be made to
allocate gigabytes by a 6-byte stream. So a stream is first pre-scanned
(``export.pickle_scan``: opcodes, lengths, memo indices, nesting, counts), then
the pure-Python unpickler runs with an allow-list of exactly the globals these
files need, each call's arguments checked before the call:

- no numpy array is allocated from a shape the bytes do not back, and an
  array's byte order (``>`` in its dtype's state) is honoured: a big-endian
  array reads as the same numbers, returned in native byte order;
- tensors are never materialised here: ``torch._utils._rebuild_tensor_v2``
  gives a :class:`LazyTensor` (shape, dtype, and the storage it views, checked
  to fit), so the caller can compare every tensor with the schema it expects
  before a byte of storage is read (``export.checkpoint``).

Every refusal is a ``ModelLoadError`` naming the source, with a bounded
``repr`` of whatever it quotes.
"""

from __future__ import annotations

import argparse
import collections
import io
import math
import pickle
import re
import reprlib
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from berg_onnx.errors import BERGError, ModelLoadError

from .pickle_scan import scan_pickle

MAX_DIMS = 32
MAX_OBJECT_ITEMS = 4096  # elements of one object array (BERG's: the one dict)
_DTYPE_CODE = re.compile(r"^(b1|[iu][1248]|f[248]|c(8|16)|O8)$")
_STORAGE_KEY = re.compile(r"^[0-9]{1,9}$")
#: Exceptions the pure-Python unpickler or an allowed callable raises on malformed input.
_MALFORMED = (
    pickle.UnpicklingError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    struct.error,
    OverflowError,
    UnicodeDecodeError,
    RecursionError,
    zipfile.BadZipFile,
)
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = 60


def short_repr(obj: Any) -> str:
    """A repr of at most a few lines, whatever ``obj`` nests or refers to."""
    try:
        return _REPR.repr(obj)[:120]
    except Exception:  # noqa: BLE001 - a repr of hostile data may fail in any way
        return f"<{type(obj).__name__}>"


class UnsafePickleError(ModelLoadError):
    """A pickle names a global outside the allow-list; nothing was executed."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for torch.<X>Storage: only its element type matters here."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class LazyStorage:
    """A storage member the pickle refers to, checked (exists, size) but not read."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class LazyTensor:
    """A tensor as the pickle describes it (a strided view of a storage), not yet read."""

    storage: LazyStorage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return self.storage.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def view_of(self, storage: np.ndarray) -> np.ndarray:
        """This tensor's values, given its storage's elements (a copy unless it is all of it)."""
        if any(n == 0 for n in self.shape):
            return np.zeros(self.shape, dtype=self.dtype)
        numel = math.prod(self.shape)
        contiguous = tuple(math.prod(self.shape[i + 1 :]) for i in range(self.ndim))
        if self.offset == 0 and numel == storage.size and self.stride == contiguous:
            return storage.reshape(self.shape)
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view, copy=True)


@dataclass(frozen=True)
class _Marker:
    """A global that may only appear as an argument (numpy.ndarray), never be called."""

    name: str


_NDARRAY = _Marker("numpy.ndarray")

_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _ints(value: Any, what: str, limit: int = MAX_DIMS) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > limit:
        raise ModelLoadError(f"{what} is not a tuple of at most {limit} integers")
    if not all(type(v) is int and 0 <= v < 1 << 40 for v in value):
        raise ModelLoadError(f"{what} holds something other than non-negative integers")
    return value


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    """torch._utils._rebuild_tensor_v2, lazily: the view is checked to fit, nothing is read."""
    if not isinstance(storage, LazyStorage):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage")
    if type(offset) is not int or offset < 0:
        raise ModelLoadError(f"tensor storage offset {short_repr(offset)} is not a count")
    size, stride = _ints(size, "tensor size", 8), _ints(stride, "tensor stride", 8)
    if len(size) != len(stride):
        raise ModelLoadError("tensor size and stride differ in length")
    if all(n > 0 for n in size):
        numel = math.prod(size)
        needed = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if numel > storage.numel or needed > storage.numel:
            raise ModelLoadError(
                f"tensor of shape {size} (stride {stride}, offset {offset}) does not fit its "
                f"storage of {storage.numel} elements"
            )
    return LazyTensor(storage, offset, size, stride)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Pickle protocol 2 stores bytes as _codecs.encode(str, "latin1"); allow only that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _dtype(code: str, align: bool = False, copy: bool = True) -> np.dtype:
    """numpy.dtype for the plain numeric, bool and object codes numpy pickles."""
    if not isinstance(code, str) or not _DTYPE_CODE.match(code):
        raise ModelLoadError(f"dtype {code!r} is not a plain numeric, bool or object dtype")
    if type(align) is not bool or type(copy) is not bool:
        raise ModelLoadError("numpy.dtype called with non-bool flags")
    return np.dtype(code)


def _reconstruct(cls: Any, shape: Any, code: Any) -> np.ndarray:
    """numpy's array-pickle prologue: always (ndarray, (0,), b'b'); the data comes in BUILD."""
    if cls is not _NDARRAY or shape != (0,) or code not in (b"b", "b"):
        raise ModelLoadError("numpy _reconstruct called with arguments numpy never writes")
    return np._core.multiarray._reconstruct(np.ndarray, (0,), b"b")


def _scalar(dtype: Any, data: Any) -> np.generic:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise ModelLoadError("numpy scalar of an object dtype or without raw bytes")
    if len(data) != dtype.itemsize:
        raise ModelLoadError(f"numpy scalar of {dtype} with {len(data)} bytes")
    return np._core.multiarray.scalar(dtype, data)


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    if args:
        raise ModelLoadError("OrderedDict rebuilt with arguments (BERG files never do that)")
    return collections.OrderedDict()


NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}
for _mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
    NUMPY_GLOBALS[(_mod, "_reconstruct")] = _reconstruct
    NUMPY_GLOBALS[(_mod, "scalar")] = _scalar

CHECKPOINT_GLOBALS: dict[tuple[str, str], Any] = {
    **NUMPY_GLOBALS,
    ("argparse", "Namespace"): argparse.Namespace,
    ("collections", "OrderedDict"): _ordered_dict,
    ("_codecs", "encode"): _latin1_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name, np.dtype(dt)) for name, dt in _STORAGES.items()},
}
_CALLABLE = {_dtype, _reconstruct, _scalar, _ordered_dict, _latin1_encode, _rebuild_tensor_v2}
#: Classes NEWOBJ may instantiate (with no arguments; their state comes in BUILD).
_NEWOBJ_CLASSES = {argparse.Namespace, collections.OrderedDict}


def _check_array_state(state: Any) -> None:
    """The BUILD state of an ndarray: the bytes (or items) must back the shape exactly."""
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        raise ModelLoadError("ndarray state is not numpy's (1, shape, dtype, fortran, data)")
    _, shape, dtype, fortran, data = state
    shape = _ints(shape, "array shape")
    if not isinstance(dtype, np.dtype) or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelLoadError("ndarray state without a plain dtype")
    if type(fortran) is not bool:
        raise ModelLoadError("ndarray state with a non-bool order flag")
    count = math.prod(shape)
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != count or count > MAX_OBJECT_ITEMS:
            raise ModelLoadError(
                f"object array of shape {shape} without exactly that many items "
                f"(at most {MAX_OBJECT_ITEMS})"
            )
    elif not isinstance(data, bytes) or len(data) != count * dtype.itemsize:
        got = len(data) if isinstance(data, bytes) else type(data).__name__
        raise ModelLoadError(f"array of shape {shape} and dtype {dtype} backed by {got} bytes")


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    expected = dtype.__reduce__()[2]
    if not (
        isinstance(state, tuple)
        and len(state) == len(expected)
        and state[0] == 3
        and state[1] in ("<", ">", "|", "=")
        and state[2:] == expected[2:]
    ):
        raise ModelLoadError(f"dtype state {short_repr(state)} is not one numpy writes for {dtype}")


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every object-making opcode checked.

    Run only on streams that ``scan_pickle`` accepted. REDUCE may call only the
    checking wrappers above, NEWOBJ may make only an empty Namespace or
    OrderedDict, BUILD may set state only on arrays, dtypes, Namespaces and
    OrderedDicts, and only state whose sizes are backed by bytes.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, allowed: dict, source: str, storages=None):
        super().__init__(file)
        self._allowed = allowed
        self._source = source
        self._storages = storages  # callable(key, dtype, numel) -> LazyStorage, or None

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in self._allowed))
            raise UnsafePickleError(
                f"{self._source} refers to {module}.{name}, which is not allowed in a BERG "
                f"file; refusing to load it (nothing was executed). Allowed: {allowed}."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise UnsafePickleError(f"{self._source}: unexpected persistent id in pickle")
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self._source}: unsupported persistent id {short_repr(pid)}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(
                f"{self._source}: storage of unknown type {short_repr(storage_type)}"
            )
        if not isinstance(key, str) or not _STORAGE_KEY.match(key):
            raise ModelLoadError(f"{self._source}: storage key {short_repr(key)} is not a number")
        if type(numel) is not int or not 0 <= numel < 1 << 40:
            raise ModelLoadError(f"{self._source}: storage size {short_repr(numel)} is not a count")
        return self._storages(key, storage_type.dtype, numel)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if func not in _CALLABLE or not isinstance(args, tuple):
            raise UnsafePickleError(
                f"{self._source}: calls {short_repr(func)}, which BERG files never call"
            )
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _NEWOBJ_CLASSES or args != ():
            raise UnsafePickleError(
                f"{self._source}: makes a {short_repr(cls)} object, which BERG files never do"
            )
        self.append(cls.__new__(cls))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            _check_array_state(state)
            inst.__setstate__(state)
            if not inst.dtype.isnative:  # the same numbers, in this machine's byte order
                self.stack[-1] = inst.astype(inst.dtype.newbyteorder("="))
        elif isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
            # A new dtype with the state's byte order: numpy's own __setstate__ on the
            # shared builtin instance would ignore '>' (and read big-endian data swapped).
            order = state[1] if inst.itemsize > 1 and state[1] in "<>" else "="
            self.stack[-1] = inst.newbyteorder(order)
        elif type(inst) in _NEWOBJ_CLASSES:
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise ModelLoadError(f"{self._source}: object state is not a dict of names")
            inst.__dict__.update(state)
        else:
            raise UnsafePickleError(
                f"{self._source}: sets the state of a {type(inst).__name__}, which BERG files "
                "never do"
            )

    dispatch[pickle.BUILD[0]] = load_build


def unpickle(
    data: bytes,
    allowed: dict,
    source: str,
    storages: Callable[[str, np.dtype, int], LazyStorage] | None = None,
) -> Any:
    """Pre-scan ``data``, then unpickle it; every failure is a ModelLoadError."""
    scan_pickle(data, source)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), allowed, source, storages).load()
    except BERGError as e:
        if str(e).startswith(source):
            raise
        raise type(e)(f"{source}: {e}") from None
    except _MALFORMED as e:
        raise ModelLoadError(f"{source}: malformed pickle ({type(e).__name__}: {e})") from None


_unpickle = unpickle  # the name the fuzz targets used
_NUMPY_GLOBALS, _CHECKPOINT_GLOBALS = NUMPY_GLOBALS, CHECKPOINT_GLOBALS
