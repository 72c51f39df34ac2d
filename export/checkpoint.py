"""Read original BERG files without executing code from them, in bounded memory.

Both the ``.pt`` checkpoints (a zip of pickle + raw tensor storages) and the
metadata ``.npy`` files (a pickled dict) are pickles. A pickle may name any
importable callable, so ``torch.load(weights_only=False)`` or
``np.load(allow_pickle=True)`` on a downloaded file runs whatever it says.
Refusing globals is not enough either: the C unpickler can be made to
allocate gigabytes by a 6-byte stream. So loading goes in three steps, each
refusing with a ``ModelLoadError`` that names the file and the reason:

1. the container is checked before it is read (``berg_onnx.safezip`` for the
   checkpoint zip: stored members only, inside the file, unique plain names;
   the ``.npy`` header for metadata);
2. the pickle's opcode stream is pre-scanned (``export.pickle_scan``: opcodes,
   lengths, memo indices, nesting, counts);
3. the pure-Python unpickler runs with an allow-list of exactly the globals
   these files need, each call's arguments checked before the call (no numpy
   array is allocated from a shape the bytes do not back), and tensors are
   rebuilt as numpy arrays from storage members whose sizes match their
   declared element counts. Tensors saved from CUDA load like any other.
"""

from __future__ import annotations

import argparse
import collections
import io
import math
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.errors import BERGError, ModelLoadError
from berg_onnx.source.metadata import EXPECTED as METADATA_ARRAYS
from berg_onnx.source.metadata import check_array, flatten
from berg_onnx.source.safezip import ZipLimits, open_checked_zip
from berg_onnx.utils.fileio import read_npy_header

from .pickle_scan import scan_pickle

#: torch.save zips: data.pkl, version files and one member per storage (~60 for BERG's).
CHECKPOINT_ZIP = ZipLimits(max_members=4096)
MAX_PICKLE_BYTES = 16 << 20  # data.pkl of a BERG checkpoint: ~270 KB
#: One storage (tensor data) and all of one checkpoint's: BERG's largest tensor, the readout
#: w of ~8,000 voxels x 768 floats, has 25 MB; best + final params of a split ~100 MB.
MAX_STORAGE_BYTES = 128 << 20
MAX_STORAGES_BYTES = 320 << 20
MAX_METADATA_BYTES = 32 << 20  # a BERG metadata .npy: ~0.8 MB (1.1 MB at 8,000 voxels)
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
    zipfile.BadZipFile,
)


class UnsafePickleError(ModelLoadError):
    """A pickle names a global outside the allow-list; nothing was executed."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for torch.<X>Storage: only its element type matters here."""

    name: str
    dtype: np.dtype


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
    """numpy version of torch._utils._rebuild_tensor_v2: a strided view, copied."""
    if not isinstance(storage, np.ndarray):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage")
    if type(offset) is not int or offset < 0:
        raise ModelLoadError(f"tensor storage offset {offset!r} is not a non-negative integer")
    size, stride = _ints(size, "tensor size", 8), _ints(stride, "tensor stride", 8)
    if len(size) != len(stride):
        raise ModelLoadError("tensor size and stride differ in length")
    if any(n == 0 for n in size):
        return np.zeros(size, dtype=storage.dtype)
    numel = math.prod(size)
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if numel > storage.size or needed > storage.size:
        raise ModelLoadError(
            f"tensor of shape {size} (stride {stride}, offset {offset}) does not fit its "
            f"storage of {storage.size} elements"
        )
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view, copy=True)


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


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}
for _mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = _scalar

_CHECKPOINT_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
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
        raise ModelLoadError(f"dtype state {state!r:.80} is not one numpy writes for {dtype}")


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
        self._storages = storages  # callable(key, dtype, numel) -> np.ndarray, or None

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
            raise UnsafePickleError(f"{self._source}: unsupported persistent id {pid!r:.100}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._source}: storage of unknown type {storage_type!r}")
        if not isinstance(key, str) or not _STORAGE_KEY.match(key):
            raise ModelLoadError(f"{self._source}: storage key {key!r:.40} is not a number")
        if type(numel) is not int or not 0 <= numel < 1 << 40:
            raise ModelLoadError(f"{self._source}: storage size {numel!r:.40} is not a count")
        return self._storages(key, storage_type.dtype, numel)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if func not in _CALLABLE or not isinstance(args, tuple):
            raise UnsafePickleError(
                f"{self._source}: calls {func!r:.60}, which BERG files never call"
            )
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in _NEWOBJ_CLASSES or args != ():
            raise UnsafePickleError(
                f"{self._source}: makes a {cls!r:.60} object, which BERG files never do"
            )
        self.append(cls.__new__(cls))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is np.ndarray:
            _check_array_state(state)
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
            inst.__setstate__(state)
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


def _unpickle(data: bytes, allowed: dict, source: str, storages=None) -> Any:
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


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    """One member's bytes (size already checked); a damaged member is a ModelLoadError."""
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ModelLoadError(f"{path}: cannot read member {info.filename!r} ({e})") from None


