"""The brain-space commands' inputs and outputs: encode files, run stores, their metadata.

``berg-onnx volume`` and ``berg-onnx plot`` (and ``encode --out r.nii.gz``)
take responses from an encode output (``.npy`` + ``.paths.txt``, or a NIfTI)
or from a run store (Zarr, issue #14's layout: ``sub-01/V1`` (N, nv) float32
arrays with ``model_files``/``voxel_order`` attributes, ``stimuli`` labels,
the model source in the root attributes), find the metadata that puts them in
space, and write the result atomically. The conversions themselves live in
volume.py and plot.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from berg_onnx.brain.volume import from_nifti, require_nibabel, save_nifti, write_nifti
from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError
from berg_onnx.experiment.store import DONE, import_zarr, missing_chunks
from berg_onnx.utils.outputs import is_nifti_path, listing_path, read_listing, write_pair

#: The run store's statement of its voxel order (issue #14's contract).
VOXEL_ORDER = "roi_mask_volume C-order"
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


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
        if not isinstance(source, dict) or not ("export_dir" in source or "repo_id" in source):
            raise ModelLoadError(
                f"{path} has no model source in its root attributes (source: "
                f"{{'repo_id', 'revision'}} or {{'export_dir'}}); is it a berg-onnx run store?"
            )
        return cls(path, root, str(attrs.get("model_id", DEFAULT_MODEL_ID)), dict(source))

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
        if f"{DONE}/{name}" in self.root:  # the writer's completion records (experiment/store.py)
            missing = missing_chunks(self.root, subject, roi)
            if missing:
                n_chunks = self.root[f"{DONE}/{name}"].shape[0]
                raise ModelLoadError(
                    f"{self.path}/{name} is incomplete ({len(missing)} of {n_chunks} chunks "
                    "not written); run the same `berg-onnx run` command again to finish it"
                )
        return array

    def labels(self) -> list[str] | None:
        if "stimuli" not in self.root:
            return None
        return [str(s) for s in self.root["stimuli"][:]]

    def model_files(self, subject: int, roi: str) -> dict[str, str]:
        return dict(self.root[_array_name(subject, roi)].attrs.get("model_files") or {})


def make_berg(
    store: RunStore | None,
    berg_dir: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
):
    """The BERG to read metadata from: the override given, else the store's source, else the Hub."""
    from berg_onnx.api import BERG

    if berg_dir:
        return BERG(berg_dir=berg_dir)
    if repo_id or revision or store is None:
        return BERG(repo_id=repo_id, revision=revision)
    if "export_dir" in store.source:
        export_dir = Path(store.source["export_dir"])
        if not export_dir.is_dir():
            raise ModelNotFoundError(
                f"{store.path} was written from the export {export_dir}, which is not there "
                "now; pass --berg-dir (or --repo-id/--revision) to read the metadata elsewhere"
            )
        return BERG(berg_dir=export_dir)
    return BERG(repo_id=store.source.get("repo_id"), revision=store.source.get("revision"))


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


def load_responses(
    input_path: str,
    subject: int,
    rois: Sequence[str],
    berg_dir: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
) -> Loaded:
    """Responses + metadata from a run store, an encode .npy or an encode NIfTI."""
    path = Path(input_path)
    if is_store(path):
        store = RunStore.open(path)
        berg = make_berg(store, berg_dir, repo_id, revision)
        rois = [berg.catalog.model(store.model_id).check_roi(r).name for r in rois]
        responses = {r: store.responses(subject, r) for r in rois}
        metadata = {r: store_metadata(berg, store, subject, r) for r in rois}
        return Loaded(responses, metadata, store.labels(), store.model_id)
    if len(rois) != 1:
        raise InvalidParameterError(
            f"{path} holds one ROI's responses; give one --roi (several ROIs come from a run store)"
        )
    if not (is_nifti_path(path) or path.suffix.lower() == ".npy"):
        raise InvalidParameterError(
            f"{path}: give an encode output (.npy, .nii, .nii.gz) or a run store (.zarr)"
        )
    if not path.is_file():
        raise ModelNotFoundError(f"no such file: {path}")
    berg = make_berg(None, berg_dir, repo_id, revision)
    roi = berg.catalog.model(DEFAULT_MODEL_ID).check_roi(rois[0]).name
    meta = berg.get_model_metadata(DEFAULT_MODEL_ID, subject, roi)
    if is_nifti_path(path):
        rows = from_nifti(path, meta)
    else:
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise InvalidParameterError(f"{path} is not a plain numpy array: {e}") from None
    labels = _labels(listing_path(path), np.shape(rows))
    return Loaded({roi: rows}, {roi: meta}, labels, DEFAULT_MODEL_ID)


