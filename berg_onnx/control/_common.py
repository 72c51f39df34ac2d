"""What both RNC variants share: parameters, seeds, folds, the valid-image pool."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from berg_onnx.errors import InvalidParameterError

#: The authors' seed (spec: "Seeds"); every random step derives its stream from the seed.
SEED = 20200220
NCSNR_THRESHOLD = 0.5
NULL_SAMPLES = 1_000_000
STATS_SAMPLES = 100_000  # bootstrap resamples and permutations
MEMORY = 2 << 30

# One independent stream per random step: (seed, step, subject) -> SeedSequence entropy.
STREAM_UNI_NULL = 1
STREAM_UNI_PERMUTATION = 2
STREAM_UNI_BOOTSTRAP = 3
STREAM_MULTI_NULL = 4
STREAM_MULTI_SEARCH = 5
STREAM_MULTI_BOOTSTRAP = 6


def rng(seed: int, step: int, subject: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, step, subject]))


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise InvalidParameterError(
            f"{name} must be an integer >= {minimum}, got {value!r}"
        ) from None
    if value < minimum:
        raise InvalidParameterError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_float(value: Any, name: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise InvalidParameterError(f"{name} must be a finite number{bound}, got {value}")
    return value


def check_rois(roi_1: Any, roi_2: Any) -> tuple[str, str]:
    for r in (roi_1, roi_2):
        if not isinstance(r, str) or not r:
            raise InvalidParameterError(f"ROIs are names such as 'V1', got {r!r}")
    if roi_1 == roi_2:
        raise InvalidParameterError(f"RNC compares two different ROIs; got {roi_1!r} twice")
    return roi_1, roi_2


@dataclass(frozen=True)
class Fold:
    """Train subjects and the left-out test subject (None without cross-validation)."""

    train: tuple[int, ...]
    test: int | None


def folds(subjects: tuple[int, ...], cv: bool) -> tuple[Fold, ...]:
    if not cv:
        return (Fold(subjects, None),)
    return tuple(Fold(tuple(x for x in subjects if x != s), s) for s in subjects)


def check_pool(n_valid: int, n_images: int, n_store: int, excluded: int, what: str) -> None:
    if n_valid < n_images:
        raise InvalidParameterError(
            f"{what} needs at least {n_images} images (the batch size); the store has "
            f"{n_store}, {excluded} of them left out (NaN rows), so {n_valid} remain: use a "
            "smaller n_images (--n-images) or a store with more images"
        )
