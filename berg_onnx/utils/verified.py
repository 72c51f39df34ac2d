"""Files verified once against their sha256, remembered in the user's cache by stat stamp.

Hashing a model file at every start costs 15-20 ms for V1 and ~80 ms for lateral
(of a 0.2 s cold start). So once a file's bytes have matched its manifest entry,
a small record in the user's cache (``$BERG_ONNX_VERIFY_CACHE``, else
``$XDG_CACHE_HOME/berg-onnx/verified``, else ``~/.cache/berg-onnx/verified``;
never inside the export) remembers the file's stamp: device, inode, size,
mtime_ns and ctime_ns. A later start that finds the same stamp and the same
expected sha256 trusts the file without reading it; any change re-hashes it:

- writing the file changes its mtime and ctime; ``touch -d`` or ``os.utime``
  can put the mtime back but not the ctime, which only the kernel sets;
- replacing it (a re-export renames a new file into place) changes the inode;
- a copy elsewhere, or on another disk, has another device or inode.

Two cases the stamp cannot see are handled as git handles its index: a file
changed within the filesystem's timestamp granularity of being verified
("racily clean") is not remembered at all, since its stamp was taken less than
``RACY_SECONDS`` after its last change; and the record must have been made
for the same expected sha256 as now (a new manifest re-hashes).

``BERG_ONNX_VERIFY_CACHE=off`` turns the cache off (every start hashes).
Records are written atomically, one small JSON file per verified path, so
concurrent processes never see a torn record; an unreadable record is ignored.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

from berg_onnx.constants import ENV_VERIFY_CACHE, user_cache_dir
from berg_onnx.utils.fileio import atomic_write_bytes, sha256_stream

#: A file whose last change is this recent when it is hashed is not remembered
#: (FAT and some network filesystems keep 1-2 s timestamps).
RACY_SECONDS = 2.0


def cache_dir() -> Path | None:
    """Where verification records live, or None when turned off."""
    return user_cache_dir(ENV_VERIFY_CACHE, "verified")


def stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _record_path(folder: Path, path: Path) -> Path:
    """One record per path; the record holds the path itself, so two paths sharing a
    name only overwrite each other's record (costing a hash), never trust it."""
    raw = os.fsencode(path)
    return folder / f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}.json"


def _remembered(folder: Path | None, path: Path, st: os.stat_result, sha256: str) -> bool:
    if folder is None:
        return False
    try:
        record = json.loads(_record_path(folder, path).read_bytes())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("path") == str(path)
        and record.get("stamp") == stamp(st)
        and record.get("sha256") == sha256
    )


def _remember(folder: Path | None, path: Path, st: os.stat_result, sha256: str) -> None:
    if folder is None:
        return
    newest = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
    if time.time() - newest < RACY_SECONDS:
        return  # changed too recently: a change within the timestamps' granularity hides
    body = json.dumps({"path": str(path), "stamp": stamp(st), "sha256": sha256})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(_record_path(folder, path), body.encode())
    except OSError:
        pass  # a read-only or full cache only costs the next start a hash


def check_file(
    path: str | os.PathLike[str], size: int, sha256: str, *, remember: bool = True
) -> str | None:
    """Why ``path`` does not hold ``size`` bytes with ``sha256``, or None when it does.

    Hashes the file (at most ``size`` bytes plus one) unless a record made for this
    very stamp and sha256 says it matched; a match is then remembered (module
    docstring). ``remember=False`` neither reads nor writes records: it always hashes.
    """
    path = Path(os.path.abspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} is missing"
    except OSError as e:
        return f"{path} cannot be read: {e.strerror or e}"
    if not os.path.isfile(path):
        return f"{path} is not a file"
    if st.st_size != size:
        return f"{path} has {st.st_size} bytes, expected {size}"
    folder = cache_dir() if remember else None
    if _remembered(folder, path, st, sha256):
        return None
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        got = sha256_stream(f, max_bytes=size)  # the size was compared above
        after = os.fstat(f.fileno())
    if got != sha256:
        return f"{path} has sha256 {got}, expected {sha256}"
    if stamp(before) == stamp(after) == stamp(st):  # unchanged while it was read
        _remember(folder, path, after, sha256)
    return None
