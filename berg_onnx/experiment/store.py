"""The Zarr experiment store: one array per (subject, ROI) over one image set.

Layout (the contract; README "In silico experiments"):

    <store>/                   root attributes: berg_onnx_version, model_id, source, created
                               (+ format, format_version, n_images, chunk_size, stimulus_*)
      stimuli                  (N,) strings: image paths relative to the input folder,
                               or row indices for an array input
      sub-01/V1                (N, nv) float32, chunks (chunk_size, nv); attributes subject,
                               roi, n_voxels, precision, model_files, voxel_order (+ model_id,
                               split_voxels); split ROIs are one array, split 1 then split 2
      _done/stimuli            (1,) uint8: 1 once `stimuli` is written
      _done/sub-01/V1          (n_chunks,) uint8, one chunk per element: 1 = chunk complete

Crash safety and concurrency: a chunk of rows is always written whole, and its
completion byte is written afterwards, each into its own object, so a writer
killed at any point leaves at worst an unrecorded chunk that is computed again.
No metadata is rewritten after creation, so several processes (or Ray actors)
may write disjoint chunks of the same store at once: the process that creates
or checks the store calls ``create_or_open``; the writers call ``attach``.

Stores are local folders or any URL zarr/fsspec understands (``s3://...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import reprlib
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.errors import ExperimentError, InvalidParameterError, ResourceError
from berg_onnx.experiment.job import ExperimentJob, ModelPlan, array_name

FORMAT = "berg-onnx-experiment"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 256
VOXEL_ORDER = "roi_mask_volume C-order"
STIMULI = "stimuli"
DONE = "_done"
_STIMULI_CHUNK = 1 << 16
_EXTRA = 'pip install "berg-onnx[zarr]"'


def import_zarr() -> Any:
    """zarr, or a one-line error naming the extra that provides it."""
    try:
        import zarr
    except ImportError:
        raise ResourceError(f"experiment stores need zarr: {_EXTRA}") from None
    return zarr


def _is_url(path: str) -> bool:
    return "://" in path


def _local(path: str) -> Path | None:
    return None if _is_url(path) else Path(path)


def _open_root(zarr: Any, path: str, mode: str) -> Any | None:
    """The root group, or None where there is none; corrupt metadata raises ExperimentError."""
    try:
        return zarr.open_group(store=path, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    except (ValueError, TypeError, KeyError, RecursionError, json.JSONDecodeError) as e:
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise ExperimentError(f"{path} is not a readable Zarr store ({text})") from None


def _only_half_written_root(path: str) -> bool:
    """A local folder holding nothing but an unreadable zarr.json: a creation cut short."""
    local = _local(path)
    return local is not None and local.is_dir() and os.listdir(local) == ["zarr.json"]


def _ours(root: Any) -> bool:
    return root.attrs.get("format") == FORMAT


def missing_chunks(root: Any, subject: int, roi: str) -> list[int]:
    """Indices of the chunks of (subject, roi) not recorded complete in an opened store's
    root group (readers use it too: a record cut short by a kill reads as "not done").

    The record is checked against the store's geometry first (its length in O(1)), and
    a chunk counts as complete only when its record says 1 *and* its rows were written
    (a chunk object exists): a record forged over unwritten rows reads as not done.
    """
    name = array_name(subject, roi)
    n_images, chunk_size = check_geometry(root.attrs, _where(root))
    n_chunks = -(-n_images // chunk_size)
    done = root[f"{DONE}/{name}"]
    check_record(done, n_chunks, f"{_where(root)}/{DONE}/{name}")
    candidates = _written_chunks(done)
    data = _written_chunks(root[name])
    if candidates is None or data is None:  # a store that cannot be listed: read the records
        candidates = range(n_chunks)
    else:
        candidates = sorted(candidates & data)
    complete = {
        i for i, flag in zip(candidates, _flags(done, candidates), strict=True) if flag == 1
    }
    return [i for i in range(n_chunks) if i not in complete]


def _flags(done: Any, indices: Any) -> list[int]:
    """The record's entries at ``indices``: one selection (only those chunks are read), or
    entry by entry where one of them was cut short by a kill (it reads as 0)."""
    indices = list(indices)
    if not indices:
        return []
    try:
        return [int(v) for v in done.get_coordinate_selection(np.asarray(indices))]
    except Exception:  # noqa: BLE001 - a record cut short by a kill reads as "not done"
        return [_flag(done, i) for i in indices]


class ExperimentStore:
    """An opened experiment store: chunk geometry, completion records, whole-chunk writes."""

    def __init__(self, root: Any, path: str, models: tuple[tuple[int, str], ...]) -> None:
        self.root = root
        self.path = path
        self.n_images, self.chunk_size = check_geometry(root.attrs, path)
        #: (subject, roi) of the arrays this handle is about (the job's, or all of them)
        self.models = models

    def __repr__(self) -> str:
        return (
            f"ExperimentStore({self.path!r}, images={self.n_images}, "
            f"chunk_size={self.chunk_size}, models={len(self.models)})"
        )

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls, path: str | os.PathLike[str], job: ExperimentJob, overwrite: bool = False
    ) -> ExperimentStore:
        """The store for ``job`` at ``path``: created, or checked against the job.

        An existing store is reused only if it holds the same images (fingerprint)
        and, for each model it already has, the same model files (sha256) and
        precision; new models are added. Anything else raises ExperimentError;
        ``overwrite=True`` deletes an existing experiment store and starts over
        (a path holding anything else is never deleted).
        """
        zarr = import_zarr()
        path = os.fspath(path)
        local = _local(path)
        if local is not None and local.exists() and not local.is_dir():
            raise ExperimentError(f"{path} is a file; an experiment store is a folder (*.zarr)")
        try:
            root = _open_root(zarr, path, "r+")
        except ExperimentError:
            if not _only_half_written_root(path):
                raise
            root = None  # killed while writing the very first file: start again
            shutil.rmtree(local)
        if root is not None and not _ours(root):
            raise ExperimentError(
                f"{path} is a Zarr store but not a berg-onnx experiment; it is left as it is: "
                "choose another output path"
            )
        if root is None and local is not None and local.is_dir() and os.listdir(local):
            raise ExperimentError(
                f"{path} exists and is not an experiment store; it is left as it is: "
                "choose another output path"
            )
        if root is not None and overwrite:
            # Completion records go first: a kill while deleting must never leave a
            # record claiming a chunk whose data is already gone.
            with contextlib.suppress(KeyError, ValueError, OSError):
                del root[DONE]
            root = None
        if root is None:
            chunk_size = job.chunk_size or DEFAULT_CHUNK_SIZE
            check_new_geometry(job, chunk_size)  # what a resume will check, before creating
            attrs = _root_attrs(job, chunk_size)
            root = zarr.create_group(store=path, overwrite=True, attributes=attrs)
        else:
            check_geometry(root.attrs, path)  # types and ranges, before any comparison
            _check_root(root, job, path)
            check_new_geometry(job, root.attrs["chunk_size"])  # models it will add
        store = cls(root, path, tuple((m.subject, m.roi) for m in job.models))
        store._ensure_stimuli(job)
        for plan in job.models:
            store._ensure_model(plan)
        return store

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> ExperimentStore:
        """An existing store, for a process that writes chunks (checked by create_or_open)."""
        zarr = import_zarr()
        path = os.fspath(path)
        root = _open_root(zarr, path, "r+")
        if root is None or not _ours(root):
            raise ExperimentError(f"{path} is not a berg-onnx experiment store")
        models = []
        for name, group in sorted(root.groups()):
            if name.startswith("sub-"):
                models += [(int(name[4:]), roi) for roi, _ in sorted(group.arrays())]
        return cls(root, path, tuple(models))

    # -- geometry --------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return -(-self.n_images // self.chunk_size)

    def chunk_bounds(self, chunk_index: int) -> tuple[int, int]:
        """Rows (start, stop) of chunk ``chunk_index``."""
        if not 0 <= chunk_index < self.n_chunks:
            raise InvalidParameterError(
                f"chunk_index must be in 0..{self.n_chunks - 1}, got {chunk_index!r}"
            )
        start = chunk_index * self.chunk_size
        return start, min(self.n_images, start + self.chunk_size)

    # -- completion ------------------------------------------------------------------
    def chunk_rows(self, chunk_index: int) -> int:
        """How many images chunk ``chunk_index`` holds (the last one may be short)."""
        start, stop = self.chunk_bounds(chunk_index)
        return stop - start

    def missing_chunks(self, subject: int, roi: str) -> list[int]:
        """Indices of the chunks of (subject, roi) not yet recorded as complete."""
        return missing_chunks(self.root, subject, roi)

    def is_complete(self) -> bool:
        """Whether every chunk of every model of this handle is recorded as complete."""
        return all(not self.missing_chunks(s, r) for s, r in self.models)

    def write_chunk(self, subject: int, roi: str, chunk_index: int, rows: np.ndarray) -> None:
        """Write all rows of one chunk, then record it complete (safe to repeat)."""
        start, stop = self.chunk_bounds(chunk_index)
        name = array_name(subject, roi)
        array = self.root[name]
        rows = np.asarray(rows)
        expected = (stop - start, array.shape[1])
        if rows.shape != expected or rows.dtype != np.float32:
            raise InvalidParameterError(
                f"chunk {chunk_index} of {name} must be float32 {expected}, "
                f"got {rows.dtype} {rows.shape}"
            )
        _writing_every_chunk(array)[start:stop] = rows  # a chunk of NaN rows is written too
        self.root[f"{DONE}/{name}"][chunk_index] = 1

    # -- layout ----------------------------------------------------------------------
    def _node(self, name: str) -> Any | None:
        """The array ``name``, or None if absent or its metadata was cut short by a kill."""
        try:
            return self.root[name]
        except Exception:  # noqa: BLE001 - KeyError, or JSON/metadata errors of a torn write
            return None

    def _ensure_stimuli(self, job: ExperimentJob) -> None:
        marker = self._node(f"{DONE}/{STIMULI}")
        if marker is not None and _flag(marker, 0) == 1:
            check_stimuli_array(self.root, self.n_images, self.path)
            return
        labels = np.array(job.stimuli.labels, dtype=np.dtypes.StringDType())
        array = self.root.create_array(
            STIMULI,
            shape=labels.shape,
            dtype=str,
            chunks=(min(len(labels), _STIMULI_CHUNK),),
            dimension_names=("image",),
            overwrite=True,
        )
        array[:] = labels
        self.root.create_array(
            f"{DONE}/{STIMULI}",
            shape=(1,),
            chunks=(1,),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            overwrite=True,
        )[0] = 1

    def _ensure_model(self, plan: ModelPlan) -> None:
        marker = f"{DONE}/{plan.name}"
        array = self._node(plan.name)
        record = self._node(marker)
        if array is not None and record is not None:
            check_model_array(array, self.n_images, self.chunk_size, f"{self.path}/{plan.name}")
            check_record(record, self.n_chunks, f"{self.path}/{marker}")
            _check_model(array, plan, self.path)
            return
        # Created data first, record second: a record without its array never exists.
        self.root.create_array(
            plan.name,
            shape=(self.n_images, plan.n_voxels),
            chunks=(self.chunk_size, plan.n_voxels),
            dtype="float32",
            fill_value=float("nan"),  # rows never written read as NaN
            dimension_names=("image", f"voxel_{plan.roi}"),
            attributes=_model_attrs(plan),
            overwrite=True,
        )
        self.root.create_array(
            marker,
            shape=(self.n_chunks,),
            chunks=(1,),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            overwrite=True,
        )


def _flag(done: Any, index: int) -> int:
    try:
        return int(done[index])
    except Exception:  # noqa: BLE001 - see missing_chunks
        return 0


def _root_attrs(job: ExperimentJob, chunk_size: int) -> dict[str, Any]:
    from berg_onnx._version import __version__

    attrs = {
        "berg_onnx_version": __version__,
        "model_id": job.model_id,
        "source": dict(job.source),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_images": job.n_images,
        "chunk_size": chunk_size,
        "stimulus_kind": job.stimuli.kind,
        "stimulus_fingerprint": job.stimuli.fingerprint,
    }
    if job.stimuli.root is not None:
        attrs["stimulus_root"] = job.stimuli.root
    return attrs


def _model_attrs(plan: ModelPlan) -> dict[str, Any]:
    return {
        "subject": plan.subject,
        "roi": plan.roi,
        "n_voxels": plan.n_voxels,
        "precision": plan.precision,
        "model_files": plan.model_files,
        "voxel_order": VOXEL_ORDER,
        "model_id": plan.entry.model_id,
        "split_voxels": [s.nv for s in plan.entry.splits],
    }


_START_OVER = "or pass --overwrite (overwrite=True) to start over"


def _check_root(root: Any, job: ExperimentJob, path: str) -> None:
    attrs = root.attrs
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise ExperimentError(
            f"{path} is an experiment store of format version {version}; this berg-onnx "
            f"writes version {FORMAT_VERSION}: use a matching berg-onnx, another output path, "
            f"{_START_OVER}"
        )
    if attrs.get("model_id") != job.model_id:
        raise ExperimentError(
            f"{path} holds {attrs.get('model_id')} responses, not {job.model_id}: "
            f"use another output path, {_START_OVER}"
        )
    if (
        attrs.get("n_images") != job.n_images
        or attrs.get("stimulus_fingerprint") != job.stimuli.fingerprint
    ):
        files = job.stimuli.kind == "files"
        what = "files (paths, sizes or modification times)" if files else "array"
        raise ExperimentError(
            f"{path} was started on a different image set ({attrs.get('n_images')} images, "
            f"{attrs.get('stimulus_kind')}) than the one given ({job.n_images} images): "
            f"the {what} changed. Resume with the same images, use another output path, "
            f"{_START_OVER}"
        )
    if job.chunk_size is not None and job.chunk_size != attrs.get("chunk_size"):
        raise ExperimentError(
            f"{path} was created with chunk size {attrs.get('chunk_size')}, not "
            f"{job.chunk_size}: omit the chunk size to resume, {_START_OVER}"
        )


def _check_model(array: Any, plan: ModelPlan, path: str) -> None:
    attrs = array.attrs
    if attrs.get("precision") != plan.precision:
        raise ExperimentError(
            f"{plan.name} in {path} was computed at precision {attrs.get('precision')}, "
            f"not {plan.precision}: resume with the same precision, {_START_OVER}"
        )
    files = attrs.get("model_files", {})
    if (
        not isinstance(files, dict)
        or dict(files) != plan.model_files
        or array.shape[1] != plan.n_voxels
    ):
        raise ExperimentError(
            f"{plan.name} in {path} was computed with other model files "
            f"({attrs.get('model_files')}) than the source has now ({plan.model_files}): "
            f"the model version changed. Use the original models, another output path, "
            f"{_START_OVER}"
        )


# -- the contract, checked before a store is trusted (resume or read) ----------------------
#: Chunks per model and bytes per chunk a store may claim: 2^20 chunks of the default 256
#: rows are 268 million images; one chunk is read whole, so it must fit in memory.
MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 64 << 20


def _where(root: Any) -> str:
    """The store's folder (or URL), for messages."""
    try:
        store_path = root.store_path
        local = getattr(store_path.store, "root", None)  # a LocalStore's folder
        if local is not None:
            return str(Path(local) / store_path.path) if store_path.path else str(local)
        return str(store_path)
    except Exception:  # noqa: BLE001 - only for messages
        return "the experiment store"


