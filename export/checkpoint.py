"""The schema of original BERG files, read through the restricted unpickler.

A ``.pt`` checkpoint is a torch.save zip of a pickle plus raw tensor storages;
a metadata ``.npy`` is a pickled dict. Loading goes in steps, each refusing
with a ``ModelLoadError`` that names the file and the reason:

1. the file's size is bounded before anything reads (or hashes) it, and the
   container is checked (``berg_onnx.source.safezip`` for the checkpoint zip:
   stored members only, inside the file, unique plain names; the ``.npy``
   header for metadata);
2. the pickle goes through ``export.unpickler`` (opcode pre-scan, then an
   allow-listed pure-Python unpickler); a checkpoint's tensors come back lazy;
3. every tensor the spec's model needs is compared with the spec's keys,
   shapes and dtypes *before* any storage is read; only those are then read,
   within a byte budget. Tensors saved from CUDA load like any other.

The unpickler itself (what runs, what is allocated) is ``export.unpickler``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.errors import ModelLoadError
from berg_onnx.source.metadata import EXPECTED as METADATA_ARRAYS
from berg_onnx.source.metadata import check_array, flatten
from berg_onnx.source.safezip import ZipLimits, open_checked_zip
from berg_onnx.utils.fileio import read_npy_header

from .unpickler import (
    CHECKPOINT_GLOBALS,
    NUMPY_GLOBALS,
    LazyStorage,
    LazyTensor,
    UnsafePickleError,
    short_repr,
    unpickle,
)

__all__ = ["Checkpoint", "UnsafePickleError", "load_checkpoint", "load_pickled_npy"]

#: torch.save zips: data.pkl, version files and one member per storage (~60 for BERG's).
CHECKPOINT_ZIP = ZipLimits(max_members=4096)
MAX_PICKLE_BYTES = 16 << 20  # data.pkl of a BERG checkpoint: ~270 KB
#: One storage (tensor data) and all of one checkpoint's: BERG's largest tensor, the readout
#: w of ~8,000 voxels x 768 floats, has 25 MB; best + final params of a split ~100 MB.
MAX_STORAGE_BYTES = 128 << 20
#: What one load reads from storages: best_params of ~8,000 voxels is ~80 MB; the spec's
#: tensors are checked before anything is read, so only those count.
MAX_STORAGES_BYTES = 160 << 20
#: A whole .pt file: data.pkl plus every storage it may hold, plus zip overhead.
MAX_CHECKPOINT_FILE_BYTES = MAX_PICKLE_BYTES + 4 * MAX_STORAGE_BYTES
MAX_METADATA_BYTES = 32 << 20  # a BERG metadata .npy: ~0.8 MB (1.1 MB at 8,000 voxels)


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> bytes:
    """One member's bytes (size already checked); a damaged member is a ModelLoadError."""
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ModelLoadError(f"{path}: cannot read member {info.filename!r} ({e})") from None


def _check_file_size(path: Path, limit: int, what: str) -> int:
    """The size of ``path``, refused beyond ``limit`` before anything reads or hashes it."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None
    if size > limit:
        raise ModelLoadError(f"{path}: {size} bytes, more than a BERG {what} holds ({limit})")
    return size


def check_source_size(path: str | Path) -> None:
    """Refuse a checkpoint or metadata file larger than BERG's can be, before it is hashed."""
    path = Path(path)
    if path.suffix == ".pt":
        _check_file_size(path, MAX_CHECKPOINT_FILE_BYTES, "checkpoint")
    else:
        _check_file_size(path, MAX_METADATA_BYTES, "metadata file")


#: Reads one lazy tensor's values (within the load's byte budget).
Materialize = Callable[[LazyTensor], np.ndarray]


