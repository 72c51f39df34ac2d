"""In silico experiments: many (subject, ROI) models over one image set, into one Zarr store.

Parts, each engine-agnostic except the last:
- ``stimuli``: the image set (folder, files, .npy or array), its row labels and
  fingerprint, and its rows preprocessed once as 227x227 uint8;
- ``job``: what to compute (``plan_experiment``) and how a model is loaded for it;
- ``store``: the Zarr layout, checks against a job, completion records and
  whole-chunk writes (``ExperimentStore``), shared by every engine;
- ``local``: the engine that runs on this machine.

zarr is the optional ``[zarr]`` extra, imported only when a store is opened.

Another engine (e.g. Ray) writes the same store with the same values this way:

    job = plan_experiment(berg, stimulus, subjects, rois, chunk_size=...)   # driver
    store = ExperimentStore.create_or_open(path, job, overwrite)            # driver, once
    todo = {m.name: store.missing_chunks(m.subject, m.roi) for m in job.models}
    rows = job.stimuli.read(*store.chunk_bounds(c))        # any process: uint8, resized once
    model = load_model(berg, plan, device)                 # per worker, loaded once
    values = encode_rows(model, rows)                      # one chunk's rows
    ExperimentStore.attach(path).write_chunk(s, roi, c, values)   # data, then its record

Each chunk must have one writer at a time; different chunks may be written by
any number of processes at once.
"""

from __future__ import annotations

import os
from typing import Any

from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.engines.local import DEFAULT_BLOCK_IMAGES, RunReport, run_local
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
from berg_onnx.session import check_device

__all__ = [
    "ALL",
    "DEFAULT_BLOCK_IMAGES",
    "DEFAULT_CHUNK_SIZE",
    "ExperimentJob",
    "ExperimentStore",
    "ModelPlan",
    "RunReport",
    "StimulusSet",
    "array_name",
    "as_model_input",
    "encode_rows",
    "as_model_input",
    "encode_rows",
    "load_model",
    "plan_experiment",
    "resolve_stimuli",
    "run_local",
    "run_experiment",
]


def run_experiment(
    berg: Any,
    stimulus: Any,
    *,
    store: str | os.PathLike[str],
    subjects: Any = ALL,
    rois: Any = ALL,
    model_id: str = DEFAULT_MODEL_ID,
    chunk_size: int | None = None,
    overwrite: bool = False,
    device: str = "auto",
    precision: str = "fp32",
    show_progress: bool = True,
    block_size: int | None = None,
    engine: Any = "local",
) -> RunReport:
    """Run (or resume) the grid subjects x rois over ``stimulus`` into the store at ``store``.

    See ``BERG.run``. Checks that can fail (zarr installed, device, models,
    stimuli, the existing store) all run before any model does.
    """
    from berg_onnx.engines import select_engine

    import_zarr()
    runner = select_engine(engine)  # "local", "ray" or engines.RayOptions (berg_onnx.engines)
    device = check_device(device)
    job = plan_experiment(
        berg,
        stimulus,
        subjects,
        rois,
        model_id=model_id,
        precision=precision,
        chunk_size=chunk_size,
    )
    opened = ExperimentStore.create_or_open(store, job, overwrite=overwrite)
    if runner is not None:
        return runner(berg, job, opened, device=device, show_progress=show_progress)
    return run_local(
        berg, job, opened, device=device, show_progress=show_progress, block_size=block_size
    )