def _load_torch_zip(path: Path) -> Any:
    archive = open_checked_zip(path, CHECKPOINT_ZIP, "PyTorch checkpoint (a torch.save zip file)")
    with archive:
        infos = {i.filename: i for i in archive.infolist()}
        pkl_names = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl_names) != 1:
            raise ModelLoadError(f"{path}: expected one <name>/data.pkl in the checkpoint archive")
        prefix = pkl_names[0][: -len("data.pkl")]
        stray = [n for n in infos if not n.startswith(prefix)]
        if stray:
            raise ModelLoadError(f"{path}: member {stray[0]!r} is outside the archive's folder")
        byteorder = "little"
        if f"{prefix}byteorder" in infos:
            if infos[f"{prefix}byteorder"].file_size > 16:
                raise ModelLoadError(f"{path}: byteorder record is too long")
            byteorder = _read(archive, infos[f"{prefix}byteorder"], path)
            byteorder = byteorder.decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ModelLoadError(f"{path}: byteorder {byteorder!r:.20} is not little or big")
        if infos[pkl_names[0]].file_size > MAX_PICKLE_BYTES:
            raise ModelLoadError(f"{path}: data.pkl is larger than {MAX_PICKLE_BYTES} bytes")
        cache: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            if key in cache:
                if cache[key].dtype != dtype or cache[key].size != numel:
                    raise ModelLoadError(f"{path}: storage {key} is used with two types")
                return cache[key]
            info = infos.get(f"{prefix}data/{key}")
            if info is None:
                raise ModelLoadError(f"{path}: storage {key} has no member in the archive")
            loaded = sum(a.nbytes for a in cache.values())
            if info.file_size > MAX_STORAGE_BYTES or loaded + info.file_size > MAX_STORAGES_BYTES:
                raise ModelLoadError(
                    f"{path}: storage {key} of {info.file_size} bytes would exceed the "
                    f"{MAX_STORAGE_BYTES} per storage / {MAX_STORAGES_BYTES} per checkpoint a "
                    "BERG model can need"
                )
            if info.file_size != numel * dtype.itemsize:
                raise ModelLoadError(
                    f"{path}: storage {key} holds {info.file_size} bytes but the pickle "
                    f"declares {numel} x {dtype.itemsize}"
                )
            raw = _read(archive, info, path)
            dt = dtype.newbyteorder("<" if byteorder == "little" else ">")
            cache[key] = np.frombuffer(raw, dtype=dt, count=numel).astype(
                dtype.newbyteorder("="), copy=False
            )
            return cache[key]

        data = _read(archive, infos[pkl_names[0]], path)
        return _unpickle(data, _CHECKPOINT_GLOBALS, str(path), storage)


def _check_metadata(meta: Any, path: Path, depth: int = 0) -> None:
    """A dict of str -> (dict | non-object array | number), as BERG's metadata is."""
    if not isinstance(meta, dict) or depth > 4:
        raise ModelLoadError(f"{path}: metadata is not a (shallow) dict of arrays")
    for key, value in meta.items():
        if not isinstance(key, str) or "/" in key or not key:
            raise ModelLoadError(f"{path}: metadata key {key!r:.40} is not a plain name")
        if isinstance(value, dict):
            _check_metadata(value, path, depth + 1)
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise ModelLoadError(f"{path}: metadata entry {key} is an object array")
        elif not isinstance(value, (np.generic, int, float, bool)):
            raise ModelLoadError(f"{path}: metadata entry {key} is a {type(value).__name__}")


def load_pickled_npy(path: str | Path) -> Any:
    """The dict inside an ``np.save``d object array (BERG's metadata), checked as it loads."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_METADATA_BYTES:
                raise ModelLoadError(f"{path}: {size} bytes, more than metadata ever holds")
            try:
                shape, _fortran, dtype, _ = read_npy_header(f)
            except ValueError as e:
                raise ModelLoadError(f"{path} is not a .npy file: {e}") from None
            if dtype != np.dtype(object) or shape != ():
                raise ModelLoadError(
                    f"{path}: expected a pickled dict (object array of shape ()), "
                    f"got dtype {dtype} shape {shape}"
                )
            data = f.read(size - f.tell())  # exactly the rest: read(n) reserves n bytes first
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    obj = _unpickle(data, _NUMPY_GLOBALS, str(path))
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    _check_metadata(obj, path)
    _check_metadata_arrays(obj, path)
    return obj


def _check_metadata_arrays(meta: dict, path: Path) -> None:
    """The spec's arrays with the spec's dtypes and shapes, as the runtime's npz reader wants."""
    flat = {k: np.asarray(v) for k, v in flatten(meta).items()}
    missing = sorted(set(METADATA_ARRAYS) - set(flat))
    if missing:
        raise ModelLoadError(f"{path}: metadata lacks {', '.join(missing)}")
    mask = flat["fmri/roi_mask_volume"]
    nv = int(np.count_nonzero(mask)) if mask.dtype == bool else None
    try:
        for key, arr in flat.items():
            check_array(key, arr.shape, arr.dtype, nv)
    except ValueError as e:
        raise ModelLoadError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Checkpoint:
    """The parts of one BERG fwRF checkpoint that define the model."""

    path: Path
    subject: int
    roi: str
    split: int
    encoder: dict[str, np.ndarray]  # state dict, original key names
    readout: dict[str, np.ndarray]  # rf0, rf1, rf2, w, b
    stim_mean: np.ndarray

    @property
    def nv(self) -> int:
        return int(self.readout["b"].shape[0])


