"""Run stores for the brain-space tests, written by the real runner (BERG.run, issue #14)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_run_store(
    path: Path, export_dir: Path, stimulus: np.ndarray, rois: Sequence[str], chunk_size: int = 4
) -> Path:
    """``BERG(berg_dir=export_dir).run(stimulus, [1], rois, store=path)``: sub-01/ROI arrays."""
    from berg_onnx import BERG

    report = BERG(berg_dir=export_dir).run(
        stimulus, [1], list(rois), store=path, chunk_size=chunk_size, show_progress=False
    )
    assert report.complete
    return path


def mark_unfinished(path: Path, subject: int, roi: str) -> None:
    """Record the last chunk of one array as not written, as a run cut short leaves it."""
    import zarr

    done = zarr.open_group(str(path), mode="r+")[f"_done/sub-{subject:02d}/{roi}"]
    done[done.shape[0] - 1] = 0
