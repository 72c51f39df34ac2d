"""How much memory one result may take: the budget encode() checks before any work.

An (N, nv) float32 output grows with the number of images; 10^9 tiny images
would need hundreds of GB. The budget is ``$BERG_ONNX_MAX_OUTPUT_BYTES`` if
set, else half of this machine's memory (its physical memory, or the cgroup's
limit where that is lower; 8 GB where neither can be read). It depends on the
machine, not on what else runs now, so the same call gets the same answer.
"""

from __future__ import annotations

import os

from berg_onnx.constants import ENV_MAX_OUTPUT_BYTES, env_positive_int
from berg_onnx.errors import ResourceError

_FALLBACK = 16 << 30
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_bytes() -> int:
    """This process's memory ceiling: physical memory, or a lower cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = _FALLBACK
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def output_budget() -> int:
    return env_positive_int(ENV_MAX_OUTPUT_BYTES) or machine_bytes() // 2


def check_output_size(n: int, nv: int, what: str = "the responses") -> None:
    """Refuse an (n, nv) float32 result beyond the budget, before any work, saying why."""
    need = n * nv * 4
    budget = output_budget()
    if need > budget:
        raise ResourceError(
            f"{what} of {n} images x {nv} voxels need {need / 2**30:.1f} GiB (float32), more "
            f"than the {budget / 2**30:.1f} GiB budget (half of this machine's memory; set "
            f"{ENV_MAX_OUTPUT_BYTES} to change it). Encode the images in parts, or use "
            "`berg-onnx run`, which writes a Zarr store chunk by chunk."
        )
