"""The Zarr experiment store: one array per (subject, ROI) over one image set.

Layout (the contract; README "In silico experiments"), format version 2:

    <store>/                   root attributes: berg_onnx_version, model_id, source, created
                               (+ format, format_version, n_images, chunk_size, stimulus_*,
                               title, description, coordinates "stimuli"); consolidated
                               metadata, so xarray opens it without consolidated=False
      stimuli                  (N,) strings, dimension image: image paths relative to
                               stimulus_root (utils/outputs.label_text: any bytes, one line),
                               or row indices for an array input
      sub-01/                  attributes subject, description
        V1                     (N, nv) float32, chunks (chunk_size, nv), dimensions image,
                               voxel_V1; attributes subject, roi, n_voxels, precision,
                               model_files, voxel_order (+ model_id, split_voxels, units,
                               long_name, coordinates); split ROIs are one array, split 1
                               then split 2
        stimuli                the root's labels again, so the group reads alone in xarray
        voxel_V1, i_V1, j_V1, k_V1, x_V1, y_V1, z_V1
                               (nv,) voxel coordinates: flat C-order index into the volume,
                               mask indices, and their positions in mm (fmri_affine)
      _images/sha256, identity, error
                               (N,) per-image records of a file set (records.py): sha256 of
                               the bytes each row was computed from, file identity then,
                               why it could not be read ('' if it was)
      _done/stimuli            (1,) uint8: 1 once `stimuli` is written
      _done/sub-01/V1          (n_chunks,) uint8, one chunk per element: 1 = chunk complete

Crash safety and concurrency: a chunk of rows is always written whole, its
rows' image records before it and its completion byte after it, each into its
own object, so a writer killed at any point leaves at worst an unrecorded chunk
that is computed again. One run at a time opens a store for writing
(``create_or_open``, which holds the lock of lock.py until ``close``); the
processes that write chunks for it (Ray actors) call ``attach``, and write
disjoint chunks. Readers call ``open`` (read-only). Every berg-onnx handle
reads the nodes' own metadata, never the consolidated copy, which the writing
run rewrites last, for other readers (xarray).

Stores are local folders or any URL zarr/fsspec understands (``s3://...``;
not locked: see lock.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import reprlib
import shutil
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.constants import VOXEL_ORDER
from berg_onnx.errors import (
    BERGError,
    ExperimentError,
    InvalidParameterError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceError,
    StimulusError,
)
from berg_onnx.experiment import records
from berg_onnx.experiment.job import ExperimentJob, ModelPlan, array_name
from berg_onnx.experiment.lock import StoreLock
from berg_onnx.experiment.records import ERROR, IDENTITY, IMAGES, SHA256
from berg_onnx.experiment.stimuli import RowRecords, StimulusSet, check_on_error, failures_text
from berg_onnx.utils.outputs import label_text
from berg_onnx.utils.pausepoints import pause_point

FORMAT = "berg-onnx-experiment"
FORMAT_VERSION = 2
DEFAULT_CHUNK_SIZE = 256
STIMULI = "stimuli"
DONE = "_done"
UNITS = "z-scored BOLD response"
_STIMULI_CHUNK = 1 << 16
_EXTRA = 'pip install "berg-onnx[zarr]"'

#: (mask (81, 104, 83) bool, affine (4, 4)) of a model's voxels, for the voxel coordinates.
VoxelSpace = Callable[[ModelPlan], tuple[np.ndarray, np.ndarray]]


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
        return zarr.open_group(store=path, mode=mode, use_consolidated=False)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    except (ValueError, TypeError, KeyError, RecursionError, json.JSONDecodeError) as e:
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise ExperimentError(f"{path} is not a readable Zarr store ({text})") from None


def _only_half_written_root(path: str) -> bool:
    """A local folder holding nothing but an unreadable zarr.json: a creation cut short."""
    local = _local(path)
    return local is not None and local.is_dir() and os.listdir(local) == ["zarr.json"]


def is_store_path(path: str | os.PathLike[str]) -> bool:
    """A local folder holding a Zarr v3 root (zarr.json)."""
    p = Path(path)
    return p.is_dir() and (p / "zarr.json").is_file()


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
    """An opened experiment store: chunk geometry, completion records, whole-chunk writes.

    Three ways in, zarr-style: ``create_or_open`` (the one writing run: checks,
    creates, resumes; holds the store's lock until ``close``), ``attach`` (a
    process writing chunks for that run) and ``open`` (read-only, for readers).
    """

    def __init__(
        self,
        root: Any,
        path: str,
        models: tuple[tuple[int, str], ...] | None,
        *,
        read_only: bool = False,
    ) -> None:
        attrs = root.attrs
        self.root = root
        self.path = path
        self.read_only = read_only
        self.n_images, self.chunk_size = check_geometry(attrs, path)  # typed, in range
        self._models = models
        #: The image set in the store's row order (create_or_open only).
        self.stimuli: StimulusSet | None = None
        #: What opening found, for the run's report (moved, changed, absent images).
        self.notes: tuple[str, ...] = ()
        self._lock: StoreLock | None = None

    def __repr__(self) -> str:
        mode = ", read-only" if self.read_only else ""
        return (
            f"ExperimentStore({self.path!r}, images={self.n_images}, "
            f"chunk_size={self.chunk_size}, models={len(self.models)}{mode})"
        )

    @property
    def models(self) -> tuple[tuple[int, str], ...]:
        """(subject, roi) of the arrays this handle is about (the job's, or all of them)."""
        if self._models is None:
            self._models = tuple(_model_arrays(self.root))
        return self._models

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike[str],
        job: ExperimentJob,
        overwrite: bool = False,
        *,
        on_error: str | None = None,
        wait: bool = False,
        voxel_space: VoxelSpace | None = None,
        threads: int = 4,
    ) -> ExperimentStore:
        """The store for ``job`` at ``path``: created, or checked against the job.

        An existing store is reused only if it was made for the same model and
        image set and, for each model it already has, the same model files
        (sha256) and precision; new models are added. A file set's images are
        matched to its rows by name and content (records.py): changed images
        are computed again, moved or copied folders accepted. Anything else
        raises ExperimentError; ``overwrite=True`` deletes an existing
        experiment store and starts over (a path holding anything else is never
        deleted).

        Nothing is written before every check has passed, including that each
        image to compute exists and has a readable header: with
        ``on_error="fail"`` (the default) one StimulusError names every one
        that does not; ``"skip"`` records them as failed rows (NaN) instead.
        The returned store holds the store's lock (lock.py; ``wait=True``
        waits for another run's) until ``close()``. ``voxel_space`` gives the
        models' voxel coordinates (run_experiment passes the model source's).
        """
        zarr = import_zarr()
        path = os.fspath(path)
        local = _local(path)
        if local is not None and local.exists() and not local.is_dir():
            raise ExperimentError(f"{path} is a file; an experiment store is a folder (*.zarr)")
        stimuli = job.stimuli.with_on_error(check_on_error(on_error or job.stimuli.on_error))
        lock = StoreLock.acquire(path, wait) if local is not None else None
        try:
            store = cls._create_or_open(zarr, path, job, stimuli, overwrite, voxel_space, threads)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        if store.stimuli.scan_summary:  # what the folder scan left out, as encode says it
            store.notes = (*store.notes, store.stimuli.scan_summary)
        if lock is not None and lock.stale:
            held = lock.stale
            store.notes = (
                f"took over the lock of a run that ended without releasing it (pid "
                f"{held.get('pid', '?')} on {held.get('host', '?')}, started "
                f"{held.get('started', '?')})",
                *store.notes,
            )
        pause_point("store-ready")
        return store

    @classmethod
    def _create_or_open(
        cls,
        zarr: Any,
        path: str,
        job: ExperimentJob,
        stimuli: StimulusSet,
        overwrite: bool,
        voxel_space: VoxelSpace | None,
        threads: int,
    ) -> ExperimentStore:
        local = _local(path)
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
        fresh = root is None or overwrite
        reconciled = None
        if not fresh:
            check_geometry(root.attrs, path)  # types and ranges, before any comparison
            _check_root(root, job, path)
            if stimuli.kind == "files":
                reconciled = records.reconcile(root, stimuli, path, threads)
                stimuli = reconciled.stimuli
        chunk_size = job.chunk_size or DEFAULT_CHUNK_SIZE
        if not fresh:
            chunk_size = int(root.attrs["chunk_size"])
        check_new_geometry(job, chunk_size)  # what a resume will check, before writing
        todo = _rows_to_compute(root if not fresh else None, job, stimuli, chunk_size, reconciled)
        bad = stimuli.check_rows(todo, threads)
        if bad and stimuli.on_error == "fail":
            named = failures_text([(stimuli.labels[i], why) for i, why in sorted(bad.items())])
            raise StimulusError(
                f"{len(bad)} of the {len(stimuli)} images cannot be read: {named}. Fix or "
                "remove them, or pass --on-error skip (on_error='skip') to record them as "
                f"failed rows (NaN) and go on; nothing was written to {path}"
            )
        # Every check passed: from here on the store is written.
        if fresh:
            if root is not None:
                # Completion records go first: a kill while deleting must never leave a
                # record claiming a chunk whose data is already gone.
                with contextlib.suppress(KeyError, ValueError, OSError):
                    del root[DONE]
            root = zarr.create_group(
                store=path, overwrite=True, attributes=_root_attrs(job, stimuli, chunk_size)
            )
        store = cls(root, path, tuple((m.subject, m.roi) for m in job.models))
        store.stimuli = stimuli
        if reconciled is not None:
            store._apply(reconciled)
            elsewhere = any(m not in store.models for m in _model_arrays(root))
            store.notes = tuple(
                records.notes(reconciled, path, elsewhere and bool(reconciled.changed))
            )
        changed = fresh or (reconciled is not None and reconciled.touches_store)
        changed |= store._ensure_stimuli(stimuli)
        changed |= store._ensure_records(stimuli)
        for plan in job.models:
            changed |= store._ensure_model(plan, voxel_space)
        if changed or not store._consolidated_is_current():
            store._consolidate()
        return store

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> ExperimentStore:
        """An existing store, for a process that writes chunks (checked by create_or_open)."""
        zarr = import_zarr()
        path = os.fspath(path)
        root = _open_root(zarr, path, "r+")
        if root is None or not _ours(root):
            raise ExperimentError(f"{path} is not a berg-onnx experiment store")
        return cls(root, path, None)

    @classmethod
    def open(cls, path: str | os.PathLike[str], read_only: bool = True) -> ExperimentStore:
        """A store to read (``read_only=True``; ``False``: ``attach``): its model source,
        arrays, labels and records. Stores of every format version read."""
        if not read_only:
            return cls.attach(path)
        zarr = import_zarr()
        path = os.fspath(path)
        local = _local(path)
        if local is not None and not local.is_dir():
            raise ModelNotFoundError(f"no run store at {path} (a folder written by berg-onnx run)")
        try:
            root = zarr.open_group(store=path, mode="r", use_consolidated=False)
        except Exception as e:  # noqa: BLE001 - zarr raises several kinds for a non-store
            raise ModelLoadError(f"{path} is not a readable Zarr store ({e})") from None
        source = root.attrs.get("source")
        if isinstance(source, dict) and not all(
            isinstance(v, str) and len(v) < 4096 for v in source.values()
        ):
            source = None  # values of another type: no source it can be read from
        if not isinstance(source, dict) or not ("export_dir" in source or "repo_id" in source):
            raise ModelLoadError(
                f"{path} has no model source in its root attributes (source: "
                f"{{'repo_id', 'revision'}} or {{'export_dir'}}); is it a berg-onnx run store?"
            )
        if not isinstance(root.attrs.get("model_id", ""), str):
            raise ModelLoadError(f"{path}: root attribute model_id is not a string")
        try:
            return cls(root, path, None, read_only=True)
        except BERGError as e:  # its geometry (check_geometry): a damaged or crafted store
            raise ModelLoadError(str(e)) from None

    def close(self) -> None:
        """Let go of the store's lock (a writing run's handle; safe to call twice)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:  # a handle dropped without close() frees the store when collected
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> ExperimentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        from berg_onnx.constants import DEFAULT_MODEL_ID

        return str(self.root.attrs.get("model_id", DEFAULT_MODEL_ID))

    @property
    def source(self) -> dict[str, str]:
        return dict(self.root.attrs.get("source") or {})

    def arrays(self) -> list[str]:
        """Names of the model arrays, e.g. ``sub-01/V1``."""
        return [array_name(s, r) for s, r in _model_arrays(self.root)]

    def responses(self, subject: int, roi: str) -> Any:
        """The (N, nv) array of one model (read lazily), checked complete and in mask order."""
        name = array_name(subject, roi)
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
        try:  # the store's contract, before a byte is trusted
            check_model_array(array, self.n_images, self.chunk_size, f"{self.path}/{name}")
        except BERGError as e:
            raise ModelLoadError(str(e)) from None
        if f"{DONE}/{name}" in self.root:  # the writer's completion records
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
        """The row labels (file names as the OS gave them, or row indices), or None."""
        if STIMULI not in self.root:
            return None
        try:
            check_stimuli_array(self.root, self.n_images, self.path)
        except BERGError as e:
            raise ModelLoadError(str(e)) from None
        return records.stored_labels(self.root)

    def model_files(self, subject: int, roi: str) -> dict[str, str]:
        files = self.root[array_name(subject, roi)].attrs.get("model_files") or {}
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ModelLoadError(
                f"{self.path}/{array_name(subject, roi)}: attribute model_files is not a "
                "{file name: sha256} mapping; the store is damaged"
            )
        return dict(files)

    def failed_rows(self) -> list[tuple[str, str]]:
        """(label, why) of every row whose image could not be read, in row order."""
        if ERROR not in self.root:
            return []
        errors = np.asarray(self.root[ERROR][:])
        rows = np.flatnonzero(errors != "")
        if not len(rows):
            return []
        labels = self.labels() or []
        return [(labels[i], str(errors[i])) for i in rows]

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

    def write_rows(self, chunk_index: int, found: RowRecords) -> None:
        """Record what reading one chunk's images found (a file set; before its chunks)."""
        if SHA256 not in self.root:
            return  # an array set: its one fingerprint is in the root attributes
        start, stop = self.chunk_bounds(chunk_index)
        if found.start != start or len(found.sha256) != stop - start:
            raise InvalidParameterError(
                f"records of rows {found.start}.. do not cover chunk {chunk_index}"
            )
        text = np.dtypes.StringDType()
        self.root[ERROR][start:stop] = np.array(found.errors, dtype=text)
        self.root[SHA256][start:stop] = np.array(found.sha256, dtype=text)
        self.root[IDENTITY][start:stop] = found.identity
        pause_point("rows-recorded")

    def write_chunk(
        self,
        subject: int,
        roi: str,
        chunk_index: int,
        rows: np.ndarray,
        failed: np.ndarray | None = None,
    ) -> None:
        """Write all rows of one chunk (NaN where ``failed``), then record it complete
        (safe to repeat)."""
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
        if failed is not None and np.any(failed):
            rows = rows.copy()
            rows[np.asarray(failed, dtype=bool)] = np.nan  # an image that could not be read
        _writing_every_chunk(array)[start:stop] = rows  # a chunk of NaN rows is written too
        pause_point("chunk-data")
        self.root[f"{DONE}/{name}"][chunk_index] = 1
        pause_point("chunk-recorded")

    # -- layout ----------------------------------------------------------------------
    def _node(self, name: str) -> Any | None:
        """The array ``name``, or None if absent or its metadata was cut short by a kill."""
        try:
            return self.root[name]
        except Exception:  # noqa: BLE001 - KeyError, or JSON/metadata errors of a torn write
            return None

    def _apply(self, rec: records.Reconciled) -> None:
        """A resumed file store brought up to date with the images given (records.py)."""
        dirty = sorted({i // self.chunk_size for i in (*rec.changed, *rec.retried)})
        if dirty:  # computed again, for every model the store holds
            for subject, roi in _model_arrays(self.root):
                done = self._node(f"{DONE}/{array_name(subject, roi)}")
                if done is not None:
                    for c in dirty:
                        done[c] = 0
        if rec.identities:  # the same bytes, moved or copied: their new identities
            identity = self.root[IDENTITY]
            values = np.asarray(identity[:], dtype=np.int64)
            for i, ident in rec.identities.items():
                values[i] = ident
            identity[:] = values
        if rec.old_root is not None:
            self.root.attrs["stimulus_root"] = rec.stimuli.root

    def _ensure_stimuli(self, stimuli: StimulusSet) -> bool:
        """Write the labels unless recorded written; whether it wrote (so for each _ensure)."""
        marker = self._node(f"{DONE}/{STIMULI}")
        if marker is not None and _flag(marker, 0) == 1:
            check_stimuli_array(self.root, self.n_images, self.path)
            return False
        _labels_array(self.root, STIMULI, stimuli.labels)
        self.root.create_array(
            f"{DONE}/{STIMULI}",
            shape=(1,),
            chunks=(1,),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            dimension_names=("flag",),
            overwrite=True,
        )[0] = 1
        return True

    def _ensure_records(self, stimuli: StimulusSet) -> bool:
        """The per-image record arrays of a file set (created empty: '' = not read yet)."""
        if stimuli.kind != "files" or all(
            self._node(n) is not None for n in (SHA256, IDENTITY, ERROR)
        ):
            return False
        group = self.root.require_group(IMAGES)
        group.attrs.update(
            {"description": "per-image records (internal): sha256, identity, read error"}
        )
        chunks = (self.chunk_size,)
        for name in (ERROR, SHA256):
            if self._node(name) is None:
                self.root.create_array(
                    name,
                    shape=(self.n_images,),
                    chunks=chunks,
                    dtype=str,
                    dimension_names=("image",),
                    overwrite=True,
                )
        if self._node(IDENTITY) is None:
            from berg_onnx.utils.fileio import IDENTITY_FIELDS

            self.root.create_array(
                IDENTITY,
                shape=(self.n_images, len(IDENTITY_FIELDS)),
                chunks=(self.chunk_size, len(IDENTITY_FIELDS)),
                dtype="int64",
                fill_value=0,
                dimension_names=("image", "identity_field"),
                attributes={"fields": list(IDENTITY_FIELDS)},
                overwrite=True,
            )
        return True

    def _ensure_model(self, plan: ModelPlan, voxel_space: VoxelSpace | None = None) -> bool:
        marker = f"{DONE}/{plan.name}"
        array = self._node(plan.name)
        record = self._node(marker)
        if array is not None and record is not None:
            check_model_array(array, self.n_images, self.chunk_size, f"{self.path}/{plan.name}")
            check_record(record, self.n_chunks, f"{self.path}/{marker}")
            _check_model(array, plan, self.path)
            return False
        group = self.root.require_group(f"sub-{plan.subject:02d}")
        group.attrs.update(
            {
                "subject": plan.subject,
                "description": f"predicted responses of subject {plan.subject}, one array per ROI",
            }
        )
        copy = self._node(f"sub-{plan.subject:02d}/{STIMULI}")
        if copy is None or copy.shape != (self.n_images,):
            _labels_array(group, STIMULI, self.stimuli.labels if self.stimuli else ())
        coords = [STIMULI]
        if voxel_space is not None:
            coords += _write_voxel_coords(group, plan, *voxel_space(plan))
        # Created data first, record second: a record without its array never exists.
        self.root.create_array(
            plan.name,
            shape=(self.n_images, plan.n_voxels),
            chunks=(self.chunk_size, plan.n_voxels),
            dtype="float32",
            fill_value=float("nan"),  # rows never written read as NaN
            dimension_names=("image", f"voxel_{plan.roi}"),
            attributes={**_model_attrs(plan), "coordinates": " ".join(coords)},
            overwrite=True,
        )
        self.root.create_array(
            marker,
            shape=(self.n_chunks,),
            chunks=(1,),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            dimension_names=("chunk",),
            overwrite=True,
        )
        return True

    def _consolidated_is_current(self) -> bool:
        """Whether the consolidated metadata lists every model array (a run killed between
        adding arrays and consolidating leaves it behind)."""
        zarr = import_zarr()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                group = zarr.open_group(store=self.path, mode="r", use_consolidated=True)
            listed = group.metadata.consolidated_metadata.flattened_metadata
        except Exception:  # noqa: BLE001 - none, or unreadable: write it again
            return False
        wanted = {STIMULI} | {f"sub-{s:02d}" for s, _ in self.models}
        wanted |= {array_name(s, r) for s, r in self.models}
        return wanted <= set(listed)

    def _consolidate(self) -> None:
        """Rewrite the consolidated metadata (xarray's fast path) from the nodes' own."""
        zarr = import_zarr()
        with warnings.catch_warnings():
            # zarr notes that v3 consolidation is not in the spec yet, and names
            # leftover temporary files of writes cut short: neither matters here.
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(self.path)


def _model_arrays(root: Any) -> list[tuple[int, str]]:
    """(subject, roi) of every model array, by subject then ROI name."""
    models = []
    for name, group in sorted(root.groups()):
        if not (name.startswith("sub-") and name[4:].isdigit()):
            continue
        for roi, array in sorted(group.arrays()):
            if "voxel_order" in array.attrs:
                models.append((int(name[4:]), roi))
    return models


def _labels_array(group: Any, name: str, labels: tuple[str, ...]) -> None:
    text = np.array([label_text(x) for x in labels], dtype=np.dtypes.StringDType())
    array = group.create_array(
        name,
        shape=text.shape,
        dtype=str,
        chunks=(max(1, min(len(text), _STIMULI_CHUNK)),),
        dimension_names=("image",),
        attributes={
            "long_name": "stimulus: image path relative to stimulus_root, or row index",
            "escaping": "label_text (berg_onnx.utils.outputs): \\\\ \\n \\r, \\xHH bytes",
        },
        overwrite=True,
    )
    array[:] = text


def _write_voxel_coords(
    group: Any, plan: ModelPlan, mask: np.ndarray, affine: np.ndarray
) -> list[str]:
    """The voxel coordinates of one model's array; returns the names of the non-index ones."""
    mask = np.asarray(mask, dtype=bool)
    flat = np.flatnonzero(mask.ravel(order="C"))
    if len(flat) != plan.n_voxels:
        raise ExperimentError(
            f"the metadata of {plan.name} has {len(flat)} ROI voxels, its model {plan.n_voxels}"
        )
    ijk = np.stack(np.unravel_index(flat, mask.shape))
    xyz = (np.asarray(affine, dtype=np.float64) @ np.vstack([ijk, np.ones(len(flat))]))[:3]
    dim = f"voxel_{plan.roi}"
    values = {
        dim: (flat.astype(np.int64), {"long_name": "flat C-order index into the volume"}),
        **{
            f"{a}_{plan.roi}": (ijk[n].astype(np.int16), {"long_name": f"voxel index {a}"})
            for n, a in enumerate("ijk")
        },
        **{
            f"{a}_{plan.roi}": (
                xyz[n].astype(np.float32),
                {"units": "mm", "long_name": f"{a} in mm (fmri_affine of the voxel)"},
            )
            for n, a in enumerate("xyz")
        },
    }
    for name, (data, attrs) in values.items():
        group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.shape,
            dimension_names=(dim,),
            attributes=attrs,
            overwrite=True,
        )[:] = data
    return [n for n in values if n != dim]


def _rows_to_compute(
    root: Any | None,
    job: ExperimentJob,
    stimuli: StimulusSet,
    chunk_size: int,
    reconciled: records.Reconciled | None,
) -> list[int]:
    """Rows of the chunks some model of the job will compute (to check before writing)."""
    n = len(stimuli)
    n_chunks = -(-n // chunk_size)
    if root is None:
        return list(range(n))
    chunks: set[int] = set()
    for plan in job.models:
        try:
            chunks.update(missing_chunks(root, plan.subject, plan.roi))
        except Exception:  # noqa: BLE001 - a model not in the store yet, or its record torn
            return list(range(n))
    if reconciled is not None:
        chunks.update(i // chunk_size for i in (*reconciled.changed, *reconciled.retried))
    return [
        r
        for c in sorted(chunks)
        if c < n_chunks
        for r in range(c * chunk_size, min(n, (c + 1) * chunk_size))
    ]


def _flag(done: Any, index: int) -> int:
    try:
        return int(done[index])
    except Exception:  # noqa: BLE001 - see missing_chunks
        return 0


def _root_attrs(job: ExperimentJob, stimuli: StimulusSet, chunk_size: int) -> dict[str, Any]:
    from berg_onnx._version import __version__

    attrs = {
        "berg_onnx_version": __version__,
        "model_id": job.model_id,
        "source": dict(job.source),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_images": len(stimuli),
        "chunk_size": chunk_size,
        "stimulus_kind": stimuli.kind,
        "stimulus_fingerprint": stimuli.fingerprint,
        "title": f"berg-onnx in silico experiment: {job.model_id} predicted fMRI responses",
        "description": (
            "One (image, voxel) array per subject and ROI (sub-XX/ROI), in the store's image "
            f"order (stimuli); values are {UNITS}s; NaN rows: not computed yet, or an image "
            "that could not be read (_images/error)"
        ),
        "coordinates": STIMULI,  # xarray: `stimuli` is the coordinate of dimension `image`
    }
    if stimuli.root is not None:
        attrs["stimulus_root"] = stimuli.root
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
        "units": UNITS,
        "long_name": f"predicted response of sub-{plan.subject:02d} {plan.roi}",
    }


_START_OVER = "or pass --overwrite (overwrite=True) to start over"


def _check_root(root: Any, job: ExperimentJob, path: str) -> None:
    attrs = root.attrs
    version = attrs.get("format_version")
    if version == 1:
        raise ExperimentError(
            f"{path} was written by an earlier berg-onnx (store format 1, which knew images "
            "only by path, size and modification time, not by content): it still reads "
            "(xarray, volume, plot), but cannot be resumed or extended. Write another "
            f"store, {_START_OVER}"
        )
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
    kind = attrs.get("stimulus_kind")
    if kind != job.stimuli.kind:
        what = {"files": "image files", "array": "an array"}
        raise ExperimentError(
            f"{path} was started on {what.get(kind, kind)}, not {what[job.stimuli.kind]}: "
            f"resume with the same images, use another output path, {_START_OVER}"
        )
    if kind == "array" and (
        attrs.get("n_images") != job.n_images
        or attrs.get("stimulus_fingerprint") != job.stimuli.fingerprint
    ):
        raise ExperimentError(
            f"{path} was started on a different image set ({attrs.get('n_images')} images, "
            f"array) than the one given ({job.n_images} images): the array changed. Resume "
            f"with the same images, use another output path, {_START_OVER}"
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
