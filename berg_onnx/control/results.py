"""RNC results: frozen dataclasses, saved as JSON + npz and read back.

Row indices are always rows of the run store (``labels[i]`` names row ``i``); ``-1``
stands for "no subject" (the test subject without cross-validation). A result file is
``NAME.json`` (parameters, scalars, the layout) beside ``NAME.npz`` (the arrays, read
without pickle); the npz is written first and the JSON records its sha256, each by an
atomic rename, so a crash leaves either the previous pair or no JSON, never a torn one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from berg_onnx.errors import InvalidParameterError, ModelLoadError
from berg_onnx.utils.fileio import atomic_write_bytes

#: Univariate conditions, in the method's order: sum descending/ascending, difference
#: ROI1 - ROI2 descending/ascending.
CONDITIONS = ("high_1_high_2", "low_1_low_2", "high_1_low_2", "low_1_high_2")
FORMAT = "berg-onnx-rnc"
FORMAT_VERSION = 1
_Fold = TypeVar("_Fold")


def _names(labels: tuple[str, ...], rows: np.ndarray) -> list[str]:
    return [labels[int(i)] for i in np.ravel(rows)]


class _LeftOut:
    """Every result records the store rows it left out (``excluded_images``)."""

    excluded_images: np.ndarray

    @property
    def n_excluded(self) -> int:
        return int(self.excluded_images.size)


class _Folds(_LeftOut, Generic[_Fold]):
    """A cross-validated result: ``folds[i]`` left ``subjects[i]`` out."""

    subjects: tuple[int, ...]
    folds: tuple[_Fold, ...]

    def fold(self, test_subject: int) -> _Fold:
        return self.folds[self.subjects.index(test_subject)]


@dataclasses.dataclass(frozen=True, eq=False)
class UnivariateBaseline:
    """One ROI's univariate baseline per fold (one fold without cv)."""

    roi: str
    subjects: tuple[int, ...]
    test_subjects: tuple[int, ...]  # per fold; -1 without cv
    images: np.ndarray  # (folds, n_images) store rows of the baseline batch
    scores: np.ndarray  # (folds,) its score on the train subjects
    test_scores: np.ndarray  # (folds,) on the test subject (NaN without cv)
    null_means: np.ndarray  # (folds,) mean of the null distribution
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class UnivariateResult(_LeftOut):
    """Univariate RNC chosen on ``train_subjects`` (all subjects without cv)."""

    rois: tuple[str, str]
    subjects: tuple[int, ...]
    train_subjects: tuple[int, ...]
    test_subject: int  # -1 without cv
    responses: np.ndarray  # (subjects, 2, images) per-subject univariate responses (NaN: left out)
    train_responses: np.ndarray  # (2, images) mean over the train subjects
    baseline_scores: np.ndarray  # (2,)
    baseline_images: np.ndarray  # (2, n_images)
    test_baseline_scores: np.ndarray  # (2,) the baseline batches on the test subject (NaN)
    controlling_images: dict[str, np.ndarray]  # condition -> store rows, in ranking order
    rankings: dict[str, np.ndarray]  # condition -> every image that passes the margin
    excluded_images: np.ndarray  # store rows left out (NaN rows in a subject or ROI used)
    labels: tuple[str, ...]
    baselines: tuple[UnivariateBaseline, ...]
    params: dict[str, Any]

    def image_names(self, condition: str) -> list[str]:
        """The stimulus names of a condition's controlling images."""
        return _names(self.labels, self.controlling_images[condition])


@dataclasses.dataclass(frozen=True, eq=False)
class UnivariateStats:
    """Cross-validated statistics: conditions are the four, then "baseline"."""

    conditions: tuple[str, ...]
    test_subjects: tuple[int, ...]
    test_responses: np.ndarray  # (subjects, 5, 2) mean test response per condition and ROI
    ci: np.ndarray  # (5, 2, 2) condition, (2.5%, 97.5%), ROI
    p_values: np.ndarray  # (subjects, 4, 2) within-subject, condition minus baseline
    significant: np.ndarray  # (subjects, 4, 2) BH-FDR over the 8 tests of each subject
    between_p: np.ndarray  # (4, 2) binomial P(k or more subjects significant)
    alpha: float


