"""What an experiment is: one image set x a grid of (subject, ROI) models.

An ``ExperimentJob`` is everything a store needs to be created or checked, and
everything an engine needs to compute it; it is plain, picklable data, so the
local engine and a distributed one (Ray) plan the same way and write the same
store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from berg_onnx.constants import (
    DEFAULT_MODEL_ID,
    check_positive_int,
    check_precision,
)
from berg_onnx.errors import InvalidParameterError
from berg_onnx.experiment.stimuli import StimulusSet, resolve_stimuli
from berg_onnx.model import EncodingModel, load_encoding_model
from berg_onnx.session import check_device
from berg_onnx.source.catalog import Catalog
from berg_onnx.source.local import ModelSource
from berg_onnx.source.manifest import ModelEntry, OfModel, model_key
from berg_onnx.utils.progress import ProgressBar

ALL = "all"


class ModelLibrary(Protocol):
    """What planning and running an experiment need of a ``BERG``: its catalogue, where its
    model files come from, and its loop settings (a protocol, so this layer never imports
    the API above it)."""

    catalog: Catalog
    store: ModelSource
    batch_size: int | None
    threads: int


@dataclass(frozen=True, eq=False)
class ModelPlan(OfModel):
    """One (subject, ROI) model of the grid, identified by its files' sha256s.

    Compared and hashed by identity: one plan per model per job.
    """

    entry: ModelEntry = field(repr=False)
    precision: str

    @property
    def name(self) -> str:
        """The model's array in the store, e.g. ``sub-01/V1``."""
        return array_name(self.subject, self.roi)

    @property
    def model_files(self) -> dict[str, str]:
        """File name -> sha256 of the graph that runs and of the metadata (the manifest's)."""
        files = (self.entry.onnx_file(self.precision), self.entry.metadata)
        return {f.name: f.sha256 for f in files}


def array_name(subject: int, roi: str) -> str:
    return f"sub-{subject:02d}/{roi}"


@dataclass(frozen=True)
class ExperimentJob:
    """An image set and the models to run on it; ``chunk_size`` None: the store's, or 256."""

    model_id: str
    source: dict[str, str]  # {"repo_id", "revision"} or {"export_dir"}
    stimuli: StimulusSet
    models: tuple[ModelPlan, ...]
    chunk_size: int | None = None

    @property
    def n_images(self) -> int:
        return len(self.stimuli)

    def model(self, subject: int, roi: str) -> ModelPlan:
        for m in self.models:
            if m.subject == subject and m.roi == roi:
                return m
        raise InvalidParameterError(f"{array_name(subject, roi)} is not part of this experiment")


def _source_attrs(store: ModelSource) -> dict[str, str]:
    """How the store's files are found again: a Hub repo + revision, or an export folder."""
    if hasattr(store, "repo_id"):
        return {"repo_id": str(store.repo_id), "revision": str(store.revision)}
    return {"export_dir": str(store.root.resolve())}


def _choose(value: Any, available: list, check, what: str) -> list:
    """``"all"`` -> every available value; otherwise each value checked, in the given order."""
    if isinstance(value, str) and value == ALL:
        return list(available)
    if isinstance(value, (str, int)) or not isinstance(value, Iterable):
        value = [value]
    values = list(value)
    if values == [ALL]:
        return list(available)
    if not values:
        raise InvalidParameterError(f"{what} must be '{ALL}' or a non-empty list")
    chosen = [check(v) for v in values]
    if len(set(chosen)) != len(chosen):
        raise InvalidParameterError(f"{what} lists a value twice: {values}")
    return chosen


def plan_experiment(
    berg: ModelLibrary,
    stimulus: Any,
    subjects: Any = ALL,
    rois: Any = ALL,
    *,
    model_id: str = DEFAULT_MODEL_ID,
    precision: str = "fp32",
    chunk_size: int | None = None,
) -> ExperimentJob:
    """The job for ``BERG.run``: the stimuli resolved, every requested model in the export.

    ``"all"`` subjects or ROIs means those the model source has (all 184 models
    on the Hub); explicit ones must exist, or the error lists what does.
    """
    check_precision(precision)
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    spec = berg.catalog.model(model_id)
    manifest = berg.store.manifest()
    present = set(manifest.models)

    def rois_of(subject: int) -> list[str]:
        return [r for r in spec.roi_names if model_key(spec.model_id, subject, r) in present]

    have_subjects = [s for s in spec.subjects if rois_of(s)]
    chosen_subjects = _choose(subjects, have_subjects, spec.check_subject, "subjects")
    plans = []
    for s in chosen_subjects:
        for roi in _choose(rois, rois_of(s), lambda r: spec.check_roi(r).name, "rois"):
            entry = manifest.get(spec.model_id, s, roi)  # ModelNotFoundError names what exists
            entry.onnx_file(precision)  # fails now if the export has no such tier
            plans.append(ModelPlan(entry=entry, precision=precision))
    if not plans:
        raise InvalidParameterError(f"{berg.store.describe()} has none of the requested models")
    return ExperimentJob(
        model_id=spec.model_id,
        source=_source_attrs(berg.store),
        stimuli=resolve_stimuli(stimulus),
        models=tuple(plans),
        chunk_size=chunk_size,
    )


def as_model_input(rows: np.ndarray) -> np.ndarray:
    """float32 model input in [0, 1] from preprocessed uint8 rows: the values encode() makes."""
    x = rows.astype(np.float32)
    x /= np.float32(255)
    return x


def encode_rows(
    model: EncodingModel, rows: np.ndarray, bar: ProgressBar | None = None
) -> np.ndarray:
    """(n, nv) responses of preprocessed uint8 rows (StimulusSet.read), in encode()'s loop.

    Engines call it once per chunk (or on whole chunks stacked, when the batch size
    divides the chunk size), so that no batch straddles two chunks: a chunk's rows
    are then the same whichever run computes it.
    """
    return model.run_preprocessed(lambda a, b: as_model_input(rows[a:b]), len(rows), bar=bar)


def load_model(
    source: ModelSource,
    plan: ModelPlan,
    device: str,
    *,
    batch_size: int | None = None,
    threads: int = 1,
) -> EncodingModel:
    """A fresh model outside BERG's cache, so a grid holds only the models it is running.

    Its schedule is fixed at load (workers on CPU, prefetching on CUDA): every
    batch then runs on the same single-threaded CPU session whatever the number
    of rows, so a resumed run computes bit-identical rows.
    """
    device = check_device(device)
    return load_encoding_model(
        source,
        plan.entry,
        device,
        plan.precision,
        batch_size=batch_size,
        threads=threads,
        schedule="fixed",
    )


def voxel_space(source: ModelSource, plan: ModelPlan) -> tuple[np.ndarray, np.ndarray]:
    """(roi_mask_volume, fmri_affine) of one model, from its metadata file in ``source``:
    where its voxels are, for the store's voxel coordinates."""
    from berg_onnx.source.metadata import load_npz

    meta = load_npz(source.fetch(plan.entry.metadata), nv=plan.n_voxels)
    return np.asarray(meta["fmri"]["roi_mask_volume"]), np.asarray(meta["fmri"]["fmri_affine"])
