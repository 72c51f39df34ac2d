"""Fuzz targets: one function per loader of untrusted files, and their seed corpora.

The property every target checks: an input either loads to the expected
types or raises a ``BERGError`` subclass. Any other exception propagates (the
fuzzer records it as a finding); the harness (``python -m tests.fuzz``) adds
the memory bound (RLIMIT_AS) and the per-input time bound.

Loaders that take paths get the input written to one scratch file per
process (``scratch``), rewritten for every input.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from berg_onnx.errors import BERGError
from berg_onnx.inputs.stimulus import Stimulus, as_stimulus
from berg_onnx.source.manifest import Manifest
from berg_onnx.source.metadata import load_npz
from berg_onnx.utils.fileio import open_npy_stimulus
from tests._support.golden import golden_root

from . import crafted

REPO = Path(__file__).resolve().parents[2]
FWRF = "encoding_models/modality-fmri/train_dataset-nsd/model-fwrf"
#: Inputs live in an in-memory file (memfd, Linux): no leftovers, and a disk stall on a shared
#: machine is not mistaken for a slow input. Elsewhere a temporary folder, removed at exit.
_MEMFD = os.memfd_create("berg-fuzz-input") if hasattr(os, "memfd_create") else None
_SCRATCH = None if _MEMFD is not None else Path(tempfile.mkdtemp(prefix="berg-fuzz-"))
if _SCRATCH is not None:
    atexit.register(shutil.rmtree, _SCRATCH, True)


def scratch(data: bytes, suffix: str) -> Path:
    """A path whose content is ``data`` (the loaders take paths)."""
    if _MEMFD is not None:
        os.ftruncate(_MEMFD, 0)
        os.pwrite(_MEMFD, data, 0)
        return Path(f"/proc/{os.getpid()}/fd/{_MEMFD}")
    path = _SCRATCH / f"input{suffix}"
    path.write_bytes(data)
    return path


def golden_dirs() -> list[Path]:
    root = golden_root()
    return [d for d in (root / "berg_dir", root / "berg_dir_numpy1") if d.is_dir()]


def _golden_files(pattern: str) -> list[Path]:
    return sorted(p for d in golden_dirs() for p in (d / FWRF).rglob(pattern))


def _export_dirs() -> list[Path]:
    art = os.environ.get("BERG_TEST_ARTIFACTS")
    dirs = [Path(art) / "export", Path(art) / "golden_export"] if art else []
    return [d for d in dirs if (d / "manifest.json").is_file()]


# -- checkpoint: a whole .pt file -----------------------------------------------------------
def _honest_checkpoint() -> bytes:
    return crafted.torch_zip(crafted._tensor_pickle(4, (2, 2), (2, 1)), {"0": b"\x00" * 16})


def checkpoint_target(data: bytes) -> None:
    from export.checkpoint import Checkpoint, load_checkpoint

    try:
        ck = load_checkpoint(scratch(data, ".pt"))
    except BERGError:
        return
    assert isinstance(ck, Checkpoint) and ck.nv >= 1


def checkpoint_seeds() -> Iterator[bytes]:
    yield _honest_checkpoint()
    yield from crafted.checkpoint_cases().values()


# -- pickle: the data.pkl of a checkpoint, with the golden file's real storages ---------------
_STORAGES: dict[str, bytes] | None = None


def _golden_storages() -> dict[str, bytes]:
    global _STORAGES
    if _STORAGES is None:
        _STORAGES = {}
        for path in _golden_files("weights_sub-01_roi-V1.pt")[:1]:
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if "/data/" in name:
                        _STORAGES[name.rsplit("/", 1)[1]] = z.read(name)
    return _STORAGES


def pickle_target(data: bytes) -> None:
    from export.unpickler import CHECKPOINT_GLOBALS, LazyStorage, short_repr, unpickle

    storages = _golden_storages()

    def storage(key: str, dtype: np.dtype, numel: int) -> LazyStorage:
        raw = storages.get(key)
        if raw is None or len(raw) != numel * dtype.itemsize:
            from berg_onnx.errors import ModelLoadError

            raise ModelLoadError(f"fuzz: storage {key} does not match")
        return LazyStorage(key, dtype, numel)

    try:
        short_repr(unpickle(data, CHECKPOINT_GLOBALS, "fuzz-input", storage))
    except BERGError:
        return


def pickle_seeds() -> Iterator[bytes]:
    for path in _golden_files("*.pt"):
        with zipfile.ZipFile(path) as z:
            yield z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    yield from crafted.pickle_cases().values()


# -- metadata: BERG's pickled-dict .npy -------------------------------------------------------
def metadata_target(data: bytes) -> None:
    from export.checkpoint import load_pickled_npy

    try:
        meta = load_pickled_npy(scratch(data, ".npy"))
    except BERGError:
        return
    assert isinstance(meta, dict)


def _small_metadata() -> bytes:
    """A metadata .npy like BERG's with 5 voxels (its mask is the spec's full volume)."""
    mask = np.zeros((81, 104, 83), bool)
    mask.flat[:5] = True
    meta = {
        "fmri": {
            "ncsnr": np.ones(5, np.float32),
            "roi_mask_volume": mask,
            "fmri_affine": np.eye(4),
        },
        "encoding_models": {
            "r2": np.ones(5),
            "noise_ceiling": np.ones(5, np.float32),
            "explained_variance": np.ones(5),
            "train_img_num": np.arange(7),
            "val_img_num": np.arange(3),
            "test_img_num": np.arange(3),
        },
    }
    buf = io.BytesIO()
    np.save(buf, np.array(meta, dtype=object), allow_pickle=True)  # our own seed, test only
    return buf.getvalue()


def metadata_seeds() -> Iterator[bytes]:
    yield _small_metadata()
    for path in _golden_files("*.npy"):
        yield path.read_bytes()
    yield from crafted.metadata_cases().values()
    yield crafted.big_endian_metadata()[0]  # loads: a big-endian affine, read as its numbers


# -- npz: the exported metadata archive ----------------------------------------------------------
def npz_target(data: bytes) -> None:
    try:
        meta = load_npz(scratch(data, ".npz"))
    except BERGError:
        return
    assert isinstance(meta, dict)


def npz_seeds() -> Iterator[bytes]:
    for d in _export_dirs():
        for p in sorted(d.glob("*.npz"))[:2]:
            yield p.read_bytes()
    nv = 5
    mask = np.zeros((81, 104, 83), bool)
    mask.flat[:nv] = True
    arrays = {
        "fmri/ncsnr": np.ones(nv, np.float32),
        "fmri/roi_mask_volume": mask,
        "fmri/fmri_affine": np.eye(4),
        "encoding_models/r2": np.ones(nv),
        "encoding_models/noise_ceiling": np.ones(nv, np.float32),
        "encoding_models/explained_variance": np.ones(nv),
        "encoding_models/train_img_num": np.arange(9),
        "encoding_models/val_img_num": np.arange(4),
        "encoding_models/test_img_num": np.arange(4),
    }
    for save in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        save(buf, **arrays)
        yield buf.getvalue()


# -- manifest: manifest.json ----------------------------------------------------------------------
def manifest_target(data: bytes) -> None:
    try:
        manifest = Manifest.load(scratch(data, ".json"))
    except BERGError:
        return
    for entry in manifest.models.values():
        assert all(isinstance(f.name, str) and "/" not in f.name for f in entry.files)


def manifest_seeds() -> Iterator[bytes]:
    for d in _export_dirs():
        yield (d / "manifest.json").read_bytes()
    yield b'{"format": "berg-onnx-export", "schema_version": 1, "models": {}}'
    for d in _export_dirs()[:1]:  # a size no model's file can have (refused before hashing)
        yield (d / "manifest.json").read_bytes().replace(b'"size": ', b'"size": 1099511627', 1)


# -- stimulus: the .npy loader, and as_stimulus on arrays built from fuzz bytes ------------
_DTYPES = [np.uint8, np.int64, np.uint16, np.int8, np.float32, np.float64, np.bool_]


def _array_from(data: bytes) -> np.ndarray | None:
    """An array whose dtype, shape and values come from ``data`` (small images only)."""
    if len(data) < 6:
        return None
    dtype = np.dtype(_DTYPES[data[0] % len(_DTYPES)])
    ndim = data[1] % 6
    dims = [b % 9 for b in data[2 : 2 + ndim]]
    body = data[2 + ndim :]
    count = int(np.prod(dims)) if dims else 1
    need = count * dtype.itemsize
    if need > len(body) or count > 5000:
        return np.frombuffer(body[: len(body) - len(body) % dtype.itemsize], dtype=dtype)
    return np.frombuffer(body[:need], dtype=dtype).reshape(dims)


def stimulus_target(data: bytes) -> None:
    arrays = []
    try:
        arrays.append(open_npy_stimulus(scratch(data, ".npy")))
    except BERGError:
        pass
    built = _array_from(data)
    if built is not None:
        arrays.append(built)
    for arr in arrays:
        try:
            stim = as_stimulus(arr)
        except BERGError:
            continue
        assert isinstance(stim, Stimulus)
        if arr.shape[2] * arr.shape[3] <= 64 * 64:
            out = stim.chunk(0, 1)
            assert out.dtype == np.float32 and out.shape == (1, 3, 227, 227)


def stimulus_seeds() -> Iterator[bytes]:
    yield crafted.valid_stimulus_npy()
    yield crafted.valid_stimulus_npy((1, 3, 5, 7), np.int64)
    yield bytes([0, 4, 1, 3, 4, 4]) + bytes(range(48))
    yield bytes([1, 4, 2, 3, 2, 2]) + np.arange(24, dtype=np.int64).tobytes()
    yield crafted.npy_header((1, 3, 20000, 20000))  # beyond the image pixel limit
    yield crafted.npy_header((0, 10**18, 10**18))  # zero-size, dimensions beyond any array


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], Iterator[bytes]]]] = {
    "checkpoint": (checkpoint_target, checkpoint_seeds),
    "pickle": (pickle_target, pickle_seeds),
    "metadata": (metadata_target, metadata_seeds),
    "npz": (npz_target, npz_seeds),
    "manifest": (manifest_target, manifest_seeds),
    "stimulus": (stimulus_target, stimulus_seeds),
}
