"""Engines: run an experiment's job (``berg_onnx.experiment``) into its store.

Owns ``run_experiment`` (what ``BERG.run`` and ``berg-onnx run`` call), the registry
of engines and the run bookkeeping they share (``_runs``). May import
``experiment``, ``model``, ``session``, ``source``, ``utils``; nothing above.

- ``local``: this machine, block by block (always available).
- ``ray``: Ray Data on a Ray cluster, or on a local Ray started for the run
  (the ``[ray]`` extra, imported only when such a job runs).

Both write the same store the same way, so a run stopped in one resumes in the other.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.engines._runs import RunLedger, RunReport
from berg_onnx.engines.local import run_local
from berg_onnx.engines.ray import RayOptions, import_ray, run_ray
from berg_onnx.errors import InvalidParameterError
from berg_onnx.experiment.job import ALL, ModelLibrary, load_model, plan_experiment, voxel_space
from berg_onnx.experiment.stimuli import check_on_error
from berg_onnx.experiment.store import ExperimentStore, import_zarr
from berg_onnx.session import check_device

ENGINES = ("local", "ray")

#: Runs a planned job into an opened store:
#: (source, job, store, *, device, show_progress, batch_size, threads) -> RunReport.
EngineRunner = Callable[..., RunReport]


def select_engine(engine: str | RayOptions) -> EngineRunner:
    """The runner for ``engine``: "local", "ray" or a RayOptions.

    Called before the store is touched, so that a missing extra or a bad
    value fails at once.
    """
    if isinstance(engine, str) and engine == "local":
        return run_local
    if isinstance(engine, str) and engine == "ray":
        engine = RayOptions()
    if not isinstance(engine, RayOptions):
        raise InvalidParameterError(
            f"engine must be one of {', '.join(ENGINES)} (or a RayOptions), got {engine!r}"
        )
    import_ray()
    return functools.partial(run_ray, options=engine)


def engine_from_cli(
    engine: str, ray_address: str | None, ray_actors: int | None
) -> str | RayOptions:
    """The ``engine`` value for ``--engine``/``--ray-address``/``--ray-actors``."""
    if engine != "ray":
        if ray_address is not None or ray_actors is not None:
            raise InvalidParameterError("--ray-address and --ray-actors need --engine ray")
        return engine
    return RayOptions(address=ray_address, actors=ray_actors)


def run_experiment(
    berg: ModelLibrary,
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
    show_progress: bool | None = None,
    engine: str | RayOptions = "local",
    on_error: str = "fail",
    wait: bool = False,
) -> RunReport:
    """Run (or resume) the grid subjects x rois over ``stimulus`` into the store at ``store``.

    See ``BERG.run``. Checks that can fail (zarr installed, device, models,
    stimuli and their headers, the existing store, its lock) all run before
    the store is created or written.
    """
    import_zarr()
    runner = select_engine(engine)
    device = check_device(device)
    on_error = check_on_error(on_error)
    job = plan_experiment(
        berg,
        stimulus,
        subjects,
        rois,
        model_id=model_id,
        precision=precision,
        chunk_size=chunk_size,
    )
    if device == "cuda" and runner is run_local:
        # A session on the device now, so that a GPU that cannot run fails before the store
        # exists (the Ray engine's actors may have GPUs that this driver lacks).
        load_model(berg.store, job.models[0], device, batch_size=berg.batch_size)
    with ExperimentStore.create_or_open(
        store,
        job,
        overwrite=overwrite,
        on_error=on_error,
        wait=wait,
        voxel_space=functools.partial(voxel_space, berg.store),
        threads=berg.threads,
    ) as opened:
        job = dataclasses.replace(job, stimuli=opened.stimuli)  # the store's row order
        return runner(
            berg.store,
            job,
            opened,
            device=device,
            show_progress=show_progress,
            batch_size=berg.batch_size,
            threads=berg.threads,
        )


__all__ = [
    "ENGINES",
    "RayOptions",
    "RunLedger",
    "RunReport",
    "engine_from_cli",
    "run_experiment",
    "run_local",
    "select_engine",
]