READOUT_KEYS = ("rf0", "rf1", "rf2", "w", "b")
MAX_VOXELS = 200_000  # BERG's largest ROI split has ~8,000


def _encoder_shapes() -> dict[str, tuple[int, ...]]:
    """The encoder state dict's keys and shapes (spec: "Encoder")."""
    shapes: dict[str, tuple[int, ...]] = {
        "mu": (1, 3, 1, 1),
        "pre.conv1.0.weight": (64, 3, 11, 11),
        "pre.conv1.0.bias": (64,),
        "pre.conv2.0.weight": (192, 64, 5, 5),
        "pre.conv2.0.bias": (192,),
        "enc.conv3.weight": (128, 192, 3, 3),
        "enc.conv3.bias": (128,),
    }

    def bn(prefix: str, c: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{part}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("enc.bn1", 192)
    for name in ("conv4a", "conv4b", "conv5a", "conv5b", "conv6a", "conv6b"):
        cout = 64 if name == "conv6b" else 128
        shapes[f"enc.{name}.conv1.weight"] = (cout, 128, 3, 3)
        shapes[f"enc.{name}.conv1.bias"] = (cout,)
        bn(f"enc.{name}.bn1", 128)
    return shapes


ENCODER_SHAPES = _encoder_shapes()


def _check_weights(path: Path, encoder: dict, readout: dict) -> None:
    """Keys, shapes and dtypes as the spec's model needs them, so nothing fails later in torch."""
    if set(encoder) != set(ENCODER_SHAPES):
        extra = sorted(map(str, set(encoder) ^ set(ENCODER_SHAPES)))[:3]
        raise ModelLoadError(f"{path}: the encoder state dict's keys differ from BERG's ({extra})")
    for key, shape in ENCODER_SHAPES.items():
        v = encoder[key]
        if not isinstance(v, np.ndarray) or v.shape != shape or v.dtype.kind not in "fiu":
            got = (v.shape, v.dtype) if isinstance(v, np.ndarray) else type(v).__name__
            raise ModelLoadError(f"{path}: encoder {key} is {got}, expected {shape} numbers")
    b = readout["b"]
    if not isinstance(b, np.ndarray) or b.ndim != 1 or not 1 <= b.shape[0] <= MAX_VOXELS:
        raise ModelLoadError(f"{path}: readout b is not a vector of 1-{MAX_VOXELS} voxels")
    nv = b.shape[0]
    expected = {"rf0": (nv, 27, 27), "rf1": (nv, 25, 25), "rf2": (nv, 13, 13), "w": (nv, 768)}
    for key, shape in {**expected, "b": (nv,)}.items():
        v = readout[key]
        if not isinstance(v, np.ndarray) or v.shape != shape or v.dtype.kind != "f":
            got = (v.shape, v.dtype) if isinstance(v, np.ndarray) else type(v).__name__
            raise ModelLoadError(f"{path}: readout {key} is {got}, expected float {shape}")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and sanity-check one original checkpoint (no code from the file runs)."""
    path = Path(path)
    raw = _load_torch_zip(path)
    if not isinstance(raw, dict) or "best_params" not in raw or "args." not in raw:
        raise ModelLoadError(
            f"{path}: not a BERG fwRF checkpoint (expected a dict with 'args.' and 'best_params')"
        )
    args = raw["args."]
    best = raw["best_params"]
    try:
        encoder = dict(best["enc"])
        fwrfs = best["fwrfs"]
        (subject,) = fwrfs.keys()
        readout = {k: fwrfs[subject][k] for k in READOUT_KEYS}
        if type(subject) is not int:
            raise TypeError(f"subject key {subject!r:.20} is not an int")
        roi = getattr(args, "roi", "")
        split = getattr(args, "split", 1)
        if not isinstance(roi, str) or type(split) is not int:
            raise TypeError("args.roi is not a string or args.split not an int")
        stim_mean = np.asarray(raw.get("stim_mean", encoder.get("mu")))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{path}: malformed best_params ({e!r:.200})") from None
    _check_weights(path, encoder, readout)
    if stim_mean.dtype.kind != "f" or stim_mean.size != 3:
        raise ModelLoadError(f"{path}: stim_mean is not 3 floats")
    return Checkpoint(
        path=path,
        subject=subject,
        roi=roi,
        split=split,
        encoder=encoder,
        readout=readout,
        stim_mean=stim_mean,
    )