@dataclasses.dataclass(frozen=True, eq=False)
class UnivariateCV(_Folds["UnivariateResult"]):
    """Leave-one-subject-out univariate RNC: one result per left-out subject + stats."""

    rois: tuple[str, str]
    subjects: tuple[int, ...]
    responses: np.ndarray  # (subjects, 2, images)
    folds: tuple[UnivariateResult, ...]  # folds[i] leaves subjects[i] out
    stats: UnivariateStats
    excluded_images: np.ndarray
    labels: tuple[str, ...]
    baselines: tuple[UnivariateBaseline, ...]
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class MultivariateResult(_LeftOut):
    """Multivariate RNC (one condition) chosen on ``train_subjects``."""

    rois: tuple[str, str]
    condition: str
    subjects: tuple[int, ...]
    train_subjects: tuple[int, ...]
    test_subject: int  # -1 without cv
    best_images: np.ndarray  # (n_images,) store rows of the last generation's best batch
    best_score: float  # its RSA score on the train subjects, float64 from the store
    scores: np.ndarray  # (generations,) best score per generation, as the search ranked it
    best_batches: np.ndarray  # (generations, n_images) the best batch of each generation
    baseline_images: np.ndarray  # (n_images,) the null batch closest to the null mean
    baseline_score: float  # its score on the train subjects (float64)
    null_mean: float  # mean of the null distribution (search precision)
    test_scores: np.ndarray  # (generations,) best batches on the test subject (NaN)
    test_score: float  # the final best batch on the test subject (float64; NaN)
    test_baseline_score: float  # the baseline batch on the test subject (float64; NaN)
    null_test_scores: np.ndarray  # first 3 x permutations null batches on the test subject
    excluded_images: np.ndarray
    labels: tuple[str, ...]
    params: dict[str, Any]

    @property
    def best_image_names(self) -> list[str]:
        return _names(self.labels, self.best_images)


@dataclasses.dataclass(frozen=True, eq=False)
class MultivariateStats:
    """Cross-validated statistics of one or both conditions (FDR over those given)."""

    conditions: tuple[str, ...]
    test_subjects: tuple[int, ...]
    test_scores: np.ndarray  # (subjects, conditions) test RSA of the final best batch
    test_baseline_scores: np.ndarray  # (subjects,)
    ci: np.ndarray  # (conditions + 1, 2): each condition, then the baseline
    p_values: np.ndarray  # (subjects, conditions)
    significant: np.ndarray  # (subjects, conditions)
    between_p: np.ndarray  # (conditions,)
    alpha: float


@dataclasses.dataclass(frozen=True, eq=False)
class MultivariateCV(_Folds["MultivariateResult"]):
    """Leave-one-subject-out multivariate RNC: one result per left-out subject + stats."""

    rois: tuple[str, str]
    condition: str
    subjects: tuple[int, ...]
    folds: tuple[MultivariateResult, ...]
    stats: MultivariateStats
    excluded_images: np.ndarray
    labels: tuple[str, ...]
    params: dict[str, Any]


_TYPES = {
    cls.__name__: cls
    for cls in (
        UnivariateBaseline,
        UnivariateResult,
        UnivariateStats,
        UnivariateCV,
        MultivariateResult,
        MultivariateStats,
        MultivariateCV,
    )
}


# -- saving and loading ------------------------------------------------------------------
def _encode(value: Any, arrays: dict[str, np.ndarray], key: str) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            "__type__": type(value).__name__,
            "fields": {
                f.name: _encode(getattr(value, f.name), arrays, f"{key}{f.name}/")
                for f in dataclasses.fields(value)
            },
        }
    if isinstance(value, np.ndarray):
        for name, saved in arrays.items():  # the same array in several folds: saved once
            if saved is value:
                return {"__array__": name}
        name = key.rstrip("/")
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays, f"{key}{i}/") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"__dict__": {str(k): _encode(v, arrays, f"{key}{k}/") for k, v in value.items()}}
    if isinstance(value, list):
        return [_encode(v, arrays, f"{key}{i}/") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__tuple__" in value:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
        if "__type__" in value:
            cls = _TYPES.get(value["__type__"])
            if cls is None:
                raise ModelLoadError(f"unknown RNC result type {value['__type__']!r}")
            return cls(**{k: _decode(v, arrays) for k, v in value["fields"].items()})
        return value
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def _arrays_path(path: Path) -> Path:
    return path.with_suffix(".npz")


def save_result(result: Any, path: str | os.PathLike[str], attrs: dict | None = None) -> Path:
    """Write ``result`` as PATH (.json) + PATH with .npz; returns the JSON path."""
    from berg_onnx._version import __version__

    path = Path(path)
    if path.suffix.lower() != ".json":
        raise InvalidParameterError(f"RNC results are saved as .json (+ .npz); got {path}")
    if type(result).__name__ not in _TYPES:
        raise InvalidParameterError(f"not an RNC result: {type(result).__name__}")
    arrays: dict[str, np.ndarray] = {}
    encoded = _encode(result, arrays, "")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write_bytes(_arrays_path(path), data)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "berg_onnx_version": __version__,
        "arrays": _arrays_path(path).name,
        "arrays_sha256": hashlib.sha256(data).hexdigest(),
        **(attrs or {}),
        "result": encoded,
    }
    atomic_write_bytes(path, (json.dumps(document, indent=1) + "\n").encode())
    return path


def load_result(path: str | os.PathLike[str]) -> Any:
    """The result saved at PATH (.json, with its .npz beside it)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read RNC result {path}: {e}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelLoadError(f"{path} is not a berg-onnx RNC result")
    arrays_path = path.parent / document["arrays"]
    data = arrays_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != document.get("arrays_sha256"):
        raise ModelLoadError(f"{arrays_path} is not the array file {path} was written with")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _decode(document["result"], arrays)
