"""How much memory one result may take: the budget encode() checks before any work.

An (N, nv) float32 output grows with the number of images; 10^9 tiny images
would need hundreds of GB. The budget is ``$BERG_ONNX_MAX_OUTPUT_BYTES`` if
set, else half of the memory available now (Linux ``MemAvailable``, else the
machine's physical memory, else 8 GB).
"""

from __future__ import annotations

import os

from berg_onnx.constants import ENV_MAX_OUTPUT_BYTES, env_positive_int
from berg_onnx.errors import ResourceError

_FALLBACK = 8 << 30


def available_bytes() -> int:
    """Memory available to this process now (an estimate)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _FALLBACK


def output_budget() -> int:
    return env_positive_int(ENV_MAX_OUTPUT_BYTES) or available_bytes() // 2


def check_output_size(n: int, nv: int, what: str = "the responses") -> None:
    """Refuse an (n, nv) float32 result beyond the budget, before any work, saying why."""
    need = n * nv * 4
    budget = output_budget()
    if need > budget:
        raise ResourceError(
            f"{what} of {n} images x {nv} voxels need {need / 2**30:.1f} GiB (float32), more "
            f"than the {budget / 2**30:.1f} GiB budget (half of the memory available; set "
            f"{ENV_MAX_OUTPUT_BYTES} to change it). Encode the images in parts, or use "
            "`berg-onnx run`, which writes a Zarr store chunk by chunk."
        )
