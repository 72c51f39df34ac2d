"""Writing encode results: responses + the row listing, as one pair; output-path checks.

``write_responses(out, responses, labels)`` writes ``out`` (``.npy``, or a
NIfTI through a writer from brainspace.py) and its listing ``out.paths.txt``
(one line per row, in row order) so that they are never mixed:

1. both are written in full to temporary files beside them (and flushed to disk);
2. an existing ``out`` is removed;
3. the listing is renamed into place, then the ``.npy``.

A failure before step 2 (disk full, a kill) leaves both old files as they
were; a crash between steps 2 and 3 leaves no ``.npy``. So whenever the
``.npy`` exists, the ``.paths.txt`` beside it was written with it.

Listing lines are file names as the OS gave them. Bytes that are not valid
UTF-8 are written back as the same bytes (Python's ``surrogateescape``), so
``read_listing`` returns names that open the same files. A backslash is
written as ``\\\\``, a newline as ``\\n`` and a carriage return as ``\\r``, so
every row is exactly one line.

Where names must be valid Unicode text (the ``stimuli`` labels of a Zarr
experiment store), ``label_text`` escapes them the same way and also writes
each byte that is not valid UTF-8 as ``\\xHH``; ``unescape_label`` reads both
forms back to the name as the OS gave it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from berg_onnx.errors import InvalidParameterError
from berg_onnx.utils.fileio import _umask

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}
#: NIfTI file names (volume.py writes them).
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Output kinds ``encode --out`` writes, by suffix.
RESPONSE_SUFFIXES = (".npy", *NIFTI_SUFFIXES)


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True for file names ending in .nii or .nii.gz (any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def listing_path(out: Path) -> Path:
    """``r.npy``, ``r.nii``, ``r.nii.gz`` -> ``r.paths.txt``: the row listing beside them."""
    out = Path(out)
    name = out.name
    for suffix in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return out.with_name(name[: -len(suffix)] + ".paths.txt")
    return out.with_suffix(".paths.txt")


def escape_label(label: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in label)


def label_text(label: str) -> str:
    """``escape_label``, plus each undecodable byte (a ``surrogateescape`` surrogate) as
    ``\\xHH``: a name of any bytes as valid Unicode text, reversed by ``unescape_label``."""
    out = []
    for c in escape_label(label):
        code = ord(c)
        out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else c)
    return "".join(out)


def unescape_label(line: str) -> str:
    out, chars = [], iter(line)
    for c in chars:
        if c == "\\":
            nxt = next(chars, "")
            if nxt == "x":
                hexa = "".join(next(chars, "") for _ in range(2))
                try:
                    byte = int(hexa, 16) if len(hexa) == 2 else -1
                except ValueError:
                    byte = -1
                out.append(chr(0xDC00 + byte) if byte >= 0x80 else "\\x" + hexa)
            else:
                out.append(_UNESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(c)
    return "".join(out)


def encode_listing(labels: Iterable[str]) -> bytes:
    text = "".join(escape_label(str(label)) + "\n" for label in labels)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file system produced
        return text.encode("utf-8", "backslashreplace")


def read_listing(path: str | os.PathLike[str]) -> list[str]:
    """The labels of a ``.paths.txt``, exactly as they were written (see module docstring)."""
    text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    return [unescape_label(line) for line in text.split("\n")[:-1]]


#: The longest line a listing may have (a file path, escaped).
MAX_LISTING_LINE = 1 << 16


def read_listing_bounded(path: str | os.PathLike[str], n_rows: int) -> list[str] | None:
    """``read_listing`` for a listing that must have ``n_rows`` lines, read line by line:
    None as soon as it has more lines, a line longer than MAX_LISTING_LINE or fewer lines
    (a listing that does not belong to its rows is never read whole)."""
    labels: list[str] = []
    with open(path, "rb") as f:
        while True:
            line = f.readline(MAX_LISTING_LINE + 1)
            if not line:
                break
            if not line.endswith(b"\n") or len(labels) >= n_rows:
                return None  # an overlong or unended line, or more lines than rows
            labels.append(unescape_label(line[:-1].decode("utf-8", "surrogateescape")))
    return labels if len(labels) == n_rows else None


def _alternatives(words: Sequence[str]) -> str:
    """("a",) -> "a"; ("a", "b", "c") -> "a, b or c"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_output(out: Path, suffixes: Sequence[str], inputs: Iterable[Path] = ()) -> None:
    """Fail before any work: right suffix, folder exists and is writable, not an input.

    ``inputs`` are the files the command reads; neither ``out`` nor its
    listing may be one of them.
    """
    if out.is_dir():
        raise InvalidParameterError(f"--out {out} is a folder; give a file name")
    name = out.name.lower()
    if not any(name.endswith(s) and name != s for s in suffixes):
        raise InvalidParameterError(
            f"--out must end in {_alternatives(suffixes)} (a file name), got {out}"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidParameterError(f"output folder does not exist: {parent}")
    targets = {os.path.realpath(out)}
    if name.endswith(RESPONSE_SUFFIXES):
        listing = listing_path(out)
        if listing.is_dir():
            raise InvalidParameterError(f"{listing} (the row listing of --out) is a folder")
        targets.add(os.path.realpath(listing))
    kinds = {out.suffix.lower(), ".txt"}  # only these could be the outputs (fast on big folders)
    for item in inputs:
        if Path(item).suffix.lower() in kinds and os.path.realpath(item) in targets:
            raise InvalidParameterError(
                f"--out {out} would overwrite the input {item}; choose another name"
            )
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".berg-onnx-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidParameterError(
            f"cannot write to {parent} (for {out}): {e.strerror or e}"
        ) from None


def write_responses(
    out: Path,
    responses: Any,
    labels: Sequence[str],
    write: Callable[[BinaryIO, Any], None] | None = None,
) -> Path:
    """Write ``out`` and its listing as a pair (see module docstring); returns the listing.

    ``write(f, responses)`` writes the data to an open binary file; the default
    is ``np.save`` (NIfTI writers come from brainspace.py).
    """
    if len(labels) != len(responses):
        raise ValueError(f"{len(labels)} labels for {len(responses)} rows")
    return write_pair(out, labels, lambda f: (write or np.save)(f, responses))


def write_pair(out: Path, labels: Sequence[str], write_data: Callable[[BinaryIO], None]) -> Path:
    """``out`` (written by ``write_data``) and its listing of ``labels``, as one pair."""
    listing = listing_path(out)
    body = encode_listing(labels)
    temps: list[str] = []
    try:
        for target in (out, listing):
            fd, tmp = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".partial", dir=target.parent or "."
            )
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                if target is out:
                    write_data(f)
                else:
                    f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
        os.replace(temps[1], listing)
        os.replace(temps[0], out)
        temps.clear()
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return listing
