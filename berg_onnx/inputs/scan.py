"""Which files of a folder are images: the folder rules, in one place.

Used by the CLI's ``encode`` and by the experiment runner, so both pick the
same files in the same order. The rules (documented in the README):

- Files named on their own are always taken, whatever their name; the
  rules below apply to what is found inside folders.
- Folders are searched recursively; each folder's images are listed in
  sorted path order.
- Hidden entries, whose name starts with a dot, are skipped, folders with
  everything under them: ``.thumbnails/``, ``.x.png``, and macOS AppleDouble
  files ``._x.jpg`` (resource forks that only look like images).
- A file is an image when its extension (any case) is one Pillow can open
  itself: ``PIL.Image.registered_extensions()`` restricted to formats with an
  opener that is not a stub needing an external handler (BUFR, GRIB, HDF5,
  WMF). So ``.jfif``, ``.jpe``, ``.jp2``, ``.webp``, ``.avif`` count.
- Symbolic links to files and folders are followed. A folder reached a
  second time (a link loop, two links to one folder, or a folder given
  again, or inside another one given) is scanned once, in the whole scan.
  A link to a file is a file of its own, under the link's name (a row of its
  own: a stimulus shown twice), whether its target is in the tree or not.
- The same path reached twice (a file named twice, or named and also found in
  a folder given) is taken once, at its first place. Paths are compared
  after making them absolute, without resolving links.
  Broken links and unreadable folders are reported, never silently dropped.

Nothing here decodes an image: decoding errors are found while encoding.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from berg_onnx.errors import StimulusError

#: Why a file was left out of a folder scan.
HIDDEN = "hidden"
NOT_AN_IMAGE = "not an image type"
BROKEN_LINK = "broken symbolic link"
SEEN_FOLDER = "folder already scanned (symbolic link loop or second link)"
UNREADABLE = "unreadable folder"
REPEATED = "given more than once (taken once)"


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class ScanResult:
    """The image files found, in encoding order, and what was left out, with why."""

    files: tuple[Path, ...]
    skipped: tuple[Skipped, ...]

    def summary(self) -> str:
        """One line, e.g. 'skipped 4 entries: 2 hidden, 1 not an image type (.txt), ...'."""
        if not self.skipped:
            return ""
        counts = Counter(s.reason for s in self.skipped)
        parts = []
        for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            detail = ""
            if reason == NOT_AN_IMAGE:
                exts = Counter(
                    s.path.suffix.lower() or "(none)" for s in self.skipped if s.reason == reason
                )
                detail = " (" + ", ".join(e for e, _ in exts.most_common(5)) + ")"
            elif reason in (BROKEN_LINK, UNREADABLE, SEEN_FOLDER, REPEATED):
                names = [str(s.path) for s in self.skipped if s.reason == reason]
                more = f", +{len(names) - 3} more" if len(names) > 3 else ""
                detail = ": " + ", ".join(names[:3]) + more
            parts.append(f"{n} {reason}{detail}")
        n = len(self.skipped)
        return f"skipped {n} {'entry' if n == 1 else 'entries'} in folders: " + "; ".join(parts)


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of the formats Pillow can open by itself."""
    from PIL import Image, ImageFile

    Image.init()
    usable = {
        fmt
        for fmt, (factory, _accept) in Image.OPEN.items()
        if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    return frozenset(
        ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in usable
    )


def is_hidden(name: str) -> bool:
    """A leading dot: Unix hidden files, and macOS '._' AppleDouble files."""
    return name.startswith(".")


def scan_images(items: Iterable[str | os.PathLike[str]]) -> ScanResult:
    """Image files from files and folders, by the module's rules.

    A named file that does not exist (or is a broken link) raises
    ``StimulusError``; so does a folder holding no image at all.
    """
    extensions = image_extensions()
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[tuple[int, int]] = set()  # folders scanned, over the whole scan
    taken: set[str] = set()  # absolute paths taken, links not resolved

    def take(path: Path) -> None:
        key = os.path.abspath(path)
        if key in taken:
            skipped.append(Skipped(path, REPEATED))
        else:
            taken.add(key)
            files.append(path)

    for item in items:
        path = Path(item)
        if path.is_dir():
            if _folder_key(path) in seen:
                skipped.append(Skipped(path, REPEATED))
                continue
            found: list[Path] = []
            before = len(skipped)
            _walk(path, extensions, found, skipped, seen)
            if not found and not any(s.reason == SEEN_FOLDER for s in skipped[before:]):
                raise StimulusError(
                    f"no image files under {path} (looked for the extensions Pillow opens, "
                    "e.g. .jpg .png .tif .webp; hidden files are skipped)"
                )
            for f in sorted(found):
                take(f)
        elif path.is_file():
            take(path)
        elif os.path.islink(path):
            raise StimulusError(f"broken symbolic link: {path}")
        else:
            raise StimulusError(f"no such file or directory: {path}")
    return ScanResult(tuple(files), tuple(skipped))


def _folder_key(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _walk(
    folder: Path,
    extensions: frozenset[str],
    found: list[Path],
    skipped: list[Skipped],
    seen: set[tuple[int, int]],
) -> None:
    """Depth-first, in name order, with an explicit stack: any depth of nested folders
    (the file system's path length is the only bound), never Python's recursion limit."""
    stack: list[tuple[Path, Iterator[os.DirEntry[str]]]] = []
    entries = _enter(folder, skipped, seen)
    if entries is not None:
        stack.append((folder, entries))
    while stack:
        parent, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path = parent / entry.name
        if is_hidden(entry.name):
            skipped.append(Skipped(path, HIDDEN))
            continue
        try:
            is_dir = entry.is_dir()  # follows symbolic links
            is_file = not is_dir and entry.is_file()
        except OSError:
            is_dir = is_file = False
        if is_dir:
            sub = _enter(path, skipped, seen)
            if sub is not None:
                stack.append((path, sub))
        elif is_file:
            if path.suffix.lower() in extensions:
                found.append(path)
            else:
                skipped.append(Skipped(path, NOT_AN_IMAGE))
        elif entry.is_symlink():
            skipped.append(Skipped(path, BROKEN_LINK))
        else:  # sockets, fifos, devices
            skipped.append(Skipped(path, NOT_AN_IMAGE))


def _enter(
    folder: Path, skipped: list[Skipped], seen: set[tuple[int, int]]
) -> Iterator[os.DirEntry[str]] | None:
    """The folder's entries in name order, or None (unreadable, or visited already)."""
    try:
        st = folder.stat()
    except OSError:
        skipped.append(Skipped(folder, UNREADABLE))
        return None
    if (st.st_dev, st.st_ino) in seen:
        skipped.append(Skipped(folder, SEEN_FOLDER))
        return None
    seen.add((st.st_dev, st.st_ino))
    try:
        with os.scandir(folder) as it:
            return iter(sorted(it, key=lambda e: e.name))
    except OSError:
        skipped.append(Skipped(folder, UNREADABLE))
        return None
