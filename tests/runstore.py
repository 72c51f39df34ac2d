"""A small run store written with zarr directly, following issue #14's layout contract.

Used by the brain-space tests until the store writer (berg-onnx run) is merged;
then these tests can build their store with it instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def write_run_store(
    path: Path,
    export_dir: Path,
    responses: Mapping[tuple[int, str], np.ndarray],
    labels: Sequence[str],
    source: dict | None = None,
    chunk_size: int = 4,
    done: bool = True,
) -> Path:
    """sub-SS/ROI (N, nv) float32 arrays + stimuli + the contract's attributes.

    ``done=False`` records the last chunk of every array as not written (a run cut short).
    """
    import zarr

    from berg_onnx.manifest import Manifest

    manifest = Manifest.load(export_dir / "manifest.json")
    root = zarr.create_group(
        store=str(path),
        overwrite=True,
        attributes={
            "berg_onnx_version": "0.1.0",
            "model_id": "fmri-nsd-fwrf",
            "source": source or {"export_dir": str(export_dir)},
            "created": "2026-12-01T10:00:00+00:00",
            "n_images": len(labels),
            "chunk_size": chunk_size,
        },
    )
    stimuli = root.create_array("stimuli", shape=(len(labels),), dtype=str)
    stimuli[:] = np.array(list(labels), dtype=np.dtypes.StringDType())
    for (subject, roi), rows in responses.items():
        entry = manifest.get("fmri-nsd-fwrf", subject, roi)
        name = f"sub-{subject:02d}/{roi}"
        array = root.create_array(
            name,
            shape=rows.shape,
            chunks=(chunk_size, rows.shape[1]),
            dtype="float32",
            fill_value=float("nan"),
            attributes={
                "subject": subject,
                "roi": roi,
                "n_voxels": rows.shape[1],
                "precision": "fp32",
                "model_files": {f.name: f.sha256 for f in (entry.onnx, entry.metadata)},
                "voxel_order": "roi_mask_volume C-order",
            },
        )
        array[:] = rows
        n_chunks = -(-rows.shape[0] // chunk_size)
        flags = root.create_array(f"_done/{name}", shape=(n_chunks,), chunks=(1,), dtype="uint8")
        flags[:] = 1
        if not done:
            flags[n_chunks - 1] = 0
    return path
