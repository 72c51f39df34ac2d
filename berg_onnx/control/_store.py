"""A run store opened read-only for RNC: subjects, kept voxels, valid images, row blocks.

The store is the Zarr experiment store of ``berg-onnx run`` (berg_onnx.experiment.store);
it is opened with zarr's read-only mode and wrapped in an ``ExperimentStore`` for its
geometry and completion records. Voxels are kept by the ncsnr of each model's metadata,
read from the model source the store records (or a ``berg`` given by the caller), after
checking that it is the metadata file the run used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.errors import (
    ExperimentError,
    InvalidParameterError,
    ModelLoadError,
    ModelNotFoundError,
)
from berg_onnx.experiment.job import ModelLibrary, array_name
from berg_onnx.experiment.store import FORMAT, ExperimentStore
from berg_onnx.source.local import LocalStore, ModelSource
from berg_onnx.source.metadata import load_npz

#: Rows read at once (a multiple of the store's chunk size is used).
_BLOCK_ROWS = 4096


class ControlStore:
    """One run store, read-only: what RNC reads from it and nothing else."""

    def __init__(self, path: str | os.PathLike[str], berg: ModelLibrary | None = None) -> None:
        self.path = os.fspath(path)
        try:  # the experiment's one reader, with its checks of a store's contract
            self.store = ExperimentStore.open(self.path)
        except ModelLoadError as e:
            raise ExperimentError(str(e)) from None
        if self.store.root.attrs.get("format") != FORMAT:
            raise ExperimentError(f"{self.path} is not a berg-onnx experiment store")
        self.root = self.store.root
        self.model_id = self.store.model_id
        self._berg = berg
        self._source: ModelSource | None = None
        self._ncsnr: dict[tuple[int, str], np.ndarray] = {}

    @property
    def n_images(self) -> int:
        return self.store.n_images

    def labels(self) -> list[str]:
        labels = self.store.labels()  # names as the run stored them, read back unescaped
        return [str(i) for i in range(self.n_images)] if labels is None else labels

    # -- what the store holds ------------------------------------------------------------
    def subjects_with(self, rois: Sequence[str]) -> list[int]:
        have = set(self.store.models)
        subjects = sorted({s for s, _ in have})
        return [s for s in subjects if all((s, r) in have for r in rois)]

    def choose_subjects(self, subjects: Any, rois: Sequence[str], cv: bool) -> tuple[int, ...]:
        """The subjects to use: those holding every ROI (``None``/"all"), or the given ones,
        each checked present and complete."""
        have = set(self.store.models)
        held = sorted({r for _, r in have})
        for roi in rois:
            if not any(r == roi for _, r in have):
                raise ModelNotFoundError(
                    f"{self.path} has no ROI {roi!r}; it holds: {', '.join(held) or 'none'}"
                )
        if subjects is None or (isinstance(subjects, str) and subjects == "all"):
            chosen = self.subjects_with(rois)
            if not chosen:
                raise ModelNotFoundError(f"no subject of {self.path} has all of {', '.join(rois)}")
        else:
            values = [subjects] if isinstance(subjects, (int, np.integer)) else list(subjects)
            chosen = []
            for s in values:
                if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                    raise InvalidParameterError(f"subjects must be integers, got {s!r}")
                for roi in rois:
                    if (int(s), roi) not in have:
                        raise ModelNotFoundError(
                            f"{self.path} has no array {array_name(int(s), roi)}; subjects "
                            f"with {', '.join(rois)}: {self.subjects_with(rois) or 'none'}"
                        )
                chosen.append(int(s))
            if len(set(chosen)) != len(chosen):
                raise InvalidParameterError(f"subjects lists a subject twice: {values}")
            if not chosen:
                raise InvalidParameterError("subjects must name at least one subject")
        if cv and len(chosen) < 2:
            raise InvalidParameterError(
                f"cv=True leaves one subject out, so it needs two or more subjects; "
                f"{self.path} gives {len(chosen)} ({chosen}) for {', '.join(rois)}: "
                "pass cv=False (--no-cv) or add subjects to the store"
            )
        for s in chosen:
            for roi in rois:
                missing = self.store.missing_chunks(s, roi)
                if missing:
                    raise ExperimentError(
                        f"{self.path}/{array_name(s, roi)} is unfinished ({len(missing)} of "
                        f"{self.store.n_chunks} chunks not written); run the same "
                        "`berg-onnx run` command again to finish it"
                    )
        return tuple(sorted(chosen))

    # -- voxel selection -----------------------------------------------------------------
    def source(self) -> ModelSource:
        """Where the models' metadata is read: the caller's BERG's source, else the store's."""
        if self._source is None:
            if self._berg is not None:
                self._source = self._berg.store
                return self._source
            source = self.store.source
            if "export_dir" in source:
                if not Path(source["export_dir"]).is_dir():
                    raise ModelNotFoundError(
                        f"{self.path} was written from the export {source['export_dir']}, "
                        "which is not there now; pass berg= (--berg-dir or --repo-id/"
                        "--revision) to read the models' ncsnr elsewhere"
                    )
                self._source = LocalStore(source["export_dir"])
            elif "repo_id" in source:
                from berg_onnx.source.hub import HubStore  # huggingface_hub only for a Hub store

                self._source = HubStore(source["repo_id"], source.get("revision"))
            else:
                raise ModelLoadError(f"{self.path} records no model source in its attributes")
        return self._source

    def ncsnr(self, subject: int, roi: str) -> np.ndarray:
        key = (subject, roi)
        if key not in self._ncsnr:
            source = self.source()
            entry = source.manifest().get(self.model_id, subject, roi)
            recorded = self.store.model_files(subject, roi).get(entry.metadata.name)
            if recorded is not None and recorded != entry.metadata.sha256:
                raise ModelLoadError(
                    f"the metadata of {array_name(subject, roi)} in {source.describe()} is "
                    f"not the file {self.path} was computed with (sha256 {recorded[:12]}...); "
                    "pass the model source the run used"
                )
            meta = load_npz(source.fetch(entry.metadata), nv=entry.nv)
            ncsnr = np.asarray(meta["fmri"]["ncsnr"], dtype=np.float64)
            n_voxels = self.root[array_name(subject, roi)].shape[1]
            if ncsnr.shape != (n_voxels,):
                raise ModelLoadError(
                    f"{array_name(subject, roi)}: ncsnr has {ncsnr.size} values, the store "
                    f"{n_voxels} voxels"
                )
            self._ncsnr[key] = ncsnr
        return self._ncsnr[key]

    def kept_voxels(self, subject: int, roi: str, threshold: float) -> np.ndarray:
        kept = np.flatnonzero(self.ncsnr(subject, roi) > threshold)
        if kept.size == 0:
            best = float(np.max(self.ncsnr(subject, roi)))
            raise InvalidParameterError(
                f"{array_name(subject, roi)} has no voxel with ncsnr > {threshold} (its "
                f"highest is {best:.3g}): lower ncsnr_threshold (--ncsnr-threshold)"
            )
        return kept

    # -- reading -------------------------------------------------------------------------
    def blocks(self, subject: int, roi: str, columns: np.ndarray) -> Iterator[tuple]:
        """(start, stop, float64 rows[start:stop, columns]) over the whole array."""
        array = self.root[array_name(subject, roi)]
        step = max(1, _BLOCK_ROWS // self.store.chunk_size) * self.store.chunk_size
        for a in range(0, self.n_images, step):
            b = min(self.n_images, a + step)
            yield a, b, np.asarray(array[a:b], dtype=np.float64)[:, columns]

    def fingerprint(self, subjects: Sequence[int], rois: Sequence[str]) -> str:
        """sha256 of what the result depends on in the store: its images and model files."""
        attrs = self.root.attrs
        parts = {
            "model_id": self.model_id,
            "n_images": self.n_images,
            "stimulus_fingerprint": attrs.get("stimulus_fingerprint"),
            "models": {
                array_name(s, r): self.store.model_files(s, r) for s in subjects for r in rois
            },
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
