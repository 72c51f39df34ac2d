"""Open zip archives from untrusted sources only after their directory checks out.

Both file kinds this project reads from elsewhere are zips: a PyTorch
checkpoint (``torch.save``: stored members) and an exported ``.npz``
(deflated members). ``zipfile`` trusts the archive's own directory: a crafted
end record can make it parse megabytes of directory entries, members can
overlap (a few real bytes read many times), claim sizes the file does not
have, carry ``..`` paths or appear twice under one name. This module reads
the end-of-central-directory record itself, bounds it, and then checks every
member against the file before any member is read. Every refusal is a
``ModelLoadError`` naming the file and the reason.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from berg_onnx.errors import ModelLoadError

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_LOCAL = b"PK\x03\x04"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_LOCAL_SIZE = 30
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")


@dataclass(frozen=True)
class ZipLimits:
    """What one kind of archive may contain."""

    max_members: int = 4096
    #: True: DEFLATED members are allowed (npz); False: STORED only (torch.save)
    allow_deflate: bool = False
    #: upper bound on the sum of the members' declared (uncompressed) sizes; None: the file
    #: size (right for stored members; give a bound where deflate is allowed)
    max_total: int | None = None
    max_central_directory: int = 1 << 20


def _fail(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: refusing this archive: {reason}")


def _end_record(path: Path, f, size: int, what: str) -> tuple[int, int, int]:
    """(entries, directory size, directory offset) from the end record (ZIP64 too)."""
    tail_len = min(size, _EOCD_SIZE + _MAX_COMMENT)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        raise _fail(path, f"not a {what} (no zip end-of-central-directory record)")
    disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _ = struct.unpack(
        "<HHHHIIH", tail[at + 4 : at + _EOCD_SIZE]
    )
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise _fail(path, "multi-disk archives are not supported")
    if 0xFFFF in (n_total,) or 0xFFFFFFFF in (cd_size, cd_offset):
        eocd_pos = size - tail_len + at
        loc = eocd_pos - 20
        if loc < 0:
            raise _fail(path, "ZIP64 markers without a ZIP64 locator")
        f.seek(loc)
        locator = f.read(20)
        if locator[:4] != _EOCD64_LOCATOR:
            raise _fail(path, "ZIP64 markers without a ZIP64 locator")
        (rec_offset,) = struct.unpack("<Q", locator[8:16])
        if rec_offset + 56 > loc:
            raise _fail(path, "ZIP64 end record lies outside the file")
        f.seek(rec_offset)
        rec = f.read(56)
        if rec[:4] != _EOCD64:
            raise _fail(path, "bad ZIP64 end record")
        n_disk, n_total, cd_size, cd_offset = struct.unpack("<QQQQ", rec[24:56])
        if n_disk != n_total:
            raise _fail(path, "multi-disk archives are not supported")
    return n_total, cd_size, cd_offset


def _check_name(path: Path, name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or len(name) > 512
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(p in ("", ".", "..") or not _SAFE_PART.match(p) for p in parts)
    ):
        raise _fail(path, f"member name {name[:80]!r} is not a plain relative path")


def open_checked_zip(
    path: str | os.PathLike[str], limits: ZipLimits, what: str = "zip file"
) -> zipfile.ZipFile:
    """A ``ZipFile`` for ``path`` whose every member was checked against the file.

    Checks: a bounded directory and member count; unique, plain relative names;
    no encryption; only the allowed compression; each member's bytes (local
    header, data, descriptor) inside the file, before the directory and not
    overlapping another member; declared sizes consistent and bounded.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ModelLoadError(f"cannot open {path}: {e}") from None
    try:
        size = os.fstat(f.fileno()).st_size
        n_total, cd_size, cd_offset = _end_record(path, f, size, what)
        if n_total > limits.max_members:
            raise _fail(path, f"{n_total} members, more than the {limits.max_members} allowed")
        if cd_size > limits.max_central_directory or cd_size > n_total * (46 + 0xFFFF * 3):
            raise _fail(path, f"a central directory of {cd_size} bytes for {n_total} members")
        if cd_offset + cd_size > size:
            raise _fail(path, "the central directory lies beyond the end of the file")
        try:
            archive = zipfile.ZipFile(f)
            archive._filePassed = 0  # the archive owns f: close() closes it
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            ValueError,
            OSError,
            EOFError,
            NotImplementedError,
        ) as e:
            raise _fail(path, f"not a readable zip file ({e})") from None
        infos = archive.infolist()
        if len(infos) != n_total:
            raise _fail(path, f"the directory lists {len(infos)} members, the end record {n_total}")
        _check_members(path, f, infos, size, cd_offset, limits)
    except BaseException:
        f.close()
        raise
    return archive


def _check_members(path, f, infos, size: int, cd_offset: int, limits: ZipLimits) -> None:
    seen: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    total = 0
    for info in infos:
        name = info.filename
        _check_name(path, name)
        if name in seen:
            raise _fail(path, f"member {name!r} appears twice")
        seen.add(name)
        if info.flag_bits & 0x61:  # 0x1 encrypted, 0x20 patched data, 0x40 strong encryption
            raise _fail(path, f"member {name!r} is encrypted or patched (flags {info.flag_bits})")
        if info.extract_version > zipfile.MAX_EXTRACT_VERSION:
            raise _fail(path, f"member {name!r} needs zip version {info.extract_version / 10}")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise _fail(
                    path,
                    f"stored member {name!r} claims {info.file_size} bytes but holds "
                    f"{info.compress_size}",
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED and limits.allow_deflate:
            pass
        else:
            kind = "compressed" if info.compress_type != zipfile.ZIP_STORED else "stored"
            raise _fail(
                path,
                f"member {name!r} is {kind} (method {info.compress_type}); this kind of file "
                "holds only "
                + ("stored or deflated members" if limits.allow_deflate else "stored members"),
            )
        start = info.header_offset
        if start < 0 or start + _LOCAL_SIZE > cd_offset:
            raise _fail(path, f"member {name!r} starts outside the archive data")
        f.seek(start)
        local = f.read(_LOCAL_SIZE)
        if len(local) < _LOCAL_SIZE or local[:4] != _LOCAL:
            raise _fail(path, f"member {name!r} has no local header where the directory says")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if f.read(name_len) != info.orig_filename.encode(encoding, "replace"):
            raise _fail(path, f"member {name!r} has another name in its local header")
        data_start = start + _LOCAL_SIZE + name_len + extra_len
        end = data_start + info.compress_size  # (a data descriptor may follow: not counted)
        if end > cd_offset:
            raise _fail(
                path,
                f"member {name!r} claims {info.compress_size} bytes at offset {data_start}, "
                f"beyond the {size}-byte file's data",
            )
        spans.append((start, end, name))
        total += info.file_size
    cap = size if limits.max_total is None else limits.max_total
    if total > cap:
        raise _fail(path, f"members declare {total} bytes in all, more than the {cap} allowed")
    spans.sort()
    for (_s0, e0, n0), (s1, _e1, n1) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise _fail(path, f"members {n0!r} and {n1!r} overlap")
