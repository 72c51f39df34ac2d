"""Graphs onnxruntime has already optimised for this machine, kept in the user's cache.

Why: making a CPU session from an export's ``.onnx`` costs ~33 ms for V1 (of a 0.2 s
cold start): ~16 ms to copy 18 MB of weights out of the protobuf, ~6 ms of graph
optimisation and the rest kernel set-up. The optimisation level that pays
(``ORT_ENABLE_ALL``: NCHWc layouts, fused kernels) is specific to this CPU and this
onnxruntime build, so an export cannot ship its result. Instead, a CPU session made
from a model on a machine writes its optimised graph here, its weights in a separate
file that onnxruntime maps into memory; later sessions load that with no
optimisation to redo (~11 ms) and compute bit-identical results
(``tests/runtime/test_optimized.py``).

When: an entry is written at a model's *second* CPU session on a machine (the first
leaves a 0-byte mark, ``.seen-<key>``). A process that uses a model once, or a cache
that does not outlive the process, then pays nothing for it: writing the copy and
checking it costs ~45 ms and the model's size on disk.

Where: ``$BERG_ONNX_SESSION_CACHE``, else ``$XDG_CACHE_HOME/berg-onnx/optimized``,
else ``~/.cache/berg-onnx/optimized``; never inside an export. ``off`` turns it off.
One folder per (model file's sha256, onnxruntime build, this CPU's architecture,
model name and feature flags): a home folder shared by different machines keeps one
entry per CPU, and an upgraded onnxruntime rebuilds.

Trust, as for the verification records (``utils/verified.py``): an entry is made only
from a model file that was just verified against its manifest's sha256, and kept only
if the written copy, loaded as later starts load it, gives the very bits of the
session just made on a probe image (``session.check_written``); it is written in a
private (0700) temporary folder and renamed into place whole, with a record of
its files' stamps (device, inode, size, mtime, ctime); it is used only while every
stamp is still the recorded one, so an entry changed afterwards is rebuilt, never
loaded. A broken entry (a load that fails) is removed and rebuilt. Removal only ever
touches this cache's own names: folders named by a key, the three files an entry
holds, never a link.

Size: each entry is about the size of its model file (V1 ~18 MB, lateral ~90 MB). The
cache keeps at most ``$BERG_ONNX_SESSION_CACHE_MAX_BYTES`` (default 2 GiB); beyond
that, the least recently used entries go when a new one is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from berg_onnx.constants import (
    ENV_SESSION_CACHE,
    ENV_SESSION_CACHE_MAX_BYTES,
    env_positive_int,
    user_cache_dir,
)
from berg_onnx.utils.verified import stamp

#: Default bound on the cache's size (bytes of the entries' files).
DEFAULT_MAX_BYTES = 2 << 30
MODEL_NAME = "model.onnx"
#: The optimised graph's weights: onnxruntime maps this file instead of copying them.
DATA_NAME = "model.data"
RECORD_NAME = "record.json"
#: Tensors smaller than this stay inside model.onnx: onnxruntime's shape inference
#: needs small constants (Reshape's shapes) inline.
EXTERNAL_MIN_BYTES = 4096
#: Bumped when an entry's layout changes: older entries are then never matched.
LAYOUT = 1
_KEY = re.compile(r"^[0-9a-f]{16}$")
_TMP = re.compile(r"^\.tmp-[0-9a-f]{16}-")
_SEEN = re.compile(r"^\.seen-[0-9a-f]{16}$")
#: A temporary folder this old is a killed writer's leftover.
STALE_SECONDS = 3600.0
#: A mark of one use this old, never followed by a second, is removed.
SEEN_SECONDS = 30 * 86400.0


def cache_dir() -> Path | None:
    """Where optimised graphs live, or None when turned off."""
    return user_cache_dir(ENV_SESSION_CACHE, "optimized")


def max_bytes() -> int:
    return env_positive_int(ENV_SESSION_CACHE_MAX_BYTES) or DEFAULT_MAX_BYTES


@functools.cache
def machine_identity() -> str:
    """This CPU as onnxruntime's kernel choice sees it: architecture, model, flags."""
    import platform

    from berg_onnx.utils.cpu import model_name, read_flags

    flags = " ".join(sorted(read_flags()))
    return f"{sys.platform} {platform.machine()} | {model_name()} | {flags}"


