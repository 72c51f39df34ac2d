"""Check every source file of a convert run before torch is even imported.

``convert`` imports torch, onnx and onnxruntime (several seconds, a few
hundred MB) and then works model by model. A crafted or corrupt checkpoint
found there would fail late; loading each file first with the torch-free
checked loaders (about 30 ms per checkpoint) makes any such file fail within a
second, with one clear error, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from berg_onnx.source.catalog import ModelSpec

from . import layout
from .checkpoint import load_checkpoint, load_pickled_npy


def source_files(
    berg_dir: Path, spec: ModelSpec, subjects: Sequence[int] | None, rois: Sequence[str] | None
) -> list[Path]:
    """The existing checkpoint and metadata files a convert of this selection would read."""
    weights = Path(berg_dir) / layout.WEIGHTS_DIR
    if subjects:
        chosen = [spec.check_subject(s) for s in subjects]
    else:
        chosen = [s for s in spec.subjects if any(weights.glob(f"weights_sub-{s:02d}_roi-*.pt"))]
    names = [spec.check_roi(r).name for r in rois] if rois else list(spec.roi_names)
    files = []
    for s in chosen:
        for r in names:
            paths = layout.checkpoint_paths(Path(berg_dir), s, r, spec.roi(r).splits)
            paths.append(layout.metadata_path(Path(berg_dir), s, r))
            files += [p for p in paths if p.is_file()]
    return files


def check_sources(
    berg_dir: Path, spec: ModelSpec, subjects: Sequence[int] | None, rois: Sequence[str] | None
) -> int:
    """Load (and drop) every source file; raises ModelLoadError on the first bad one."""
    files = source_files(berg_dir, spec, subjects, rois)
    for path in files:
        if path.suffix == ".pt":
            load_checkpoint(path)
        else:
            load_pickled_npy(path)
    return len(files)
