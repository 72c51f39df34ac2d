"""Responses on their way to brain space: run stores read back, encode outputs, metadata.

``berg-onnx volume`` and ``berg-onnx plot`` (and ``encode --out r.nii.gz``)
take responses from an encode output (``.npy`` + ``.paths.txt``, or a NIfTI)
or from a run store (the Zarr layout of ``berg_onnx.experiment.store``:
``sub-01/V1`` (N, nv) float32 arrays with ``model_files``/``voxel_order``
attributes, ``stimuli`` labels, the model source in the root attributes) and
find the metadata that puts them in space; the commands themselves are
``berg_onnx.cli.brain``'s. The conversions live in volume.py and plot.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from berg_onnx.brain.volume import write_nifti
from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.errors import BERGError, ModelLoadError, ModelNotFoundError
from berg_onnx.experiment.store import (
    DONE,
    STIMULI,
    check_geometry,
    check_model_array,
    check_stimuli_array,
    import_zarr,
    missing_chunks,
)
from berg_onnx.utils.outputs import read_listing_bounded

#: The run store's statement of its voxel order (the store's contract).
VOXEL_ORDER = "roi_mask_volume C-order"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
#: Labels read per piece, and the longest label kept (a file path; longer ones are cut).
_LABEL_PIECE = 1 << 16
_MAX_LABEL = 4096


def is_store(path: str | Path) -> bool:
    """A Zarr v3 store folder (root zarr.json), or a path named *.zarr."""
    p = Path(path)
    return p.suffix.lower() == ".zarr" or (p.is_dir() and (p / "zarr.json").is_file())


def _array_name(subject: int, roi: str) -> str:
    return f"sub-{subject:02d}/{roi}"


@dataclass(frozen=True)
class RunStore:
    """A run store opened read-only: its model source and its (subject, ROI) arrays."""

    path: Path
    root: Any
    model_id: str
    source: dict[str, str]

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        zarr = import_zarr()
        path = Path(path)
        if not path.is_dir():
            raise ModelNotFoundError(f"no run store at {path} (a folder written by berg-onnx run)")
        try:
            root = zarr.open_group(store=str(path), mode="r")
        except Exception as e:  # noqa: BLE001 - zarr raises several kinds for a non-store
            raise ModelLoadError(f"{path} is not a readable Zarr store ({e})") from None
        attrs = dict(root.attrs)
        source = attrs.get("source")
        if isinstance(source, dict) and not all(
            isinstance(v, str) and len(v) < 4096 for v in source.values()
        ):
            source = None  # values of another type: no source it can be read from
        if not isinstance(source, dict) or not ("export_dir" in source or "repo_id" in source):
            raise ModelLoadError(
                f"{path} has no model source in its root attributes (source: "
                f"{{'repo_id', 'revision'}} or {{'export_dir'}}); is it a berg-onnx run store?"
            )
        model_id = attrs.get("model_id", DEFAULT_MODEL_ID)
        if not isinstance(model_id, str):
            raise ModelLoadError(f"{path}: root attribute model_id is not a string")
        return cls(path, root, model_id, dict(source))

    def arrays(self) -> list[str]:
        names = []
        for group_name, group in sorted(self.root.groups()):
            if group_name.startswith("sub-"):
                names += [f"{group_name}/{a}" for a, _ in sorted(group.arrays())]
        return names

    def responses(self, subject: int, roi: str) -> Any:
        """The (N, nv) array of one model (read lazily), checked complete and in mask order."""
        name = _array_name(subject, roi)
        try:
            array = self.root[name]
        except KeyError:
            raise ModelNotFoundError(
                f"{self.path} has no array {name}; it holds: {', '.join(self.arrays()) or 'none'}"
            ) from None
        order = array.attrs.get("voxel_order")
        if order != VOXEL_ORDER:
            raise ModelLoadError(
                f"{self.path}/{name} states voxel_order {order!r}, not {VOXEL_ORDER!r}: its "
                "columns cannot be put back in space"
            )
        try:  # the contract of experiment/store.py, before a byte is trusted
            n_images, chunk_size = check_geometry(self.root.attrs, str(self.path))
            check_model_array(array, n_images, chunk_size, f"{self.path}/{name}")
        except BERGError as e:
            raise ModelLoadError(str(e)) from None
        if f"{DONE}/{name}" in self.root:  # the writer's completion records (experiment/store.py)
            try:
                missing = missing_chunks(self.root, subject, roi)
            except BERGError as e:
                raise ModelLoadError(str(e)) from None
            if missing:
                n_chunks = self.root[f"{DONE}/{name}"].shape[0]
                raise ModelLoadError(
                    f"{self.path}/{name} is incomplete ({len(missing)} of {n_chunks} chunks "
                    "not written); run the same `berg-onnx run` command again to finish it"
                )
        return array

    def labels(self) -> list[str] | None:
        """The row labels, checked one per image and read in bounded pieces."""
        if STIMULI not in self.root:
            return None
        try:
            n_images, _ = check_geometry(self.root.attrs, str(self.path))
            check_stimuli_array(self.root, n_images, str(self.path))
        except BERGError as e:
            raise ModelLoadError(str(e)) from None
        stimuli = self.root[STIMULI]
        labels: list[str] = []
        step = _LABEL_PIECE
        for lo in range(0, n_images, step):
            labels += [str(s)[:_MAX_LABEL] for s in stimuli[lo : min(n_images, lo + step)]]
        return labels

    def model_files(self, subject: int, roi: str) -> dict[str, str]:
        files = self.root[_array_name(subject, roi)].attrs.get("model_files") or {}
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ModelLoadError(
                f"{self.path}/{_array_name(subject, roi)}: attribute model_files is not a "
                "{file name: sha256} mapping; the store is damaged"
            )
        return dict(files)


def store_metadata(berg: Any, store: RunStore, subject: int, roi: str) -> dict[str, Any]:
    """A model's metadata, checked against the metadata file the store's run used (sha256)."""
    entry = berg.store.manifest().get(store.model_id, subject, roi)
    recorded = store.model_files(subject, roi).get(entry.metadata.name)
    if recorded is not None and recorded != entry.metadata.sha256:
        raise ModelLoadError(
            f"the metadata of {_array_name(subject, roi)} in {berg.store.describe()} "
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