@dataclass(frozen=True)
class OptimizedGraph:
    """One model's entry for one onnxruntime build on this machine (it may not exist yet)."""

    root: Path
    #: What the entry is derived from and for; its key is their hash.
    identity: dict[str, object]

    @classmethod
    def for_model(cls, source_sha256: str, runtime: str) -> OptimizedGraph | None:
        """The entry for a verified model file's sha256 and an onnxruntime build
        description, or None when the cache is off."""
        root = cache_dir()
        if root is None:
            return None
        identity = {
            "layout": LAYOUT,
            "source_sha256": source_sha256,
            "runtime": runtime,
            "machine": machine_identity(),
        }
        return cls(root, identity)

    @property
    def key(self) -> str:
        # Two checksums, not a sha256: hashlib would load OpenSSL (~2 ms of every start),
        # and a key only names a folder; the record's identity decides what is loaded.
        raw = json.dumps(self.identity, sort_keys=True).encode()
        return f"{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"

    @property
    def folder(self) -> Path:
        return self.root / self.key

    def find(self) -> Path | None:
        """The optimised model file, when the entry exists and is unchanged since written."""
        folder = self.folder
        try:
            record = json.loads((folder / RECORD_NAME).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("identity") != self.identity:
            return None
        files = record.get("files")
        if not isinstance(files, dict) or MODEL_NAME not in files:
            return None
        for name, recorded in files.items():
            if name not in (MODEL_NAME, DATA_NAME):
                return None
            try:
                st = os.stat(folder / name, follow_symlinks=False)
            except OSError:
                return None
            if stamp(st) != recorded:
                return None
        with contextlib.suppress(OSError):  # last use, for the size bound's eviction
            os.utime(folder / RECORD_NAME)
        return folder / MODEL_NAME

    @property
    def _mark(self) -> Path:
        return self.root / f".seen-{self.key}"

    def seen(self) -> bool:
        """Whether an earlier session of this model marked it (see ``mark``)."""
        return self._mark.is_file()

    def mark(self) -> None:
        """Remember one use, so the next session writes the entry (module docstring)."""
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            self._mark.touch()

    def discard(self) -> None:
        """Remove this entry (a load of it failed): the next session rebuilds it."""
        _remove_entry(self.folder)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path | None]:
        """Where onnxruntime should write the optimised model, or None when the cache
        cannot be written (read-only, full). The entry is published when the block
        ends without an error, and only if onnxruntime wrote the model file."""
        import tempfile  # not at import: only a session that writes the entry needs it

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.key}-", dir=self.root))
        except OSError:
            yield None
            return
        try:
            yield tmp / MODEL_NAME
            self._publish(tmp)
        finally:
            _remove_entry(tmp)  # a no-op once published

    def _publish(self, tmp: Path) -> None:
        files = {}
        for name in (MODEL_NAME, DATA_NAME):
            with contextlib.suppress(FileNotFoundError):
                files[name] = stamp(os.stat(tmp / name, follow_symlinks=False))
        if MODEL_NAME not in files:
            return
        body = {"identity": self.identity, "files": files, "written": time.time()}
        try:
            (tmp / RECORD_NAME).write_text(json.dumps(body))
            os.rename(tmp, self.folder)
        except OSError:
            return  # another process published the same entry first, or the cache is full
        with contextlib.suppress(OSError):
            self._mark.unlink()
        _evict(self.root, max_bytes(), keep=self.key)


def summary() -> dict[str, object]:
    """The cache's folder (None when off), entries, their bytes and the bound, for
    ``berg-onnx doctor``."""
    root = cache_dir()
    folders = []
    if root is not None:
        with contextlib.suppress(OSError):
            folders = [Path(e.path) for e in os.scandir(root) if _is_entry(e)]
    return {
        "folder": None if root is None else str(root),
        "entries": len(folders),
        "bytes": sum(_entry_bytes(f) for f in folders),
        "max_bytes": max_bytes(),
    }


def _is_entry(item: os.DirEntry) -> bool:
    """An entry's folder: named by a key, a folder itself (not a link to one)."""
    return bool(_KEY.match(item.name)) and item.is_dir(follow_symlinks=False)


def _entry_bytes(folder: Path) -> int:
    total = 0
    for name in (MODEL_NAME, DATA_NAME, RECORD_NAME):
        with contextlib.suppress(OSError):
            total += os.stat(folder / name, follow_symlinks=False).st_size
    return total


def _remove_entry(folder: Path) -> None:
    """Delete an entry's own files and its folder; nothing else, never through a link."""
    try:
        if folder.is_symlink() or not folder.is_dir():
            return
    except OSError:
        return
    for name in (MODEL_NAME, DATA_NAME, RECORD_NAME):
        with contextlib.suppress(OSError):
            (folder / name).unlink()  # a link is removed itself; a folder is refused
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if empty: a folder holding anything else stays


def _evict(root: Path, limit: int, keep: str) -> None:
    """Least recently used entries out until the cache holds at most ``limit`` bytes;
    temporary folders of killed writers and marks of a use never repeated too."""
    entries: list[tuple[float, int, Path]] = []
    now = time.time()
    try:
        listing = list(os.scandir(root))
    except OSError:
        return
    for item in listing:
        try:
            if _SEEN.match(item.name) and item.is_file(follow_symlinks=False):
                if now - item.stat(follow_symlinks=False).st_mtime > SEEN_SECONDS:
                    os.unlink(item.path)
                continue
            if _TMP.match(item.name) and item.is_dir(follow_symlinks=False):
                if now - item.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    _remove_entry(Path(item.path))
                continue
            if not _is_entry(item):
                continue
            folder = Path(item.path)
            used = os.stat(folder / RECORD_NAME, follow_symlinks=False).st_mtime
        except OSError:
            continue
        entries.append((used, _entry_bytes(folder), folder))
    total = sum(size for _, size, _ in entries)
    for _, size, folder in sorted(entries):
        if total <= limit:
            break
        if folder.name == keep:
            continue
        _remove_entry(folder)
        total -= size
