"""Read original BERG files without executing code from them.

Both the ``.pt`` checkpoints (a zip of pickle + raw tensor storages) and the
metadata ``.npy`` files (a pickled dict) are pickles. A pickle may name any
importable callable, so ``torch.load(weights_only=False)`` or
``np.load(allow_pickle=True)`` on a downloaded file runs whatever it says.
This module unpickles through an allow-list of exactly the globals these
files need and rebuilds tensors as numpy arrays straight from the storage
bytes, so loading needs neither torch nor trust. Tensors saved from CUDA load
like any other: only their bytes are read.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from berg_onnx.errors import ModelLoadError


class UnsafePickleError(ModelLoadError):
    """A pickle names a global outside the allow-list; nothing was executed."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for torch.<X>Storage: only its element type matters here."""

    name: str
    dtype: np.dtype


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


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    """numpy version of torch._utils._rebuild_tensor_v2: a strided view, copied."""
    if not isinstance(storage, np.ndarray):
        raise UnsafePickleError("tensor rebuilt from something that is not a storage")
    itemsize = storage.dtype.itemsize
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True) if n > 0) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, dtype=storage.dtype)
    if offset < 0 or needed > storage.size or any(s < 0 for s in stride):
        raise ModelLoadError(f"tensor of shape {size} does not fit its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view, copy=True)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Pickle protocol 2 stores bytes as _codecs.encode(str, "latin1"); allow only that.
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = np._core.multiarray._reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = np._core.multiarray.scalar
# numpy 2 pickles dtypes of arrays as numpy.dtypes.Float32DType etc. in some paths.
for _name in ("Float32DType", "Float64DType", "Int64DType", "Int32DType", "BoolDType"):
    if hasattr(np.dtypes, _name):
        _NUMPY_GLOBALS[("numpy.dtypes", _name)] = getattr(np.dtypes, _name)

_CHECKPOINT_GLOBALS: dict[tuple[str, str], Any] = {
    **_NUMPY_GLOBALS,
    ("argparse", "Namespace"): argparse.Namespace,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name, np.dtype(dt)) for name, dt in _STORAGES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, allowed: dict, source: str, storages=None):
        super().__init__(file)
        self._allowed = allowed
        self._source = source
        self._storages = storages  # callable(key, storage_type, numel) -> np.ndarray, or None

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in self._allowed))
            raise UnsafePickleError(
                f"{self._source} refers to {module}.{name}, which is not allowed in a BERG "
                f"file; refusing to load it (nothing was executed). Allowed: {allowed}."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise UnsafePickleError(f"{self._source}: unexpected persistent id in pickle")
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self._source}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._source}: storage of unknown type {storage_type!r}")
        return self._storages(str(key), storage_type.dtype, int(numel))


def _load_torch_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(
            f"{path} is not a PyTorch checkpoint (expected a torch.save zip file): {e}"
        ) from None
    with archive:
        pkl_names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl_names) != 1:
            raise ModelLoadError(f"{path}: expected one data.pkl in the checkpoint archive")
        prefix = pkl_names[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        cache: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            if key not in cache:
                raw = archive.read(f"{prefix}data/{key}")
                dt = dtype.newbyteorder("<" if byteorder == "little" else ">")
                arr = np.frombuffer(raw, dtype=dt, count=numel)
                cache[key] = arr.astype(dtype.newbyteorder("="), copy=False)
            return cache[key]

        data = archive.read(pkl_names[0])
        return _RestrictedUnpickler(
            io.BytesIO(data), _CHECKPOINT_GLOBALS, str(path), storage
        ).load()


def load_pickled_npy(path: str | Path) -> Any:
    """The object inside an ``np.save``d object array (BERG's metadata dicts)."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f)
            else:
                header = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise ModelLoadError(f"{path} is not a .npy file: {e}") from None
        shape, _fortran, dtype = header
        if dtype != np.dtype(object) or shape != ():
            raise ModelLoadError(
                f"{path}: expected a pickled dict (object array of shape ()), "
                f"got dtype {dtype} shape {shape}"
            )
        obj = _RestrictedUnpickler(f, _NUMPY_GLOBALS, str(path)).load()
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


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
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{path}: malformed best_params ({e!r})") from None
    return Checkpoint(
        path=path,
        subject=int(subject),
        roi=str(getattr(args, "roi", "")),
        split=int(getattr(args, "split", 1)),
        encoder=encoder,
        readout=readout,
        stim_mean=np.asarray(raw.get("stim_mean", encoder.get("mu"))),
    )
