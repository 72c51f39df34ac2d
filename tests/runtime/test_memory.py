"""Peak memory does not grow with the number of images beyond input + output.

Benchmark-style: each N is encoded in a fresh process and its whole-process
peak RSS (VmHWM) is compared; the bound is generous, but encoding all images
in one go (a float32 copy of every resized image) would exceed it several times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import json, sys
import numpy as np
from berg_onnx import BERG
n = int(sys.argv[2])
images = np.random.default_rng(0).integers(0, 256, (n, 3, 256, 256), dtype=np.uint8)
berg = BERG(berg_dir=sys.argv[1])
model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "lateral"}, device="cpu")
out = berg.encode(model, images, show_progress=False)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_mb": hwm / 1024, "input_mb": images.nbytes / 2**20,
                  "output_mb": out.nbytes / 2**20}))
"""


def _peak(export_dir: Path, n: int) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(export_dir), str(n)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_is_bounded_as_n_grows(export_dir):
    small, large = _peak(export_dir, 40), _peak(export_dir, 400)
    data_growth = (large["input_mb"] - small["input_mb"]) + (
        large["output_mb"] - small["output_mb"]
    )
    growth = large["peak_mb"] - small["peak_mb"]
    # unchunked preprocessing alone would add 4 x 227^2/256^2 x input = ~3.1 x the input growth
    assert growth < data_growth + 40, (small, large)
