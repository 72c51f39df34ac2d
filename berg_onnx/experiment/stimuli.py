"""The image set of an experiment: row order, row labels, fingerprint, preprocessed rows.

An experiment's rows are fixed when it starts and must be the same when it is
resumed, possibly by another process or engine, so the set is identified by a
fingerprint that is cheap to recompute: for files, their paths relative to the
input folder with their sizes and modification times (no image is decoded);
for an array, a sha256 of its bytes, shape and dtype (the same whether it came
from a ``.npy`` file or from memory).

Rows are handed out preprocessed as 227x227 uint8, exactly what ``encode``
feeds its models after the resize and before the division by 255, so that an
engine resizes each image once and keeps 4x less memory than float32.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.constants import INPUT_SIZE
from berg_onnx.errors import StimulusError
from berg_onnx.inputs.resize import resize_rounded
from berg_onnx.utils.fileio import open_npy_stimulus

KINDS = ("files", "array")
#: Images resized per call for array input (bounds the float32 temporaries).
_ARRAY_STEP = 16
_HASH_BLOCK = 1 << 24


def decode_image(path: str) -> np.ndarray:
    """(3, H, W) uint8 of one image file: the one place that turns a file into pixels.

    Uses encode()'s conversion (images.py: EXIF, 16-bit, alpha) so that a grid
    and encode() see the same pixels.
    """
    from berg_onnx.inputs.images import load_image

    return load_image(path)


def _scan(items: list[str]) -> tuple[Any, list[Path] | None]:
    """(array, None) for one .npy, or (None, files) for files/folders, with encode's rules
    (files.py: hidden entries skipped, Pillow's extensions, symlinks followed once)."""
    from berg_onnx.inputs.scan import scan_images
    from berg_onnx.inputs.stimulus import load_npy_stimulus

    npys = [i for i in items if i.lower().endswith(".npy")]
    if npys:
        if len(items) != 1:
            raise StimulusError("give either one .npy stimulus array or image files/folders")
        stim = load_npy_stimulus(items[0])  # header checked, memory-mapped, validated
        return stim.array, None
    return None, list(scan_images(items).files)


@dataclass(frozen=True)
class StimulusSet:
    """The experiment's images in row order, with what the store records about them.

    Picklable: engines that run elsewhere (Ray) get the file paths, or the
    ``.npy`` path (memory-mapped again on arrival), not the pixels.
    """

    kind: str  # "files" or "array"
    labels: tuple[str, ...]  # the store's `stimuli` array: relative paths, or row indices
    fingerprint: str  # "sha256:<hex>", see the module docstring
    root: str | None = None  # absolute folder the file labels are relative to
    npy_path: str | None = None  # the .npy the array was memory-mapped from, if any
    array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, row: int) -> str:
        """Absolute path of the image of ``row`` (file sets only)."""
        return os.path.join(self.root, self.labels[row])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop as (n, 3, 227, 227) uint8, resized exactly as encode() does."""
        size = (INPUT_SIZE, INPUT_SIZE)
        out = np.empty((stop - start, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
        if self.kind == "array":
            for lo in range(start, stop, _ARRAY_STEP):
                hi = min(stop, lo + _ARRAY_STEP)
                out[lo - start : hi - start] = resize_rounded(np.asarray(self.array[lo:hi]), size)
        else:
            for row in range(start, stop):
                out[row - start] = resize_rounded(decode_image(self.path(row))[None], size)[0]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.npy_path is not None:
            state["array"] = None  # re-mapped from the file, never pickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("npy_path") is not None and state.get("array") is None:
            state["array"] = open_npy_stimulus(state["npy_path"])  # header checked again
        for key, value in state.items():
            object.__setattr__(self, key, value)


def _hash_array(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([list(array.shape), array.dtype.str]).encode())
    flat = array.reshape(len(array), -1)
    rows = max(1, _HASH_BLOCK // max(1, flat.shape[1] * array.dtype.itemsize))
    for lo in range(0, len(flat), rows):
        digest.update(np.ascontiguousarray(flat[lo : lo + rows]).data)
    return "sha256:" + digest.hexdigest()


def _hash_files(root: Path, labels: list[str]) -> str:
    digest = hashlib.sha256()
    for label in labels:
        st = os.stat(root / label)
        digest.update(json.dumps([label, st.st_size, st.st_mtime_ns]).encode() + b"\n")
    return "sha256:" + digest.hexdigest()


def _from_array(array: np.ndarray, npy_path: str | None) -> StimulusSet:
    from berg_onnx.inputs.stimulus import as_stimulus

    as_stimulus(array)  # encode()'s validation: shape, dtype, 0-255
    return StimulusSet(
        kind="array",
        labels=tuple(str(i) for i in range(len(array))),
        fingerprint=_hash_array(array),
        npy_path=npy_path,
        array=array,
    )


def _from_files(files: list[Path], single_folder: Path | None) -> StimulusSet:
    from berg_onnx.inputs.stimulus import as_stimulus

    as_stimulus([str(f) for f in files])  # encode()'s up-front check of every file
    absolute = [f.resolve() for f in files]
    if single_folder is not None:
        root = single_folder.resolve()
    else:
        root = Path(os.path.commonpath([str(f.parent) for f in absolute]))
    labels = [f.relative_to(root).as_posix() for f in absolute]
    if len(set(labels)) != len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise StimulusError(f"{dup} is listed more than once; each image may appear once.")
    return StimulusSet(
        kind="files", labels=tuple(labels), fingerprint=_hash_files(root, labels), root=str(root)
    )


def resolve_stimuli(stimulus: Any) -> StimulusSet:
    """A StimulusSet from a folder, image files (and folders), a .npy path, or an array.

    Folders are scanned as ``encode`` scans them (recursive, sorted, image
    extensions only); labels are paths relative to the folder, or to the
    innermost folder holding every listed file.
    """
    if isinstance(stimulus, StimulusSet):
        return stimulus
    if isinstance(stimulus, np.ndarray):
        return _from_array(stimulus, None)
    if isinstance(stimulus, (str, os.PathLike)):
        stimulus = [stimulus]
    if isinstance(stimulus, (list, tuple)) and stimulus:
        if not all(isinstance(s, (str, os.PathLike)) for s in stimulus):
            raise StimulusError(
                "An experiment takes a folder, image file paths, a .npy file or one "
                "(N, 3, H, W) integer array; PIL images cannot be identified when the "
                "run is resumed: pass np.stack([np.asarray(im.convert('RGB')).transpose(2, "
                "0, 1) for im in images])."
            )
        items = [os.fspath(s) for s in stimulus]
        array, files = _scan(items)
        if array is not None:
            return _from_array(array, str(Path(items[0]).resolve()))
        folder = Path(items[0]) if len(items) == 1 and Path(items[0]).is_dir() else None
        return _from_files(files, folder)
    raise StimulusError(
        f"Got a {type(stimulus).__name__}; an experiment takes a folder, image file paths, "
        "a .npy file or one (N, 3, H, W) integer array with values 0-255."
    )
