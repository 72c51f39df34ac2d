"""The image set of an experiment: row order, row labels, fingerprints, preprocessed rows.

An experiment's rows are fixed when its store is created. Each file row is
identified by its content: the sha256 of the file's bytes, computed while the
row is decoded (the bytes are read once, hashed, and decoded from memory), and
the file's identity (size, mtime, ctime, inode; ``utils.fileio``) so that a
later run re-hashes only files whose identity changed (check by stat, then by
hash). The store keeps both per row (store.py, ``_images``); a moved or
copied folder is the same set, and a changed file is named and its rows
computed again. An array is identified by one sha256 of its bytes, shape and
dtype (the same whether it came from a ``.npy`` file or from memory).

Rows are handed out preprocessed as 227x227 uint8 by the one preprocessing
path ``encode`` uses (``inputs.stimulus.preprocess_image``/``preprocess_array``:
decode, then the exact resize), before the division by 255, so that an engine
resizes each image once and keeps 4x less memory than float32.

With ``on_error="skip"`` a file that cannot be read gives a row of zeros and a
recorded reason instead of an error: the engines write NaN into its rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.constants import INPUT_SIZE
from berg_onnx.errors import InvalidParameterError, StimulusError
from berg_onnx.utils.fileio import open_npy_stimulus

KINDS = ("files", "array")
ON_ERROR = ("fail", "skip")
#: Images resized per call for array input (bounds the float32 temporaries).
_ARRAY_STEP = 16
_HASH_BLOCK = 1 << 24
#: Failed rows named in one error or report line before "and N more".
NAMED = 10
NOT_GIVEN = "not among the images given (deleted or renamed since the store was created)"


def check_on_error(on_error: Any) -> str:
    if on_error not in ON_ERROR:
        raise InvalidParameterError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    return str(on_error)


def _scan(items: list[str]) -> tuple[Any, list[Path] | None, Any]:
    """(array, None, None) for one .npy, or (None, files, scan) for files/folders, with
    encode's rules (inputs/scan.py: hidden entries, extensions, links, repeated paths)."""
    from berg_onnx.inputs.stimulus import read_inputs

    npy, scan = read_inputs(items)
    if npy is not None:
        return npy.array, None, None
    return None, list(scan.files), scan


