"""Responses on their way to brain space: run stores read back, encode outputs, metadata.

``berg-onnx volume`` and ``berg-onnx plot`` (and ``encode --out r.nii.gz``)
take responses from an encode output (``.npy`` + ``.paths.txt``, or a NIfTI)
or from a run store, read through ``berg_onnx.experiment.store.ExperimentStore``
opened read-only (``sub-01/V1`` (N, nv) float32 arrays with
``model_files``/``voxel_order`` attributes, ``stimuli`` labels, the model
source in the root attributes), and find the metadata that puts them in space;
the commands themselves are ``berg_onnx.cli.brain``'s. The conversions live in
volume.py and plot.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from berg_onnx.brain.volume import write_nifti
from berg_onnx.errors import ModelLoadError
from berg_onnx.experiment.job import array_name
from berg_onnx.experiment.store import ExperimentStore, is_store_path
from berg_onnx.utils.outputs import read_listing_bounded

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def is_store(path: str | Path) -> bool:
    """A Zarr v3 store folder (root zarr.json), or a path named *.zarr."""
    return Path(path).suffix.lower() == ".zarr" or is_store_path(path)


#: Run stores are read through the experiment's one store class, read-only
#: (``ExperimentStore.open(path)``); the name is kept for callers of the old reader.
RunStore = ExperimentStore


def store_metadata(berg: Any, store: ExperimentStore, subject: int, roi: str) -> dict[str, Any]:
    """A model's metadata, checked against the metadata file the store's run used (sha256)."""
    entry = berg.store.manifest().get(store.model_id, subject, roi)
    recorded = store.model_files(subject, roi).get(entry.metadata.name)
    if recorded is not None and recorded != entry.metadata.sha256:
        raise ModelLoadError(
            f"the metadata of {array_name(subject, roi)} in {berg.store.describe()} "
            f"(sha256 {entry.metadata.sha256[:12]}...) is not the one {store.path} was computed "
            f"with ({recorded[:12]}...); pass the --berg-dir or --repo-id/--revision it used"
        )
    return berg.get_model_metadata(store.model_id, subject, roi)


@dataclass(frozen=True)
class Loaded:
    """Responses of one subject, per ROI, with their metadata and row labels."""

    responses: dict[str, Any]  # roi -> (N, nv) array-like
    metadata: dict[str, dict[str, Any]]
    labels: list[str] | None
    model_id: str


def labels_beside(listing: Path, shape: tuple[int, ...]) -> list[str] | None:
    """The encode output's row labels, when the listing beside it matches its rows."""
    if not listing.is_file() or len(shape) != 2:
        return None
    # escaped names as encode wrote them (outputs.py), never more lines than rows
    return read_listing_bounded(listing, shape[0])


def describe_responses(model_id: str, subject: int, rois: Sequence[str]) -> str:
    return f"berg-onnx {model_id} sub-{subject:02d} {'+'.join(rois)} z-scored responses"


def single_or_all(loaded: Loaded) -> tuple[Any, Any]:
    """A single ROI as (responses, metadata); several as the {roi: ...} dicts."""
    if len(loaded.responses) == 1:
        (roi,) = loaded.responses
        return loaded.responses[roi], loaded.metadata[roi]
    return loaded.responses, loaded.metadata


def nifti_writer(out: Path, berg: Any, model: Any) -> Callable[[BinaryIO, np.ndarray], None]:
    """encode --out r.nii.gz: writes the (N, nv) responses as a 4-D NIfTI in the subject's
    space, for outputs.write_responses (which pairs it with r.paths.txt)."""
    meta = berg.get_model_metadata(model.model_id, model.subject, model.roi)
    gz = str(out).lower().endswith(".gz")
    description = describe_responses(model.model_id, model.subject, [model.roi])

    def write(f: BinaryIO, responses: np.ndarray) -> None:
        write_nifti(f, gz, responses, meta, description=description)

    return write
