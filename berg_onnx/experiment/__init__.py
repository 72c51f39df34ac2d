"""In silico experiments: many (subject, ROI) models over one image set, into one Zarr store.

Owns what an experiment is and where its results live, for every engine:
- ``stimuli``: the image set (folder, files, .npy or array), its row labels and
  fingerprint, and its rows preprocessed once as 227x227 uint8;
- ``job``: what to compute (``plan_experiment``) and how a model is loaded for it;
- ``store``: the Zarr layout, checks against a job, completion records and
  whole-chunk writes (``ExperimentStore``), and the read-only reader;
- ``records``: per-image records (sha256, file identity, read errors) and how a
  resumed store is matched to the images given; ``lock``: one writing run per store.
Running a job is ``berg_onnx.engines``' (``run_experiment``, the local and Ray
engines). May import ``model``, ``session``, ``source``, ``inputs``, ``utils``;
never ``engines``, ``api`` or ``cli``.

zarr is the optional ``[zarr]`` extra, imported only when a store is opened.

An engine writes the store this way:

    job = plan_experiment(berg, stimulus, subjects, rois, chunk_size=...)   # driver
    with ExperimentStore.create_or_open(path, job, overwrite, on_error=...) as store:
        job = dataclasses.replace(job, stimuli=store.stimuli)   # the store's row order
        todo = {m.name: store.missing_chunks(m.subject, m.roi) for m in job.models}
        rows, found = job.stimuli.read_checked(*store.chunk_bounds(c))  # any process
        ExperimentStore.attach(path).write_rows(c, found)      # the images' records first
        model = load_model(berg.store, plan, device)           # per worker, loaded once
        values = encode_rows(model, rows)                      # one chunk's rows
        ExperimentStore.attach(path).write_chunk(s, roi, c, values, failed=found.failed)

``create_or_open`` checks everything (images, their headers, the existing
store) before writing anything, and holds the store's lock (lock.py) until the
block ends; readers use ``ExperimentStore.open(path)`` (read-only). Each chunk
must have one writer at a time; different chunks may be written by any number
of processes at once.
"""

from __future__ import annotations

from berg_onnx.experiment.job import (
    ALL,
    ExperimentJob,
    ModelPlan,
    array_name,
    as_model_input,
    encode_rows,
    load_model,
    plan_experiment,
)
from berg_onnx.experiment.stimuli import StimulusSet, resolve_stimuli
from berg_onnx.experiment.store import DEFAULT_CHUNK_SIZE, ExperimentStore, import_zarr

__all__ = [
    "ALL",
    "DEFAULT_CHUNK_SIZE",
    "ExperimentJob",
    "ExperimentStore",
    "ModelPlan",
    "StimulusSet",
    "array_name",
    "as_model_input",
    "encode_rows",
    "import_zarr",
    "load_model",
    "plan_experiment",
    "resolve_stimuli",
]