@contextlib.contextmanager
def _torch_zip(path: Path) -> Iterator[tuple[Any, Materialize]]:
    """(the unpickled object with LazyTensors in it, a function reading one of them)."""
    _check_file_size(path, MAX_CHECKPOINT_FILE_BYTES, "checkpoint")
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
                raise ModelLoadError(
                    f"{path}: byteorder {short_repr(byteorder)} is not little or big"
                )
        if infos[pkl_names[0]].file_size > MAX_PICKLE_BYTES:
            raise ModelLoadError(f"{path}: data.pkl is larger than {MAX_PICKLE_BYTES} bytes")
        described: dict[str, LazyStorage] = {}

        def storage(key: str, dtype: np.dtype, numel: int) -> LazyStorage:
            """A storage the pickle names, checked against its member; nothing read yet."""
            if key in described:
                if described[key].dtype != dtype or described[key].numel != numel:
                    raise ModelLoadError(f"{path}: storage {key} is used with two types")
                return described[key]
            info = infos.get(f"{prefix}data/{key}")
            if info is None:
                raise ModelLoadError(f"{path}: storage {key} has no member in the archive")
            if info.file_size > MAX_STORAGE_BYTES:
                raise ModelLoadError(
                    f"{path}: storage {key} of {info.file_size} bytes would exceed the "
                    f"{MAX_STORAGE_BYTES} per storage a BERG model can need"
                )
            if info.file_size != numel * dtype.itemsize:
                raise ModelLoadError(
                    f"{path}: storage {key} holds {info.file_size} bytes but the pickle "
                    f"declares {numel} x {dtype.itemsize}"
                )
            described[key] = LazyStorage(key, np.dtype(dtype), numel)
            return described[key]

        read_bytes = 0

        def materialize(tensor: LazyTensor) -> np.ndarray:
            nonlocal read_bytes
            st = tensor.storage
            if described.get(st.key) is not st:
                raise ModelLoadError(f"{path}: a tensor of another archive")
            size = st.numel * st.dtype.itemsize
            if read_bytes + size > MAX_STORAGES_BYTES:
                raise ModelLoadError(
                    f"{path}: reading storage {st.key} of {size} bytes would exceed the "
                    f"{MAX_STORAGES_BYTES} bytes a BERG model's tensors can need"
                )
            read_bytes += size
            values = np.empty(st.numel, dtype=st.dtype.newbyteorder("="))
            info = infos[f"{prefix}data/{st.key}"]
            try:
                with archive.open(info) as member:
                    got = member.readinto(memoryview(values).cast("B")) if size else 0
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise ModelLoadError(f"{path}: cannot read storage {st.key} ({e})") from None
            if got != size:
                raise ModelLoadError(f"{path}: storage {st.key} ends after {got} bytes")
            if (byteorder == "big") != (np.little_endian is False):
                values.byteswap(inplace=True)  # the file's byte order -> this machine's
            return tensor.view_of(values)

        data = _read(archive, infos[pkl_names[0]], path)
        yield unpickle(data, CHECKPOINT_GLOBALS, str(path), storage), materialize


def _materialize_all(obj: Any, materialize: Materialize) -> Any:
    """``obj`` with every LazyTensor in it read (containers of the allow-list only)."""
    if isinstance(obj, LazyTensor):
        return materialize(obj)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _materialize_all(obj[k], materialize)
    elif isinstance(obj, list):
        obj[:] = [_materialize_all(v, materialize) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_materialize_all(v, materialize) for v in obj)
    elif isinstance(obj, argparse.Namespace):
        for k, v in vars(obj).items():
            setattr(obj, k, _materialize_all(v, materialize))
    return obj


def _load_torch_zip(path: Path) -> Any:
    """The whole checkpoint with every tensor read (within MAX_STORAGES_BYTES)."""
    with _torch_zip(Path(path)) as (raw, materialize):
        return _materialize_all(raw, materialize)


def _check_metadata(meta: Any, path: Path, depth: int = 0) -> None:
    """A dict of str -> (dict | non-object array | number), as BERG's metadata is."""
    if not isinstance(meta, dict) or depth > 4:
        raise ModelLoadError(f"{path}: metadata is not a (shallow) dict of arrays")
    for key, value in meta.items():
        if not isinstance(key, str) or "/" in key or not key:
            raise ModelLoadError(f"{path}: metadata key {short_repr(key)} is not a plain name")
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
    obj = unpickle(data, NUMPY_GLOBALS, str(path))
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


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (np.ndarray, LazyTensor))


