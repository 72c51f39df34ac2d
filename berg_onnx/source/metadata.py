"""Model metadata as .npz: the original's nested dict under flattened keys.

The original ships metadata as pickled dicts; the export stores the same
arrays in an npz under keys such as ``fmri/ncsnr`` so that they load with
``allow_pickle=False``.
"""

from __future__ import annotations

import math
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.errors import BERGError, ModelLoadError
from berg_onnx.source.safezip import ZipLimits, open_checked_zip
from berg_onnx.utils.fileio import read_npy_header

SEP = "/"


def flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """{'fmri': {'ncsnr': a}} -> {'fmri/ncsnr': a}; every leaf must be a non-object array."""
    flat: dict[str, np.ndarray] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or SEP in key:
            raise ValueError(f"metadata key {key!r} must be a string without {SEP!r}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + SEP))
        else:
            arr = np.asarray(value)
            if arr.dtype == object:
                raise ValueError(f"metadata entry {name} is an object array")
            flat[name] = arr
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, arr in flat.items():
        node = nested
        *parents, leaf = name.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    return nested


#: What BERG's metadata holds (spec: "Metadata"): key -> (dtype kinds, shape). "nv" is the
#: model's voxel count and None any length up to MAX_IMAGES.
EXPECTED: dict[str, tuple[str, tuple[int | str | None, ...]]] = {
    "fmri/ncsnr": ("f", ("nv",)),
    "fmri/roi_mask_volume": ("b", (81, 104, 83)),
    "fmri/fmri_affine": ("f", (4, 4)),
    "encoding_models/r2": ("f", ("nv",)),
    "encoding_models/noise_ceiling": ("f", ("nv",)),
    "encoding_models/explained_variance": ("f", ("nv",)),
    "encoding_models/train_img_num": ("iu", (None,)),
    "encoding_models/val_img_num": ("iu", (None,)),
    "encoding_models/test_img_num": ("iu", (None,)),
}
MAX_IMAGES = 100_000  # NSD has 73,000 images
MAX_EXTRA_BYTES = 4 << 20  # each member the spec does not name
MAX_MEMBERS = 64
#: What reading a damaged member raises (zipfile, zlib, numpy's array reader).
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    TypeError,
    NotImplementedError,
    zipfile.BadZipFile,
    zlib.error,
)
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}(/[A-Za-z0-9_]{1,64}){0,3}\.npy$")


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """(shape, fortran, dtype, header bytes) of one npz member, read from its first bytes."""
    with archive.open(info) as f:
        return read_npy_header(f)


def check_array(key: str, shape: tuple[int, ...], dtype: np.dtype, nv: int | None) -> int:
    """The bytes array ``key`` needs, after checking its dtype and shape against EXPECTED.

    Raises ValueError naming the problem. Used on npz member headers before reading
    them, and by the export on the metadata it converts (so it never writes an npz
    that the runtime would refuse).
    """
    name = key
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"{name} has dtype {dtype}; metadata arrays are plain numbers")
    if len(shape) > 8 or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"{name} has shape {shape}")
    if key in EXPECTED:
        kinds, want = EXPECTED[key]
        if dtype.kind not in kinds:
            raise ValueError(f"{key} has dtype {dtype}, expected kind {kinds!r}")
        if len(shape) != len(want):
            raise ValueError(f"{key} has shape {shape}, expected {len(want)} dimensions")
        for got, exp in zip(shape, want, strict=True):
            if exp == "nv" and nv is not None and got != nv:
                raise ValueError(f"{key} has {got} voxels; the manifest says {nv}")
            if isinstance(exp, int) and got != exp:
                raise ValueError(f"{key} has shape {shape}, expected {want}")
            if got > max(MAX_IMAGES, nv or 0):
                raise ValueError(f"{key} has shape {shape}")
    size = math.prod(shape) * dtype.itemsize
    if key not in EXPECTED and size > MAX_EXTRA_BYTES:
        raise ValueError(f"{key} has {size} bytes, more than {MAX_EXTRA_BYTES}")
    return size


def load_npz(path: str | Path, nv: int | None = None) -> dict[str, Any]:
    """The nested metadata dict from an exported npz (no pickle), checked before it is read.

    The archive's directory is checked first (berg_onnx.safezip), then every
    member's .npy header: names, dtypes and shapes must be what BERG's metadata
    holds (with ``nv`` voxels, when given) and each member's declared size must be
    exactly its header plus its array. Only then are arrays read, so a crafted
    npz can neither make us allocate more than the shapes say nor decompress
    more than the members declare.
    """
    path = Path(path)
    limits = ZipLimits(max_members=MAX_MEMBERS, allow_deflate=True, max_total=_max_total(nv))
    archive = open_checked_zip(path, limits, "metadata .npz archive")
    try:
        with archive:
            infos = archive.infolist()
            missing = sorted(set(EXPECTED) - {i.filename[: -len(".npy")] for i in infos})
            if missing:
                raise ValueError(f"members missing: {', '.join(missing)}")
            flat: dict[str, np.ndarray] = {}
            for info in infos:
                if not _NAME.match(info.filename):
                    raise ValueError(f"member {info.filename[:80]!r} is not a metadata array name")
                shape, _fortran, dtype, header = _member_header(archive, info)
                size = check_array(info.filename[: -len(".npy")], shape, dtype, nv)
                if info.file_size != header + size:
                    raise ValueError(
                        f"{info.filename} declares {info.file_size} bytes; its header and "
                        f"array take {header + size}"
                    )
            for info in infos:
                with archive.open(info) as f:
                    flat[info.filename[: -len(".npy")]] = np.lib.format.read_array(
                        f, allow_pickle=False
                    )
    except BERGError:
        raise
    except _READ_ERRORS as e:
        raise ModelLoadError(f"cannot read metadata {path}: {e}") from None
    mask = flat["fmri/roi_mask_volume"]
    if nv is not None and int(np.count_nonzero(mask)) != nv:
        raise ModelLoadError(
            f"metadata {path}: the ROI mask has {np.count_nonzero(mask)} voxels, the manifest {nv}"
        )
    return unflatten(flat)


def _max_total(nv: int | None) -> int:
    """Bytes all members may declare: the spec's arrays for ``nv`` voxels plus the extras."""
    per_voxel = 4 * 8 * (nv if nv is not None else 1_000_000)
    return 81 * 104 * 83 + 3 * 8 * MAX_IMAGES + per_voxel + 4 * MAX_EXTRA_BYTES + (1 << 16)
