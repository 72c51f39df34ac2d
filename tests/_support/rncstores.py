"""Run stores for the RNC tests: an export with several subjects (copies of the synthetic
export's models), stores written by the real runner, and planted-value stores written
through ExperimentStore."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np

from berg_onnx.source.manifest import Manifest, model_key

MODEL = "fmri-nsd-fwrf"
ROIS = ("V1", "FFA-1")
SUBJECTS = (1, 2, 3)


def several_subjects_export(src: Path, dst: Path, subjects=SUBJECTS, rois=ROIS) -> Path:
    """The synthetic export with every (subject, ROI) of ``subjects`` x ``rois``: models the
    export lacks are copies of another subject's files (the same graph under a new name)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy2(f, dst / f.name)
    manifest = Manifest.load(dst / "manifest.json")
    for roi in rois:
        donors = [m for m in manifest.models.values() if m.roi == roi]
        for s in subjects:
            if model_key(MODEL, s, roi) in manifest.models:
                continue
            donor = donors[(s - 1) % len(donors)]
            d = copy.deepcopy(donor.to_dict())
            d["subject"] = s
            for key in ("onnx", "metadata", "onnx_int8"):
                if key in d and d[key]:
                    old = d[key]["name"]
                    new = old.replace(f"sub-{donor.subject:02d}", f"sub-{s:02d}")
                    shutil.copy2(src / old, dst / new)
                    d[key]["name"] = new
            manifest.add(type(donor).from_dict(d))
    manifest.write(dst / "manifest.json")
    return dst


def images(n: int, seed: int = 7) -> np.ndarray:
    """n smooth random uint8 images (3, 32, 32): varied enough that responses differ."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 3, 4, 4)).astype(np.float64)
    big = np.repeat(np.repeat(small, 8, axis=2), 8, axis=3)
    return np.clip(big + rng.normal(0, 20, size=big.shape), 0, 255).astype(np.uint8)


def write_planted(path: Path, export: Path, values: dict, chunk_size: int = 16) -> Path:
    """A run store whose (subject, ROI) arrays hold ``values[(subject, roi)]`` ((N, nv))."""
    from berg_onnx import BERG
    from berg_onnx.experiment import ExperimentStore, plan_experiment

    n = next(iter(values.values())).shape[0]
    subjects = sorted({s for s, _ in values})
    rois = sorted({r for _, r in values})
    job = plan_experiment(
        BERG(berg_dir=export), images(n, seed=n), subjects, rois, chunk_size=chunk_size
    )
    store = ExperimentStore.create_or_open(path, job)
    for plan in job.models:
        data = np.asarray(values[(plan.subject, plan.roi)], dtype=np.float32)
        for i in range(store.n_chunks):
            a, b = store.chunk_bounds(i)
            store.write_chunk(plan.subject, plan.roi, i, data[a:b])
    return path


def n_voxels(export: Path, subject: int, roi: str) -> int:
    return Manifest.load(export / "manifest.json").get(MODEL, subject, roi).nv