def _got(v: Any) -> Any:
    return (v.shape, v.dtype) if _is_tensor(v) else type(v).__name__


def _check_weights(path: Path, encoder: dict, readout: dict) -> None:
    """Keys, shapes and dtypes as the spec's model needs them, so nothing fails later in
    torch (checked on the lazy tensors, before any storage is read)."""
    if set(encoder) != set(ENCODER_SHAPES):
        extra = sorted(map(str, set(encoder) ^ set(ENCODER_SHAPES)))[:3]
        raise ModelLoadError(f"{path}: the encoder state dict's keys differ from BERG's ({extra})")
    for key, shape in ENCODER_SHAPES.items():
        v = encoder[key]
        if not _is_tensor(v) or v.shape != shape or v.dtype.kind not in "fiu":
            raise ModelLoadError(f"{path}: encoder {key} is {_got(v)}, expected {shape} numbers")
    b = readout["b"]
    if not _is_tensor(b) or b.ndim != 1 or not 1 <= b.shape[0] <= MAX_VOXELS:
        raise ModelLoadError(f"{path}: readout b is not a vector of 1-{MAX_VOXELS} voxels")
    nv = b.shape[0]
    expected = {"rf0": (nv, 27, 27), "rf1": (nv, 25, 25), "rf2": (nv, 13, 13), "w": (nv, 768)}
    for key, shape in {**expected, "b": (nv,)}.items():
        v = readout[key]
        if not _is_tensor(v) or v.shape != shape or v.dtype.kind != "f":
            raise ModelLoadError(f"{path}: readout {key} is {_got(v)}, expected float {shape}")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and sanity-check one original checkpoint (no code from the file runs).

    Only the tensors the spec's model uses are read, after their keys, shapes and
    dtypes were checked; anything else the checkpoint holds is never read.
    """
    path = Path(path)
    with _torch_zip(path) as (raw, materialize):
        if not isinstance(raw, dict) or "best_params" not in raw or "args." not in raw:
            raise ModelLoadError(
                f"{path}: not a BERG fwRF checkpoint (expected a dict with 'args.' and "
                "'best_params')"
            )
        args = raw["args."]
        best = raw["best_params"]
        try:
            encoder = dict(best["enc"])
            fwrfs = best["fwrfs"]
            (subject,) = fwrfs.keys()
            readout = {k: fwrfs[subject][k] for k in READOUT_KEYS}
            if type(subject) is not int:
                raise TypeError(f"subject key {short_repr(subject)} is not an int")
            roi = getattr(args, "roi", "")
            split = getattr(args, "split", 1)
            if not isinstance(roi, str) or type(split) is not int:
                raise TypeError("args.roi is not a string or args.split not an int")
            stim_mean = raw.get("stim_mean", encoder.get("mu"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelLoadError(f"{path}: malformed best_params ({short_repr(e)})") from None
        _check_weights(path, encoder, readout)
        if not _is_tensor(stim_mean):
            stim_mean = np.asarray(stim_mean)  # a plain array or number of the pickle
        if stim_mean.dtype.kind != "f" or math.prod(stim_mean.shape) != 3:
            raise ModelLoadError(f"{path}: stim_mean is not 3 floats")
        encoder = {k: _read_tensor(v, materialize) for k, v in encoder.items()}
        readout = {k: _read_tensor(v, materialize) for k, v in readout.items()}
        stim_mean = _read_tensor(stim_mean, materialize)
    return Checkpoint(
        path=path,
        subject=subject,
        roi=roi,
        split=split,
        encoder=encoder,
        readout=readout,
        stim_mean=stim_mean,
    )


def _read_tensor(v: Any, materialize: Materialize) -> np.ndarray:
    return materialize(v) if isinstance(v, LazyTensor) else np.asarray(v)
