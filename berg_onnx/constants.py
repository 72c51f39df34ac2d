"""Every environment variable and default berg_onnx reads, next to each other.

Values are read when this module is imported, like huggingface_hub's
constants; functions that must honour a later change take an explicit
argument instead of re-reading the environment.
"""

from __future__ import annotations

import os

#: Model id of the only model family shipped so far.
DEFAULT_MODEL_ID = "fmri-nsd-fwrf"

#: Hub repository holding the exported models (overrides models.json's ``hub.repo_id``).
ENV_REPO = "BERG_ONNX_REPO"
#: Revision (branch, tag or commit) to download (overrides models.json's ``hub.revision``).
ENV_REVISION = "BERG_ONNX_REVISION"
#: Cache folder for downloaded files (default: the Hugging Face cache).
ENV_CACHE = "BERG_ONNX_CACHE"
#: Images per onnxruntime call in encode() (default below).
ENV_BATCH_SIZE = "BERG_ONNX_BATCH_SIZE"
#: onnxruntime intra-op threads (default: the cores this process may use).
ENV_THREADS = "BERG_ONNX_THREADS"

#: Images per onnxruntime call. Batches of 4-8 ran 10-20% faster than 16 on a
#: 2-core machine and keep the readout's (batch, 768, nv) activation small.
DEFAULT_BATCH_SIZE = 8

#: Side of the square image the encoder takes.
INPUT_SIZE = 227


def env_str(name: str) -> str | None:
    """An environment variable, with empty strings treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or None


def available_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)
