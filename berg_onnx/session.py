"""onnxruntime sessions: provider choice, threads and memory options.

The choice of execution provider is checked *after* the session exists:
onnxruntime silently falls back to CPU when the CUDA provider cannot load its
libraries, and a user who asked for "cuda" must hear about it.

A CPU session of a verified model file goes through the cache of graphs onnxruntime
already optimised on this machine (utils/optimized.py): the second one writes the
entry, later ones load it without optimising or copying the weights again.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnxruntime as ort

from berg_onnx.constants import ENV_THREADS, available_cores, env_positive_int
from berg_onnx.errors import InvalidParameterError, ModelLoadError, ResourceError
from berg_onnx.utils.optimized import DATA_NAME, EXTERNAL_MIN_BYTES, OptimizedGraph

DEVICES = ("auto", "cpu", "cuda")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

_warned_fallback = False


def default_threads() -> int:
    return env_positive_int(ENV_THREADS) or available_cores()


def available_providers() -> list[str]:
    """onnxruntime's execution providers in this install (a cheap query)."""
    return ort.get_available_providers()


def check_device(device: object) -> str:
    if device not in DEVICES:
        raise InvalidParameterError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    return str(device)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The CPU arena keeps its high-water mark for the life of the session (GBs
    # after one large batch), but encode() only ever runs small chunks, so the
    # mark stays small and reusing it is 10-30% faster than fresh allocations.
    # The memory pattern planner adds ~50-100 MB for lateral at no speed gain.
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = False
    opts.log_severity_level = 3
    return opts


def _cuda_unavailable_reason() -> str:
    available = ort.get_available_providers()
    if CUDA not in available:
        return (
            "this onnxruntime has no CUDA provider (the CPU-only 'onnxruntime' package is "
            "installed; install the GPU flavour instead, see the README's GPU install)"
        )
    return (
        "onnxruntime-gpu is installed but the CUDA provider could not be loaded "
        "(CUDA/cuDNN libraries missing or incompatible, or no GPU visible); "
        "run `berg-onnx doctor` for details"
    )


def create_session(
    path: Path, device: str, threads: int | None = None, *, sha256: str | None = None
) -> tuple[ort.InferenceSession, str]:
    """A session on the requested device, and the provider it actually runs on.

    ``sha256``: the model file's, verified by the caller; on CPU it keys the cache
    of optimised graphs (module docstring). Without it the file is optimised anew.
    """
    global _warned_fallback
    device = check_device(device)
    want_cuda = device == "cuda" or (device == "auto" and CUDA in ort.get_available_providers())
    if device == "cuda" and CUDA not in ort.get_available_providers():
        raise ResourceError(f"device='cuda' requested, but {_cuda_unavailable_reason()}.")
    if not want_cuda:
        graph = None if sha256 is None else OptimizedGraph.for_model(sha256, _runtime())
        return _cpu_session(path, threads, graph), CPU
    # TF32 tensor cores (onnxruntime's CUDA default) move responses by ~2e-3,
    # twenty times the fidelity budget: keep full float32 arithmetic.
    providers = [(CUDA, {"use_tf32": "0"}), CPU]
    session = _load(path, session_options(threads), providers)
    active = session.get_providers()[0]
    if active != CUDA:
        reason = _cuda_unavailable_reason()
        if device == "cuda":
            raise ResourceError(f"device='cuda' requested, but {reason}.")
        if not _warned_fallback:
            warnings.warn(f"CUDA not usable, running on CPU: {reason}.", stacklevel=3)
            _warned_fallback = True
    return session, active


def _runtime() -> str:
    """This onnxruntime build, as the optimised graphs depend on it."""
    build = getattr(ort, "get_build_info", lambda: "")()  # the build's git commit
    return f"onnxruntime {ort.__version__} {build} {CPU}"


def _load(path: Path, opts: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load {path}: {e}") from None


def _cpu_session(
    path: Path, threads: int | None, graph: OptimizedGraph | None
) -> ort.InferenceSession:
    if graph is None:
        return _load(path, session_options(threads), [CPU])
    found = graph.find()
    if found is not None:
        try:
            return _load_optimised(found, threads)
        except Exception:  # a broken entry (or one removed meanwhile): rebuilt below
            pass
    if not (graph.seen() or graph.folder.exists()):  # a first use here: only remember it
        graph.mark()
        return _load(path, session_options(threads), [CPU])
    graph.discard()  # a stale entry stands in the way of the new one
    session = None
    try:
        with graph.writing() as target:  # published when this block ends without an error
            if target is None:
                raise _NotWritten("the cache folder cannot be written")
            opts = session_options(threads)
            opts.optimized_model_filepath = str(target)
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", DATA_NAME
            )
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                str(EXTERNAL_MIN_BYTES),
            )
            session = ort.InferenceSession(str(path), opts, providers=[CPU])
            check_written(session, target)
        return session
    except Exception:  # noqa: BLE001 - not cached (read-only, full, differs): plain load
        if session is not None:
            return session  # it is sound: only the written copy is not used
    return _load(path, session_options(threads), [CPU])


def _load_optimised(path: Path, threads: int | None) -> ort.InferenceSession:
    """A session of a graph onnxruntime already optimised: nothing to optimise again.
    The one way a cached entry is loaded, by later starts and by ``check_written``."""
    opts = session_options(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=[CPU])


class _NotWritten(Exception):
    """The optimised graph is not kept: the folder cannot be written, or it differs."""


def check_written(session: ort.InferenceSession, written: Path) -> None:
    """Raise _NotWritten unless the graph onnxruntime wrote at ``written``, loaded as later
    starts load it, gives the very bits ``session`` gives on a probe input.

    Costs one load and two runs on one image, once per model and machine (~40 ms for
    V1): a copy that computes anything else is never kept, whatever went wrong.
    """
    import numpy as np

    (spec,) = session.get_inputs()
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
    probe = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    copy = _load_optimised(written, session.get_session_options().intra_op_num_threads)
    want = session.run(None, {spec.name: probe})
    got = copy.run(None, {spec.name: probe})
    if len(got) != len(want) or not all(map(np.array_equal, got, want)):
        raise _NotWritten(f"the optimised copy of the graph at {written} gives other results")
