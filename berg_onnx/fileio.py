"""Small file helpers: atomic writes and hashing.

Every file berg_onnx or the export writes goes through ``atomic_path`` so an
interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


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