def _labels(listing: Path, shape: tuple[int, ...]) -> list[str] | None:
    """The encode output's row labels, when the listing beside it matches its rows."""
    if not listing.is_file() or len(shape) != 2:
        return None
    lines = read_listing(listing)  # escaped names as encode wrote them (outputs.py)
    return lines if len(lines) == shape[0] else None


def _description(model_id: str, subject: int, rois: Sequence[str]) -> str:
    return f"berg-onnx {model_id} sub-{subject:02d} {'+'.join(rois)} z-scored responses"


def _only(loaded: Loaded) -> tuple[Any, Any]:
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
    description = _description(model.model_id, model.subject, [model.roi])

    def write(f: BinaryIO, responses: np.ndarray) -> None:
        write_nifti(f, gz, responses, meta, description=description)

    return write


def volume_command(
    input_path: str,
    subject: int,
    rois: Sequence[str],
    out: Path,
    *,
    fill: float = 0.0,
    overlap: Any = None,
    berg_dir: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
) -> str:
    """berg-onnx volume: a store's (or encode output's) responses as a NIfTI; returns a summary."""
    require_nibabel()
    loaded = load_responses(input_path, subject, rois, berg_dir, repo_id, revision)
    responses, metadata = _only(loaded)
    description = _description(loaded.model_id, subject, list(loaded.responses))
    n = np.shape(next(iter(loaded.responses.values())))[0]
    written = [out]
    if loaded.labels is None:
        save_nifti(out, responses, metadata, fill, overlap=overlap, description=description)
    else:  # the volume and its rows' listing as one pair (outputs.py)
        gz = str(out).lower().endswith(".gz")
        written.append(
            write_pair(
                out,
                loaded.labels,
                lambda f: write_nifti(
                    f, gz, responses, metadata, fill, overlap=overlap, description=description
                ),
            )
        )
    return (
        f"wrote {' and '.join(map(str, written))} ({n} images, ROIs {', '.join(loaded.responses)})"
    )


def plot_command(
    input_path: str | None,
    subject: int,
    rois: Sequence[str],
    out: Path,
    *,
    image: int | None = None,
    accuracy: bool = False,
    view: str = "ortho",
    overlap: Any = None,
    berg_dir: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
) -> str:
    """berg-onnx plot: a response map (or --accuracy figure) saved to a PNG/PDF/SVG file."""
    from berg_onnx.brain import plot
    from berg_onnx.utils.fileio import atomic_path

    plot.require_matplotlib()
    if accuracy:
        if len(rois) != 1:
            raise InvalidParameterError("--accuracy plots one ROI: give one --roi")
        if input_path is not None and is_store(input_path):
            store = RunStore.open(input_path)
            berg = make_berg(store, berg_dir, repo_id, revision)
            meta = store_metadata(berg, store, subject, rois[0])
        else:
            berg = make_berg(None, berg_dir, repo_id, revision)
            meta = berg.get_model_metadata(DEFAULT_MODEL_ID, subject, rois[0])
        fig = plot.accuracy(meta, subject=subject, roi=rois[0])
    else:
        if input_path is None:
            raise InvalidParameterError(
                "give INPUT (an encode .npy/.nii.gz or a run store) or --accuracy"
            )
        require_nibabel()
        loaded = load_responses(input_path, subject, rois, berg_dir, repo_id, revision)
        responses, metadata = _only(loaded)
        name = None
        if image is not None and loaded.labels is not None and 0 <= image < len(loaded.labels):
            name = Path(loaded.labels[image]).name
            name = None if name == str(image) else name  # an array input's rows are "0", "1", ...
        fig = plot.response_map(
            responses,
            metadata,
            image,
            subject=subject,
            roi=", ".join(loaded.responses),
            view=view,
            image_name=name,
            overlap=overlap,
        )
    fmt = out.suffix.lower().lstrip(".")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt)
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    return f"wrote {out} ({width}x{height} px)" if fmt == "png" else f"wrote {out}"
