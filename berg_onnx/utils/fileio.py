"""File helpers every layer shares: atomic writes, hashing, and the one ``.npy`` opener.

Every file berg_onnx or the export writes goes through ``atomic_path`` so an
interrupted run never leaves a half-written file under its final name. Every
``.npy`` berg_onnx reads (stimuli, encode outputs, npz members' headers) goes through
``read_npy_header``/``open_npy``, which check the header in bounded memory before a
byte of data is mapped. Bottom layer: imports only ``errors``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from berg_onnx.errors import InvalidParameterError, StimulusError

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> str:
    """The file's sha256; with ``max_bytes``, at most that many bytes (plus one) are read,
    so a file that grows while it is hashed cannot make the hash unbounded (its digest
    then differs from any of ``max_bytes`` bytes)."""
    with open(path, "rb") as f:
        return sha256_stream(f, max_bytes)


def sha256_stream(f: BinaryIO, max_bytes: int | None = None) -> str:
    """sha256 of what is left of the open binary file ``f``, read in 1 MB blocks; with
    ``max_bytes``, at most that many bytes plus one (see ``sha256_file``)."""
    import hashlib  # not at import: a cold start that hashes nothing skips loading OpenSSL

    digest = hashlib.sha256()
    left = None if max_bytes is None else max_bytes + 1
    while block := f.read(_CHUNK if left is None else min(_CHUNK, left)):
        digest.update(block)
        if left is not None:
            left -= len(block)
            if left <= 0:
                break
    return digest.hexdigest()


#: What ``file_identity`` records: a file's size, modification and status-change times
#: (ns) and inode. Any write to a file changes its ctime, which nobody can set back
#: (restoring the mtime changes it too), so an unchanged identity means unchanged bytes.
IDENTITY_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode")


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino))


def read_hashed(path: str | os.PathLike[str]) -> tuple[bytes, str, tuple[int, int, int, int]]:
    """A file's bytes, their sha256 (hex) and its identity, from one read of the open file."""
    import hashlib

    with open(path, "rb") as f:
        identity = file_identity(os.fstat(f.fileno()))
        data = f.read()
    return data, hashlib.sha256(data).hexdigest(), identity


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place on success.

    The temporary file lives in the same folder so the rename is atomic; it is
    removed if the body raises. The suffix is kept so writers that look at the
    extension (np.save, onnx.save) behave. With ``keep_name`` the temporary
    file has the final name inside a hidden temporary folder, for writers that
    record their own file name (torch.save names its zip archive after it).
    """
    import tempfile  # not at import: reading needs no temporary files

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if keep_name:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        tmp_path = tmp_dir / final.name
    else:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent
        )
        os.close(fd)
        tmp_dir, tmp_path = None, Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if tmp_dir is not None:
            with contextlib.suppress(OSError):
                tmp_dir.rmdir()


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


MAX_NPY_HEADER = 1 << 16  # numpy itself refuses headers beyond 10,000 bytes


def read_npy_header(f) -> tuple[tuple[int, ...], bool, Any, int]:
    """(shape, fortran_order, dtype, header bytes) of the .npy stream ``f``, read in bounded memory.

    numpy's own header readers first read as many bytes as the header claims
    (up to 4 GB for version 2) and check the length afterwards; here the claim
    is checked first and only the header's bytes are handed to numpy. Raises
    ValueError for anything that is not a well-formed header.
    """
    import io
    import struct

    import numpy as np

    start = f.read(12)
    if len(start) < 10 or start[:6] != b"\x93NUMPY":
        raise ValueError("no .npy magic string")
    major = start[6]
    if major == 1:
        (length,), head = struct.unpack("<H", start[8:10]), 10
    elif major in (2, 3) and len(start) == 12:
        (length,), head = struct.unpack("<I", start[8:12]), 12
    else:
        raise ValueError(f"unsupported .npy version {major}.{start[7]}")
    if length > MAX_NPY_HEADER:
        raise ValueError(f"the header claims {length} bytes, more than {MAX_NPY_HEADER}")
    body = start[head:] + f.read(length - (len(start) - head))
    if len(body) != length:
        raise ValueError("the file ends inside its header")
    buf = io.BytesIO(start[:head] + body)
    try:
        np.lib.format.read_magic(buf)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except Exception as e:  # numpy's parser of a bounded header: any failure means malformed
        raise ValueError(f"{type(e).__name__}: {e}") from None
    return shape, fortran, dtype, head + length


def _check_image_size(shape: tuple[int, ...], bad) -> None:
    """One image of the array (all but the first axis of (N, ...), or all of a 2-D/3-D
    array) within the image pixel limit: its two longest axes are height and width, and
    it holds at most 4 values per pixel."""
    from berg_onnx.constants import ENV_MAX_IMAGE_PIXELS, max_image_pixels

    per_image = sorted(shape[1:] if len(shape) >= 4 else shape)
    pixels = values = 1
    for n in per_image[-2:]:
        pixels *= n
    for n in per_image:
        values *= n
    limit = max_image_pixels()
    if pixels > limit or values > 4 * limit:
        raise bad(
            f"an image of the array (shape {shape}) has {pixels} pixels, more than the "
            f"{limit}-pixel image limit ({ENV_MAX_IMAGE_PIXELS}); resize the images first"
        )


def open_npy_stimulus(path: str | os.PathLike[str]):
    """A read-only memory map of a ``.npy`` stimulus array, its header checked first.

    ``np.load`` trusts the header: a crafted one may claim any shape, dtype or
    (with ``allow_pickle``) run code. Here the header must describe a plain
    numeric array whose bytes are exactly the rest of the file, and images within
    the image pixel limit, before anything is mapped; its dtype and shape are then
    ``as_stimulus``'s to judge, with hints for the input it saw. Errors are
    StimulusError naming the file.
    """
    from berg_onnx.errors import StimulusError

    path = Path(path)

    def bad(reason: str) -> StimulusError:
        return StimulusError(
            f"{path} is not a stimulus array: {reason}. Expected an .npy file of integers "
            "0-255 with shape (N, 3, H, W), e.g. np.save(path, images.astype(np.uint8))."
        )

    return open_npy(path, bad, lambda shape: _check_image_size(shape, bad))


def open_npy_responses(path: str | os.PathLike[str]):
    """A read-only memory map of an encode output ``.npy`` ((N, nv) or (nv,) numbers),
    its header checked first as ``open_npy_stimulus`` does; errors are
    InvalidParameterError naming the file."""
    from berg_onnx.errors import InvalidParameterError

    path = Path(path)

    def bad(reason: str) -> InvalidParameterError:
        return InvalidParameterError(
            f"{path} is not a responses array: {reason}. Expected the .npy that "
            "`berg-onnx encode` writes: float32 (N, voxels)."
        )

    return open_npy(path, bad)


def open_npy(path: Path, bad, check_shape=None):
    """The checked, memory-mapped array of ``path``: the one .npy opener both wrap.

    ``bad(reason)`` makes the error to raise; ``check_shape(shape)`` may refuse a
    shape (by raising) before anything is mapped.
    """
    import numpy as np

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                shape, fortran, dtype, offset = read_npy_header(f)
            except ValueError as e:
                raise bad(f"not a readable .npy header ({e})") from None
    except OSError as e:
        raise bad(f"cannot read it ({e.strerror or e})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise bad(f"dtype {dtype} is not a plain numeric type")
    if dtype.kind not in "uifb":
        raise bad(f"dtype {dtype} is not numeric")
    if len(shape) > 8 or not all(isinstance(n, int) and 0 <= n < 1 << 31 for n in shape):
        raise bad(f"shape {shape} is not an array shape (dimensions 0 to 2**31 - 1)")
    if check_shape is not None:
        check_shape(shape)
    # dtype kind and shape are the caller's to judge: its messages suggest the right fix
    need = dtype.itemsize
    for n in shape:
        need *= n
    if offset + need != size:
        raise bad(f"the header promises {need} data bytes, the file holds {size - offset}")
    if need == 0 or not shape:
        return np.zeros(shape, dtype=dtype)  # nothing to map; the validator names the problem
    order = "F" if fortran else "C"
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
    except (OSError, ValueError) as e:
        raise bad(f"it cannot be mapped ({e})") from None
