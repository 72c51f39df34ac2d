"""Where exported files come from: a local export directory (or the Hub, see hub.py).

A store hands out local paths of files it has checked against the manifest,
so the rest of the runtime never reads an unverified byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from berg_onnx.errors import ModelLoadError, ModelNotFoundError
from berg_onnx.source.catalog import load_catalog
from berg_onnx.source.manifest import FileEntry, Manifest
from berg_onnx.utils.verified import check_file, stamp


class ModelSource(Protocol):
    """Where a model's files come from: a local export folder, or a Hub repo (hub.py).

    Picklable, so the Ray engine's actors can fetch from the same source.
    """

    def manifest(self) -> Manifest: ...

    def fetch(self, entry: FileEntry) -> Path:
        """A local path whose bytes match ``entry`` (downloading if needed)."""
        ...

    def describe(self) -> str: ...


#: The name used before 0.2.
Store = ModelSource


def _looks_like_original_berg(path: Path) -> bool:
    return (path / "encoding_models").is_dir()


class LocalStore:
    """An export directory on disk, as written by ``python -m export convert``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._manifest: Manifest | None = None
        self._manifest_stamp: list[int] | None = None
        self._verified: dict[Path, list[int]] = {}  # path -> stat stamp checked (verified.stamp)

    def describe(self) -> str:
        return f"export directory {self.root}"

    def manifest(self) -> Manifest:
        """The export's manifest, read again whenever the file changed on disk (a re-export
        replaces it: new inode, size or mtime), so a long-lived BERG never judges new
        files against old hashes."""
        path = self.root / load_catalog().manifest_name
        try:
            seen = stamp(path.stat())
        except OSError:
            seen = None
        if self._manifest is None or seen != self._manifest_stamp:
            self._manifest = None
            if not path.is_file():
                if not self.root.is_dir():
                    raise ModelNotFoundError(f"berg_dir {self.root} does not exist.")
                if _looks_like_original_berg(self.root):
                    raise ModelLoadError(
                        f"{self.root} is an original BERG directory (PyTorch checkpoints), not "
                        "a berg-onnx export. Export it once from a berg-onnx checkout with: "
                        f"python -m export convert --berg-dir {self.root} --out EXPORT_DIR, "
                        "then use BERG(berg_dir='EXPORT_DIR')."
                    )
                raise ModelNotFoundError(
                    f"{self.root} has no {path.name}; expected an export directory written "
                    "by `python -m export convert`."
                )
            self._manifest = Manifest.load(self._inside(path))
            self._manifest_stamp = seen
        return self._manifest

    def _inside(self, path: Path) -> Path:
        """``path`` when it resolves inside the export folder (a link within it is fine; so
        is a Hugging Face cache snapshot's link into its repo's ``blobs/``); a link out of
        the folder is refused, naming both ends."""
        root = self.root.resolve()
        target = path.resolve()
        roots = [root]
        if root.parent.name == "snapshots":  # <repo>/snapshots/<commit> of a Hub cache
            roots.append(root.parent.parent / "blobs")
        if not any(target.is_relative_to(r) for r in roots):
            raise ModelLoadError(
                f"{path} resolves to {target}, outside the "
                f"export directory {root}; refusing to read it. Copy the file into the "
                "export instead of linking it."
            )
        return path

    def fetch(self, entry: FileEntry) -> Path:
        path = self._inside(self.root / entry.name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"{path} is listed in the manifest but missing; re-run the export."
            ) from None
        if self._verified.get(path) != stamp(st):
            # hashed, unless the user's cache recorded this very stamp as verified
            problem = check_file(path, entry.size, entry.sha256)
            if problem:
                raise ModelLoadError(f"{problem}; the export is corrupt or was modified.")
            self._verified[path] = stamp(st)
        return path
