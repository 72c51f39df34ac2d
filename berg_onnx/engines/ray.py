"""The Ray engine: an experiment's job on Ray Data, writing the same Zarr store as the local one.

Per group of models (by default one subject's ROIs), one streaming Ray Data
pipeline over the chunks that some model of the group still lacks:

    chunk indices --map_batches (stateless tasks)--> (chunk_size, 3, 227, 227) uint8
                  rows, decoded and resized exactly as encode() does (our numpy
                  resize, never Ray's read_images resize, which is PIL bilinear)
                  --map_batches (actor pool; each actor loads the group's sessions
                  once, on CPU or one GPU)--> each model's rows of the chunk, written
                  whole into the store and recorded complete (ExperimentStore.write_chunk)
                  --> small records the driver counts for the progress bar.

One row of the dataset is one chunk of the store, so a write is always a whole,
chunk-aligned block and the local engine and this one record completion the
same way: a run stopped in either resumes in either. Responses never travel
back through the object store.

Where the preprocessing runs: with GPU actors, the two stages ask for
different resources, so the decode + resize runs as CPU tasks spread over the
cluster while the GPU actors only run models (preprocessing, not the GPU, is
what bounds encode() on a GPU machine). With CPU actors both stages ask for the
same CPUs and Ray Data fuses them: each actor preprocesses its own chunk, and
the 40 MB of uint8 rows per chunk never cross the object store.
``RayOptions(preprocess_cpus=...)`` keeps them apart on CPU too.

Groups run one after the other, each pool sized to the cluster, rather than all
pools at once: a pool per group alive at the same time would need as many
actors as groups before the first chunk could flow (and balancing between
them), while running them in turn costs one more decode + resize per image per
group, ~1.7 ms of CPU against the group's models at 10-40 ms each.

Fault tolerance is Ray's: a preprocessing task whose worker dies is retried, an
actor that dies is restarted (its constructor loads the sessions again) and its
unfinished chunk is retried. Every write is a whole chunk computed from the
same inputs on a single-threaded session, so a retried chunk writes the same
bytes. When the driver itself dies, the job ends; running it again computes
only the chunks not recorded complete.

Ray is the optional ``[ray]`` extra, imported only here and only when a job runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from berg_onnx import errors
from berg_onnx.constants import ENV_RAY_ADDRESS, INPUT_SIZE, check_positive_int, env_str
from berg_onnx.engines._runs import RunLedger, RunReport
from berg_onnx.errors import InvalidParameterError, ResourceError
from berg_onnx.experiment.job import ExperimentJob, ModelPlan, encode_rows, load_model
from berg_onnx.experiment.stimuli import StimulusSet
from berg_onnx.experiment.store import ExperimentStore
from berg_onnx.source.local import ModelSource

RAY_EXTRA = 'pip install "berg-onnx[ray]"'


def import_ray() -> Any:
    """ray (with Ray Data), or a one-line error naming the extra that provides it."""
    try:
        import ray
        import ray.data  # noqa: F401 - ray without its [data] part is not enough
    except ImportError:
        raise ResourceError(f"the ray engine needs Ray Data: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How the job is laid out on the cluster (README, "Experiments on a Ray cluster").

    ``address``: a running cluster (``HOST:PORT`` as ``ray start --head``
    prints, ``auto`` for the one started on this machine, or ``ray://...``);
    None: $RAY_ADDRESS, else a local Ray started for this run and shut down
    after it. ``actors``: actors per group's pool (None: on CPU, one per
    ``cpus_per_actor`` CPUs of the cluster; on GPU, one per GPU).
    ``models_per_actor``: models an actor holds (None: one subject's ROIs).
    ``cpus_per_actor``: CPUs each actor reserves, and its onnxruntime threads.
    ``gpus_per_actor``: None: 1 where the device is cuda, or auto on a cluster
    with GPUs; 0 keeps actors on CPU. ``preprocess_cpus``: CPUs per
    preprocessing task (None: 1 beside GPU actors; on CPU, ``cpus_per_actor``,
    which fuses preprocessing into the actors, see the module docstring).

    Retries are Ray Data's defaults, which are what this job needs: a task
    whose worker dies is retried and an actor that dies is restarted, without
    limit (``max_retries=-1``, ``max_restarts=-1``, ``max_task_retries=-1``),
    while an exception raised by our code (an unreadable image) fails the job
    at once. Ray 2.60 deprecates passing these per ``map_batches`` call.
    """

    address: str | None = None
    actors: int | None = None
    models_per_actor: int | None = None
    cpus_per_actor: int = 1
    gpus_per_actor: float | None = None
    preprocess_cpus: float | None = None

    def __post_init__(self) -> None:
        if self.actors is not None:
            check_positive_int(self.actors, "actors")
        if self.models_per_actor is not None:
            check_positive_int(self.models_per_actor, "models_per_actor")
        check_positive_int(self.cpus_per_actor, "cpus_per_actor")
        if self.preprocess_cpus is not None and not (_number(self.preprocess_cpus) > 0):
            raise InvalidParameterError(
                f"preprocess_cpus must be a number of CPUs > 0, got {self.preprocess_cpus!r}"
            )
        if self.gpus_per_actor is not None and not 0 <= _number(self.gpus_per_actor) <= 1:
            raise InvalidParameterError(
                f"gpus_per_actor must be between 0 and 1, got {self.gpus_per_actor!r}"
            )


