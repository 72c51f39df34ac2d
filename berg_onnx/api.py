"""BERG: the original's three functions (plus a catalogue) on exported models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from berg_onnx.constants import (
    DEFAULT_MODEL_ID,
    ENV_BATCH_SIZE,
    check_positive_int,
    check_precision,
    env_positive_int,
)
from berg_onnx.errors import InvalidParameterError, ModelNotFoundError
from berg_onnx.model import EncodingModel, load_encoding_model
from berg_onnx.session import CUDA, available_providers, check_device, default_threads
from berg_onnx.source import cards
from berg_onnx.source.catalog import ModelSpec, load_catalog
from berg_onnx.source.local import LocalStore, Store
from berg_onnx.source.manifest import ModelEntry, model_key

if TYPE_CHECKING:  # engines load only when a grid runs (BERG.run imports them then)
    from berg_onnx.engines import RayOptions, RunReport

SELECTION_KEYS = ("roi",)


class BERG:
    """Entry point, shaped like the original ``berg.BERG``.

    ``BERG(berg_dir=EXPORT_DIR)`` reads a local export; ``BERG()`` downloads
    from the Hub repository and revision pinned in models.json, which
    ``repo_id``/``revision`` or $BERG_ONNX_REPO/$BERG_ONNX_REVISION override
    (see hub.py). ``endpoint`` defaults to $HF_ENDPOINT or the public Hub.
    """

    def __init__(
        self,
        berg_dir: str | Path | None = None,
        *,
        repo_id: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        endpoint: str | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        if berg_dir is not None and (repo_id or revision):
            raise InvalidParameterError("give either berg_dir or repo_id/revision, not both")
        self.catalog = load_catalog()
        # None: chosen per model from its provider (see constants)
        self.batch_size = (
            env_positive_int(ENV_BATCH_SIZE)
            if batch_size is None
            else check_positive_int(batch_size, "batch_size")
        )
        # CPU cores to use (None: $BERG_ONNX_THREADS, else the cores this process may use)
        self.threads = (
            default_threads() if threads is None else check_positive_int(threads, "threads")
        )
        if berg_dir is not None:
            self.store: Store = LocalStore(berg_dir)
        else:
            from berg_onnx.source.hub import HubStore

            self.store = HubStore(repo_id, revision, cache_dir, endpoint)
        self._models: dict[tuple[str, int, str, str, str], EncodingModel] = {}

    def __repr__(self) -> str:
        return f"BERG({self.store.describe()})"

    # -- BERG's catalogue and model cards (berg_onnx/source/cards/) ------------------
    def list_models(self) -> list[str]:
        """The model ids berg-onnx knows, sorted (BERG's list_models())."""
        return sorted(self.catalog.models)

    def get_model_catalog(self, print_format: bool = False) -> dict[str, list[str]]:
        """Modality -> training datasets, as BERG's get_model_catalog(); ``print_format``
        also prints them as BERG does. Per-model details: ``get_catalog_details()``."""
        catalog = cards.catalog_by_modality([cards.load_card(m) for m in self.catalog.models])
        if print_format:
            print(cards.render_catalog(catalog))
        return catalog

    def describe(self, model_id: str) -> dict[str, Any]:
        """Print the model card of ``model_id`` and return BERG's describe() dict.

        The card describes the model family (every subject and ROI), whatever this
        source holds; ``berg-onnx list`` shows what an export has.
        """
        self.catalog.model(model_id)  # ModelNotFoundError naming the valid ids
        return cards.describe(model_id)

    def get_catalog_details(self) -> dict[str, dict[str, Any]]:
        """Model ids with their subjects, ROIs (split flags) and known voxel counts."""
        return {
            mid: {
                "description": spec.description,
                "subjects": list(spec.subjects),
                "rois": list(spec.roi_names),
                "split_rois": [r.name for r in spec.rois if r.splits > 1],
                "voxels": {s: dict(v) for s, v in spec.voxels.items()},
            }
            for mid, spec in self.catalog.models.items()
        }

    def _resolve(self, model_id: str, subject: Any, roi: Any) -> tuple[ModelSpec, int, str]:
        spec = self.catalog.model(model_id)
        return spec, spec.check_subject(subject), spec.check_roi(roi).name

    # -- the original's three functions --------------------------------------------
    def get_encoding_model(
        self,
        model_id: str = DEFAULT_MODEL_ID,
        subject: int | None = None,
        selection: dict[str, Any] | None = None,
        device: str = "auto",
        precision: str = "fp32",
    ) -> EncodingModel:
        """Load (or reuse) the model of one subject and ROI on ``device``.

        ``precision="int8"`` picks the opt-in tier whose readout GEMMs run in int8
        (faster on CPU, ~0.01 max abs difference), when the export has it.
        """
        if selection is None:  # BERG's InvalidParameterError, with the fix
            raise InvalidParameterError(
                "Parameter 'selection' is required but was not provided: pass "
                f"selection={{'roi': ROI}}, ROI one of "
                f"{', '.join(self.catalog.model(model_id).roi_names)}."
            )
        if not isinstance(selection, dict) or "roi" not in selection:
            raise InvalidParameterError(
                f"selection must be a dict with the key 'roi', e.g. {{'roi': 'V1'}}; "
                f"got {selection!r}."
            )
        unknown = sorted(set(selection) - set(SELECTION_KEYS))
        if unknown:
            raise InvalidParameterError(
                f"Unknown selection key(s) {unknown}; valid keys: {', '.join(SELECTION_KEYS)}."
            )
        spec, subject, roi = self._resolve(model_id, subject, selection["roi"])
        device = check_device(device)
        check_precision(precision)
        # "auto" without a CUDA provider is "cpu": one model object for both
        if device == "auto" and CUDA not in available_providers():
            device = "cpu"
        key = (spec.model_id, subject, roi, device, precision)
        entry = self.store.manifest().get(spec.model_id, subject, roi)  # re-read if it changed
        model = self._models.get(key)
        if model is None or model.entry != entry:  # new, or the export was rewritten on disk
            model = self.load_entry(entry, device, precision)
            self._models[key] = model
            if device == "auto" and model.provider != CUDA:  # CUDA unusable: it is the CPU model
                self._models[(*key[:3], "cpu", precision)] = model
        return model

    def load_entry(self, entry: ModelEntry, device: str, precision: str) -> EncodingModel:
        """A new model for one manifest entry, outside the cache: get_encoding_model caches
        these; experiment engines hold only the models they are running."""
        return load_encoding_model(
            self.store, entry, device, precision, batch_size=self.batch_size, threads=self.threads
        )

    def encode(
        self,
        model: EncodingModel,
        stimulus: Any,
        return_metadata: bool = False,
        show_progress: bool | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
        """(N, nv) float32 responses, or (responses, metadata) with return_metadata.

        ``show_progress``: None (default) draws a bar only when stderr is a terminal;
        True or False force it on or off.
        """
        if not isinstance(model, EncodingModel):
            raise InvalidParameterError(
                f"model must come from get_encoding_model(), got {type(model).__name__}"
            )
        responses = model.encode(stimulus, batch_size=batch_size, show_progress=show_progress)
        if return_metadata:
            meta = self.get_model_metadata(model.model_id, model.subject, model.roi)
            return responses, meta
        return responses

    # -- in silico experiments (berg_onnx/experiment/) -------------------------------
    def run(
        self,
        stimulus: Any,
        subjects: Any = "all",
        rois: Any = "all",
        *,
        store: str | Path,
        model_id: str = DEFAULT_MODEL_ID,
        chunk_size: int | None = None,
        overwrite: bool = False,
        device: str = "auto",
        precision: str = "fp32",
        show_progress: bool | None = None,
        engine: str | RayOptions = "local",
        on_error: str = "fail",
        wait: bool = False,
    ) -> RunReport:
        """Responses of every (subject, ROI) model to ``stimulus``, into a Zarr store.

        ``stimulus``: a folder (scanned like ``encode``'s CLI), image file paths,
        a ``.npy`` path or an (N, 3, H, W) integer array. ``subjects``/``rois``:
        lists, or ``"all"`` (every model the source has). ``store``: a folder
        (``*.zarr``) or a URL zarr understands. Resumable: running it again
        computes only the chunks (``chunk_size`` rows; default 256, or the
        store's) not yet recorded as complete; a store started on other images
        or other model files is refused unless ``overwrite=True``. Needs the
        ``[zarr]`` extra. Returns an ``engines.RunReport``; layout: README.
        ``engine="ray"`` (or ``berg_onnx.engines.RayOptions(address=...)``) runs
        it on Ray Data instead, into the same store (the ``[ray]`` extra).
        ``on_error``: an image that cannot be read; ``"fail"`` (default) stops
        before anything is written and names every such image; ``"skip"`` writes
        NaN rows for them, recorded in the store and in the report's ``failed``,
        and a later run tries them again once their files change. Images are
        known by content (sha256): a changed one is named and its chunks are
        computed again; a moved or copied folder is the same set. One run
        writes a store at a time: another's raises ExperimentError naming it,
        unless ``wait=True``.
        """
        from berg_onnx.engines import run_experiment

        return run_experiment(
            self,
            stimulus,
            store=store,
            subjects=subjects,
            rois=rois,
            model_id=model_id,
            chunk_size=chunk_size,
            overwrite=overwrite,
            device=device,
            precision=precision,
            show_progress=show_progress,
            engine=engine,
            on_error=on_error,
            wait=wait,
        )

    def get_model_metadata(
        self, model_id: str = DEFAULT_MODEL_ID, subject: int | None = None, roi: str | None = None
    ) -> dict[str, Any]:
        """The original's metadata dict for one ROI, or {roi: metadata} for all ROIs.

        Reads only the npz file: no model is loaded.
        """
        if roi is None:
            spec = self.catalog.model(model_id)
            subject = spec.check_subject(subject)
            manifest = self.store.manifest()
            available = [
                r for r in spec.roi_names if model_key(spec.model_id, subject, r) in manifest.models
            ]
            if not available:
                raise ModelNotFoundError(
                    f"{self.store.describe()} has no models for subject {subject}."
                )
            return {r: self.get_model_metadata(model_id, subject, r) for r in available}
        spec, subject, roi = self._resolve(model_id, subject, roi)
        entry = self.store.manifest().get(spec.model_id, subject, roi)
        from berg_onnx.source.metadata import (
            load_npz,  # not at import: zipfile is not needed to encode
        )

        return load_npz(self.store.fetch(entry.metadata), nv=entry.nv)