@dataclass(frozen=True)
class RowRecords:
    """What reading rows ``start``.. found, per row: sha256 of the file ('' for arrays, or
    where it could not be read), file identity (zeros where unknown), error ('' = read)."""

    start: int
    sha256: tuple[str, ...]
    identity: np.ndarray  # (n, 4) int64, utils.fileio.IDENTITY_FIELDS
    errors: tuple[str, ...]

    @property
    def failed(self) -> np.ndarray:
        """(n,) bool: rows whose image could not be read."""
        return np.array([bool(e) for e in self.errors], dtype=bool)

    @staticmethod
    def join(parts: list[RowRecords]) -> RowRecords:
        parts = sorted(parts, key=lambda r: r.start)
        return RowRecords(
            start=parts[0].start,
            sha256=tuple(h for p in parts for h in p.sha256),
            identity=np.concatenate([p.identity for p in parts]),
            errors=tuple(e for p in parts for e in p.errors),
        )


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class StimulusSet:
    """The experiment's images in row order, with what the store records about them.

    Picklable: engines that run elsewhere (Ray) get the file paths, or the
    ``.npy`` path (memory-mapped again on arrival), not the pixels.
    """

    kind: str  # "files" or "array"
    labels: tuple[str, ...]  # relative paths as the OS gave them (any bytes), or row indices
    fingerprint: str  # "sha256:<hex>" of the array, or of the labels for files
    root: str | None = None  # absolute folder the file labels are relative to
    npy_path: str | None = None  # the .npy the array was memory-mapped from, if any
    array: np.ndarray | None = field(default=None, repr=False, compare=False)
    on_error: str = "fail"  # an unreadable file: "fail" raises, "skip" records it
    scan_summary: str = field(default="", compare=False)  # what the folder scan left out
    absent: frozenset[int] = frozenset()  # rows of a resumed store whose file was not given

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, row: int) -> str:
        """Absolute path of the image of ``row`` (file sets only)."""
        return os.path.join(self.root, self.labels[row])

    def with_on_error(self, on_error: str) -> StimulusSet:
        return dataclasses.replace(self, on_error=check_on_error(on_error))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop as (n, 3, 227, 227) uint8, resized exactly as encode() does."""
        return self.read_checked(start, stop)[0]

    def read_checked(self, start: int, stop: int) -> tuple[np.ndarray, RowRecords]:
        """Rows start..stop as uint8 (zeros where skipped), and what was read (RowRecords).

        Files are read once each: hashed, then decoded from those bytes. An
        unreadable file raises StimulusError naming it (``on_error="fail"``) or
        is recorded as failed (``"skip"``).
        """
        from berg_onnx.inputs.stimulus import preprocess_array, preprocess_image

        n = stop - start
        out = np.zeros((n, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
        identity = np.zeros((n, 4), dtype=np.int64)
        if self.kind == "array":
            for lo in range(start, stop, _ARRAY_STEP):
                hi = min(stop, lo + _ARRAY_STEP)
                out[lo - start : hi - start] = preprocess_array(np.asarray(self.array[lo:hi]))
            return out, RowRecords(start, ("",) * n, identity, ("",) * n)
        from berg_onnx.utils.fileio import read_hashed

        hashes, errors = [""] * n, [""] * n
        for row in range(start, stop):
            path = self.path(row)
            try:
                if row in self.absent:
                    raise StimulusError(f"Image file {path} is {NOT_GIVEN}.")
                data, hashes[row - start], ident = read_hashed(path)
                identity[row - start] = ident
                out[row - start] = preprocess_image(path, data=data)
            except (OSError, StimulusError) as e:
                error = e if isinstance(e, StimulusError) else _os_error(path, e)
                if self.on_error == "fail":
                    raise error from None
                errors[row - start] = one_line(error)
        return out, RowRecords(start, tuple(hashes), identity, tuple(errors))

    def check_rows(self, rows: list[int], threads: int = 4) -> dict[int, str]:
        """{row: why} for the rows whose file is missing, empty or not a readable image
        (headers only: nothing is decoded), checked in ``threads`` threads."""
        if self.kind != "files" or not rows:
            return {}
        from berg_onnx.inputs.images import open_image

        def check(row: int) -> str:
            path = Path(self.path(row))
            if row in self.absent:
                return f"Image file {path} is {NOT_GIVEN}."
            try:
                open_image(path).close()
            except StimulusError as e:
                return one_line(e)
            except OSError as e:
                return one_line(_os_error(str(path), e))
            return ""

        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="berg-check") as pool:
            found = dict(zip(rows, pool.map(check, rows), strict=True))
        return {row: why for row, why in found.items() if why}

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


def _os_error(path: str, e: OSError) -> StimulusError:
    if isinstance(e, FileNotFoundError):
        why = "is a broken symbolic link" if os.path.islink(path) else "not found"
        return StimulusError(f"Image file {path} {why}.")
    return StimulusError(f"Cannot read {path}: {e.strerror or e}")


def failures_text(failed: list[tuple[str, str]], limit: int = NAMED) -> str:
    """'a.jpg (why); b.png (why)' for the first ``limit``, then 'and N more'."""
    parts = [f"{label} ({why})" for label, why in failed[:limit]]
    more = f"; and {len(failed) - limit} more" if len(failed) > limit else ""
    return "; ".join(parts) + more


def _hash_array(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([list(array.shape), array.dtype.str]).encode())
    flat = array.reshape(len(array), -1)
    rows = max(1, _HASH_BLOCK // max(1, flat.shape[1] * array.dtype.itemsize))
    for lo in range(0, len(flat), rows):
        digest.update(np.ascontiguousarray(flat[lo : lo + rows]).data)
    return "sha256:" + digest.hexdigest()


def _hash_labels(labels: list[str]) -> str:
    """The identity of a file set's rows (its labels in order); contents are per row."""
    digest = hashlib.sha256()
    for label in labels:
        digest.update(label.encode("utf-8", "surrogateescape") + b"\0")
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
    # Absolute, links not resolved: a link is a row under its own name (inputs/scan.py).
    absolute = [Path(os.path.abspath(f)) for f in files]
    if single_folder is not None:
        root = Path(os.path.abspath(single_folder))
    else:
        root = Path(os.path.commonpath([str(f.parent) for f in absolute]))
    labels = [f.relative_to(root).as_posix() for f in absolute]
    if len(set(labels)) != len(labels):  # the scan takes each path once; kept as a guard
        dup = next(x for x in labels if labels.count(x) > 1)
        raise StimulusError(f"{dup} is listed more than once; each image may appear once.")
    return StimulusSet(
        kind="files", labels=tuple(labels), fingerprint=_hash_labels(labels), root=str(root)
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
        array, files, scan = _scan(items)
        if array is not None:
            return _from_array(array, str(Path(items[0]).resolve()))
        folder = Path(items[0]) if len(items) == 1 and Path(items[0]).is_dir() else None
        found = _from_files(files, folder)
        return dataclasses.replace(found, scan_summary=scan.summary())
    raise StimulusError(
        f"Got a {type(stimulus).__name__}; an experiment takes a folder, image file paths, "
        "a .npy file or one (N, 3, H, W) integer array with values 0-255."
    )