def _number(value: object) -> float:
    """``value`` as a float if it is a real number (not a bool), else NaN (fails every check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


# -- connecting ----------------------------------------------------------------------
@contextlib.contextmanager
def ray_connection(address: str | None) -> Iterator[Any]:
    """Ray, connected for the duration of the block.

    Reuses a connection the caller already made (and leaves it open);
    otherwise connects to ``address`` or $RAY_ADDRESS, or starts a private
    local instance, and disconnects (stopping that instance) afterwards.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or env_str(ENV_RAY_ADDRESS)
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if address is None:
        # "local": a fresh instance owned by this run even if another one runs here
        # (pass address="auto" to use that one); no dashboard, which [data] lacks.
        kwargs.update(address="local", include_dashboard=False)
    else:
        kwargs.update(address=address)
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise ResourceError(
            f"cannot connect to the Ray cluster at {address}: {e}; start it with "
            "`ray start --head` and pass the address it prints (--ray-address HOST:PORT)"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


# -- the pipeline's stages (run on the cluster) ---------------------------------------
def _preprocess(
    batch: dict[str, np.ndarray],
    stimuli: StimulusSet,
    array_ref: Any,
    chunk_size: int,
    store_path: str,
):
    """Chunk indices -> their images as (1, chunk_size, 3, 227, 227) uint8 rows (zero-padded).

    A stateless task: the rows come from the experiment's StimulusSet, the same
    decode + exact resize the local engine uses, and their records (sha256,
    identity, read errors) are written into the store here, before any model's
    chunk. Padding keeps every row's shape equal, so Ray stores them as one
    fixed-shape tensor column; ``rows`` says how many are real, ``failed``
    which could not be read (``on_error="skip"``).
    """
    if array_ref is not None:  # an in-memory array travels once, via the object store
        import ray

        stimuli = dataclasses.replace(stimuli, array=ray.get(array_ref))
    chunks = np.asarray(batch["chunk"], dtype=np.int64)
    images = np.zeros((len(chunks), chunk_size, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    failed = np.zeros((len(chunks), chunk_size), dtype=np.uint8)
    rows = np.empty(len(chunks), dtype=np.int64)
    store = ExperimentStore.attach(store_path) if stimuli.kind == "files" else None
    for i, chunk in enumerate(chunks):
        start = int(chunk) * chunk_size
        stop = min(len(stimuli), start + chunk_size)
        images[i, : stop - start], found = stimuli.read_checked(start, stop)
        failed[i, : stop - start] = found.failed
        rows[i] = stop - start
        if store is not None:
            store.write_rows(int(chunk), found)
    return {"chunk": chunks, "rows": rows, "images": images, "failed": failed}


class _ModelGroup:
    """An actor holding one group's sessions; computes and writes whole chunks."""

    def __init__(
        self,
        loader: _Loader,
        plans: tuple[ModelPlan, ...],
        todo: dict[str, frozenset[int]],
        store_path: str,
        device: str,
    ) -> None:
        self.store = ExperimentStore.attach(store_path)
        self.todo = todo
        self.models = [
            (
                plan,
                load_model(
                    loader.source,
                    plan,
                    device,
                    batch_size=loader.batch_size,
                    threads=loader.threads,
                ),
            )
            for plan in plans
        ]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = np.zeros(len(batch["chunk"]), dtype=np.int64)
        for i, (chunk, n) in enumerate(zip(batch["chunk"], batch["rows"], strict=True)):
            chunk, rows = int(chunk), batch["images"][i, : int(n)]
            failed = batch["failed"][i, : int(n)].astype(bool)
            for plan, model in self.models:
                if chunk in self.todo[plan.name]:
                    values = encode_rows(model, rows)  # the local engine's per-chunk loop
                    self.store.write_chunk(plan.subject, plan.roi, chunk, values, failed=failed)
                    written[i] += 1
        return {"chunk": np.asarray(batch["chunk"]), "rows": batch["rows"], "written": written}


@dataclass(frozen=True)
class _Loader:
    """What each actor needs to load its models (``experiment.load_model``), picklable.

    The source is the driver's (a local export folder, or the Hub repo pinned at
    the commit the driver's manifest came from); each node fetches and verifies
    the files it runs.
    """

    source: ModelSource
    batch_size: int | None
    threads: int


# -- planning ------------------------------------------------------------------------
def model_groups(
    plans: tuple[ModelPlan, ...], models_per_actor: int | None
) -> list[tuple[ModelPlan, ...]]:
    """The job's models in groups, one actor pool each: by subject, or ``models_per_actor``."""
    if models_per_actor is None:
        by_subject: dict[int, list[ModelPlan]] = {}
        for plan in plans:
            by_subject.setdefault(plan.subject, []).append(plan)
        return [tuple(g) for g in by_subject.values()]
    return [plans[i : i + models_per_actor] for i in range(0, len(plans), models_per_actor)]


def plan_layout(cluster: dict[str, float], options: RayOptions, device: str) -> _Layout:
    """Each pool's actors and their resources, from the options and the cluster's
    resources (``ray.cluster_resources()``)."""
    cpus, n_gpus = float(cluster.get("CPU", 1)), float(cluster.get("GPU", 0))
    gpus = options.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if device == "cuda" or (device == "auto" and n_gpus >= 1) else 0.0
    if device == "cuda" and gpus == 0:
        raise InvalidParameterError("device='cuda' needs gpus_per_actor > 0")
    if gpus > 0 and n_gpus < gpus:
        raise ResourceError(
            f"the Ray cluster has {n_gpus:g} GPUs; each actor asks for {gpus:g}: "
            "start the nodes with GPUs, or run with device='cpu'"
        )
    per_actor = options.cpus_per_actor
    preprocess = options.preprocess_cpus
    if preprocess is None:  # CPU: the same resources as the actors, so Ray fuses the stages
        preprocess = 1.0 if gpus > 0 else float(per_actor)
    fused = gpus == 0 and preprocess == per_actor
    if options.actors is not None:
        actors = options.actors
    elif gpus > 0:
        actors = max(1, int(n_gpus // gpus))
    else:
        actors = max(1, int((cpus - (0 if fused else preprocess)) // per_actor))
    if not fused and actors * per_actor + preprocess > cpus:
        raise ResourceError(
            f"{actors} actors x {per_actor} CPUs leave the Ray cluster's {cpus:g} CPUs no "
            f"room for a preprocessing task ({preprocess:g} CPUs): ask for fewer actors"
        )
    return _Layout(actors, per_actor, gpus, preprocess, "cpu" if gpus == 0 else device)


def run_ray(
    source: ModelSource,
    job: ExperimentJob,
    store: ExperimentStore,
    *,
    device: str = "auto",
    show_progress: bool | None = None,
    batch_size: int | None = None,
    threads: int = 1,
    options: RayOptions | None = None,
) -> RunReport:
    """Compute every chunk of ``job`` that ``store`` lacks on Ray; returns a RunReport.

    ``store`` is the ExperimentStore the driver created or checked
    (``ExperimentStore.create_or_open``); actors attach to the same path, which
    must therefore be reachable from every node (a shared folder or an object
    store URL). ``threads`` is this machine's: each actor uses
    ``options.cpus_per_actor`` threads instead.
    """
    options = options or RayOptions()
    ledger = RunLedger(job, store, desc="ray", show_progress=show_progress)
    if not ledger.missing:
        return ledger.report(0)
    written = 0
    bar, todo = ledger.bar, ledger.todo
    try:
        with ray_connection(options.address) as ray:
            _quiet_ray_data(ray)
            layout = plan_layout(ray.cluster_resources(), options, device)
            loader = _Loader(_pinned(source), batch_size, options.cpus_per_actor)
            inputs = _Inputs(loader, *_shippable(ray, job.stimuli))
            for group in model_groups(tuple(job.models), options.models_per_actor):
                ds = _pipeline(ray, store, group, todo, inputs, layout)
                if ds is None:
                    continue
                bar.set_description(f"ray: {group[0].name}..{group[-1].name}")
                try:
                    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                        written += int(out["written"].sum())
                        bar.update(int((out["rows"] * out["written"]).sum()))
                except ray.exceptions.RayError as e:
                    _raise_ours(e)
                    raise
    finally:
        bar.close()
    return ledger.report(written)


@dataclass(frozen=True)
class _Inputs:
    """What every pipeline of the job ships to the cluster."""

    loader: _Loader
    stimuli: StimulusSet  # without an in-memory array
    array_ref: Any  # that array in the object store, or None


@dataclass(frozen=True)
class _Layout:
    """Resources of each group's pool and of the preprocessing tasks."""

    actors: int
    cpus_per_actor: int
    gpus_per_actor: float
    preprocess_cpus: float
    device: str  # what the actors load their sessions on


def _pipeline(ray, store, group, todo, inputs: _Inputs, layout: _Layout):
    """The Ray Data pipeline of one group over the chunks it lacks, or None if it lacks none."""
    chunks = sorted(set().union(*(todo[p] for p in group)))
    if not chunks:
        return None
    ds = ray.data.from_items([{"chunk": c} for c in chunks], override_num_blocks=len(chunks))
    ds = ds.map_batches(
        _preprocess,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={
            "stimuli": inputs.stimuli,
            "array_ref": inputs.array_ref,
            "chunk_size": store.chunk_size,
            "store_path": store.path,
        },
        num_cpus=layout.preprocess_cpus,
    )
    return ds.map_batches(
        _ModelGroup,
        batch_size=1,  # one chunk per call: the explicit integer Ray needs with GPUs
        batch_format="numpy",
        fn_constructor_kwargs={
            "loader": inputs.loader,
            "plans": group,
            "todo": {p.name: frozenset(todo[p]) for p in group},
            "store_path": store.path,
            "device": layout.device,
        },
        compute=ray.data.ActorPoolStrategy(size=min(layout.actors, len(chunks))),
        num_cpus=layout.cpus_per_actor,
        num_gpus=layout.gpus_per_actor,
    )


_OUR_ERROR = re.compile(r"^berg_onnx\.errors\.(\w+): (.+)$", re.MULTILINE)


def _raise_ours(error: Exception) -> None:
    """Raise the BERGError a task or actor raised (an unreadable image...), if it was one.

    Ray Data hands the driver a RayTaskError(UserCodeException) whose cause
    does not survive the trip; only its text names our exception. Returns
    when it names none, for the caller to re-raise the Ray error.
    """
    match = _OUR_ERROR.search(str(error))
    cls = getattr(errors, match.group(1), None) if match else None
    if isinstance(cls, type) and issubclass(cls, errors.BERGError):
        raise cls(match.group(2)) from None


def _pinned(model_store: ModelSource) -> ModelSource:
    """The model store, its manifest read here so that every actor runs the same export.

    A Hub store keeps the commit its manifest was read at and fetches every
    later file at that commit, on whichever node unpickles it.
    """
    model_store.manifest()
    return model_store


def _shippable(ray: Any, stimuli: StimulusSet) -> tuple[StimulusSet, Any]:
    """The StimulusSet as tasks receive it: an in-memory array goes to the object store once."""
    if stimuli.kind == "array" and stimuli.npy_path is None:
        return dataclasses.replace(stimuli, array=None), ray.put(np.asarray(stimuli.array))
    return stimuli, None


def _quiet_ray_data(ray: Any) -> None:
    """Our one progress bar instead of Ray Data's per-operator bars and logs."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # it warns that the bars we turned off are off
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
