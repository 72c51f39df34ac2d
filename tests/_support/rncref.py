"""A slow, direct reimplementation of spec/rnc.md's deterministic steps, for the tests:
Python loops, math.fsum and scipy.stats.pearsonr, reading the store with zarr itself.
Nothing here imports berg_onnx.control."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import zarr
from scipy.stats import pearsonr

MODEL = "fmri-nsd-fwrf"


def ncsnr(export: Path, subject: int, roi: str) -> np.ndarray:
    path = export / f"{MODEL}_sub-{subject:02d}_roi-{roi}.npz"
    with np.load(path, allow_pickle=False) as f:
        return f["fmri/ncsnr"]


def kept(export: Path, subject: int, roi: str, threshold: float) -> list[int]:
    return [v for v, x in enumerate(ncsnr(export, subject, roi)) if x > threshold]


def rows(store: Path, subject: int, roi: str) -> np.ndarray:
    return zarr.open_group(str(store), mode="r")[f"sub-{subject:02d}/{roi}"][:]


def univariate_responses(store, export, subject, roi, threshold) -> list[float]:
    """Per image, the mean over the kept voxels (exact sum)."""
    data = rows(store, subject, roi)
    voxels = kept(export, subject, roi, threshold)
    return [math.fsum(float(data[i, v]) for v in voxels) / len(voxels) for i in range(len(data))]


def mean_over(subject_lists: list[list[float]]) -> list[float]:
    return [math.fsum(vals) / len(vals) for vals in zip(*subject_lists, strict=True)]


def rankings(r1, r2, b1, b2, margin, images=None) -> dict[str, list[int]]:
    """The four rankings of ``images`` (default all), each filtered by the margin rule."""
    images = list(range(len(r1))) if images is None else list(images)
    by_sum = sorted(images, key=lambda i: r1[i] + r2[i])
    by_diff = sorted(images, key=lambda i: r1[i] - r2[i])
    out = {}
    rules = {
        "high_1_high_2": (by_sum[::-1], True, True),
        "low_1_low_2": (by_sum, False, False),
        "high_1_low_2": (by_diff[::-1], True, False),
        "low_1_high_2": (by_diff, False, True),
    }
    for name, (order, high_1, high_2) in rules.items():
        kept_images = []
        for i in order:
            ok_1 = r1[i] >= b1 + margin if high_1 else r1[i] <= b1 - margin
            ok_2 = r2[i] >= b2 + margin if high_2 else r2[i] <= b2 - margin
            if ok_1 and ok_2:
                kept_images.append(i)
        out[name] = kept_images
    return out


def rsm(data: np.ndarray, voxels: list[int], images: list[int]) -> list[list[float]]:
    """Pearson r of every pair of images (lower triangle filled), pair by pair."""
    x = data[:, voxels].astype(np.float64)
    n = len(images)
    out = [[0.0] * n for _ in range(n)]
    for a in range(n):
        for b in range(a):
            out[a][b] = float(pearsonr(x[images[a]], x[images[b]])[0])
    return out


def rsa_score(store, export, subjects, rois, threshold, images) -> float:
    """Pearson r between the two ROIs' subject-averaged RSMs over the batch's lower triangle."""
    triangles = []
    for roi in rois:
        per_subject = [
            rsm(rows(store, s, roi), kept(export, s, roi, threshold), list(images))
            for s in subjects
        ]
        n = len(images)
        triangles.append(
            [
                math.fsum(m[a][b] for m in per_subject) / len(subjects)
                for a in range(n)
                for b in range(a)
            ]
        )
    return float(pearsonr(triangles[0], triangles[1])[0])


def benjamini_hochberg(p_values: list[float], alpha: float = 0.05) -> list[bool]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    largest = -1
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= rank / m * alpha:
            largest = rank
    decisions = [False] * m
    for rank, i in enumerate(order, start=1):
        decisions[i] = rank <= largest
    return decisions
