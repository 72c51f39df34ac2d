"""onnxruntime sessions: provider choice, threads and memory options.

The choice of execution provider is checked *after* the session exists:
onnxruntime silently falls back to CPU when the CUDA provider cannot load its
libraries, and a user who asked for "cuda" must hear about it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnxruntime as ort

from berg_onnx.constants import ENV_THREADS, available_cores, env_positive_int
from berg_onnx.errors import InvalidParameterError, ModelLoadError, ResourceError

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
    path: Path, device: str, threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """A session on the requested device, and the provider it actually runs on."""
    global _warned_fallback
    device = check_device(device)
    opts = session_options(threads)
    want_cuda = device == "cuda" or (device == "auto" and CUDA in ort.get_available_providers())
    if device == "cuda" and CUDA not in ort.get_available_providers():
        raise ResourceError(f"device='cuda' requested, but {_cuda_unavailable_reason()}.")
    # TF32 tensor cores (onnxruntime's CUDA default) move responses by ~2e-3,
    # twenty times the fidelity budget: keep full float32 arithmetic.
    providers = [(CUDA, {"use_tf32": "0"}), CPU] if want_cuda else [CPU]
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load {path}: {e}") from None
    active = session.get_providers()[0]
    if want_cuda and active != CUDA:
        reason = _cuda_unavailable_reason()
        if device == "cuda":
            raise ResourceError(f"device='cuda' requested, but {reason}.")
        if not _warned_fallback:
            warnings.warn(f"CUDA not usable, running on CPU: {reason}.", stacklevel=3)
            _warned_fallback = True
    return session, active