def _count(value: Any, name: str, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ExperimentError(
            f"{where}: root attribute {name} is {reprlib.repr(value)}, not an integer >= {low}; "
            "the store is damaged: write a new one (another path, or --overwrite)"
        )
    return value


def check_geometry(attrs: Any, where: str) -> tuple[int, int]:
    """(n_images, chunk_size) of a store's root attributes, type- and range-checked."""
    n_images = _count(attrs.get("n_images"), "n_images", where, 0)
    chunk_size = _count(attrs.get("chunk_size"), "chunk_size", where, 1)
    if -(-n_images // chunk_size) > MAX_CHUNKS:
        raise ExperimentError(
            f"{where}: {n_images} images in chunks of {chunk_size} are more than "
            f"{MAX_CHUNKS} chunks; the store is damaged or not one berg-onnx writes"
        )
    return n_images, chunk_size


def check_new_geometry(job: ExperimentJob, chunk_size: int) -> None:
    """Refuse, before anything is written, a store that a resume would refuse."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidParameterError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if -(-job.n_images // chunk_size) > MAX_CHUNKS:
        raise InvalidParameterError(
            f"{job.n_images} images in chunks of {chunk_size} are more than {MAX_CHUNKS} "
            "chunks: pass a larger chunk size"
        )
    for plan in job.models:
        if chunk_size * plan.n_voxels * 4 > MAX_CHUNK_BYTES:
            rows = MAX_CHUNK_BYTES // (plan.n_voxels * 4)
            raise InvalidParameterError(
                f"chunks of {chunk_size} images x {plan.n_voxels} voxels of {plan.name} would "
                f"exceed {MAX_CHUNK_BYTES >> 20} MB each: pass a chunk size of at most {rows}"
            )


def check_model_array(array: Any, n_images: int, chunk_size: int, where: str) -> None:
    """A model's responses: float32 (n_images, nv), chunks (chunk_size, nv), bounded."""
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    ok = (
        array.dtype == np.float32
        and len(shape) == 2
        and shape[0] == n_images
        and 1 <= shape[1] <= 1_000_000
        and chunks == (chunk_size, shape[1])
    )
    if not ok:
        raise ExperimentError(
            f"{where} is {array.dtype} {shape} in chunks {chunks}, not float32 "
            f"({n_images}, nv) in chunks ({chunk_size}, nv) as the store's attributes say; "
            f"it was not written by berg-onnx: {_START_OVER}"
        )
    if chunk_size * shape[1] * 4 > MAX_CHUNK_BYTES:
        raise ExperimentError(
            f"{where}: one chunk of {chunk_size} x {shape[1]} float32 would need more than "
            f"{MAX_CHUNK_BYTES >> 20} MB to read: {_START_OVER}"
        )


def check_record(record: Any, n_chunks: int, where: str) -> None:
    """A completion record: uint8 (n_chunks,) in chunks of one (its length checked in O(1))."""
    if record.dtype != np.uint8 or tuple(record.shape) != (n_chunks,) or record.chunks != (1,):
        raise ExperimentError(
            f"{where} is a completion record of {record.dtype} {tuple(record.shape)}, not uint8 "
            f"({n_chunks},) (one entry per chunk): the store is damaged: {_START_OVER}"
        )


def check_stimuli_array(root: Any, n_images: int, where: str) -> None:
    try:
        stimuli = root[STIMULI]
        shape = tuple(stimuli.shape)
    except Exception:  # noqa: BLE001 - missing, or metadata cut short
        shape = None
    if shape != (n_images,):
        raise ExperimentError(
            f"{where}/{STIMULI} has shape {shape}, not ({n_images},) (one label per image): "
            f"the store is damaged: {_START_OVER}"
        )


def _written_chunks(array: Any) -> set[int] | None:
    """Indices (first axis) of the chunks of ``array`` that exist in its store, from one
    listing (bounded by what the store holds, not by the shape it claims); None when the
    store cannot be listed."""
    try:
        from zarr.core.sync import sync

        store_path = array.store_path
        prefix = f"{store_path.path}/c/" if store_path.path else "c/"

        async def keys() -> list[str]:
            return [k async for k in store_path.store.list_prefix(prefix)]

        found = set()
        for key in sync(keys()):
            first = key[len(prefix) :].split("/", 1)[0]
            if first.isdigit():
                found.add(int(first))
        return found
    except Exception:  # noqa: BLE001 - another zarr version or store kind: no listing
        return None


def _writing_every_chunk(array: Any) -> Any:
    """``array`` configured to store chunks equal to the fill value too (zarr skips them by
    default), so that a recorded chunk always has its object: see missing_chunks."""
    try:
        return array.with_config({"write_empty_chunks": True})
    except (AttributeError, TypeError, ValueError):
        return array
