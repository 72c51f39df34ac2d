"""Cold start, broken down: a fresh process that imports berg_onnx, loads V1 from a local
export and encodes one image file.

    python -m benchmarks.coldstart EXPORT_DIR IMAGE [--repeats 9]

Each repeat is a new interpreter (``python -X importtime`` is not used: it slows imports).
Phases: ``numpy`` (import numpy), ``onnxruntime`` (import onnxruntime), ``berg_onnx``
(import berg_onnx on top of both), ``verify`` (BERG, manifest, sha256 of the graph),
``session`` (get_encoding_model: the onnxruntime session), ``first_encode`` (Pillow
import, decode, exact resize, first run), ``in_process`` (their sum) and ``wall`` (spawn
to exit, measured by the parent). The machine may be shared: min and median
of the repeats are reported, with the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = (
    "numpy",
    "onnxruntime",
    "berg_onnx",
    "verify",
    "session",
    "first_encode",
    "in_process",
    "wall",
)

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import onnxruntime
t2 = time.perf_counter()
import berg_onnx
t3 = time.perf_counter()
lazy = [m for m in ("PIL", "tqdm", "huggingface_hub") if m in sys.modules]
berg = berg_onnx.BERG(berg_dir=sys.argv[1])
berg.store.fetch(berg.store.manifest().get("fmri-nsd-fwrf", 1, "V1").onnx)  # sha256 check
tv = time.perf_counter()
model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
t4 = time.perf_counter()
r = berg.encode(model, [sys.argv[2]], show_progress=False)
t5 = time.perf_counter()
assert r.shape[0] == 1
print(json.dumps({"numpy": t1 - t0, "onnxruntime": t2 - t1, "berg_onnx": t3 - t2,
                  "verify": tv - t3, "session": t4 - tv, "first_encode": t5 - t4,
                  "in_process": t5 - t0,
                  "imported_by_berg_onnx": lazy,
                  "all_core_session_made": model._all_core_session is not None}))
"""


def _byte_compile() -> None:
    """Write berg_onnx's .pyc files first, as pip does when it installs the wheel: with
    PYTHONDONTWRITEBYTECODE set (as on the CI machines), a checkout would otherwise be
    compiled from source in every process (~40-60 ms here), which no installed user pays."""
    import compileall

    import berg_onnx

    compileall.compile_dir(Path(berg_onnx.__file__).parent, quiet=1)


def measure(export_dir: str | Path, image: str | Path, repeats: int = 9) -> dict:
    """Min and median of each phase over ``repeats`` fresh processes."""
    _byte_compile()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(export_dir), str(image)],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - start
        runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall})
    summary = {
        phase: {
            "min_s": min(r[phase] for r in runs),
            "median_s": statistics.median(r[phase] for r in runs),
        }
        for phase in PHASES
    }
    summary["repeats"] = repeats
    summary["load_average_1min"] = os.getloadavg()[0]
    summary["imported_by_berg_onnx"] = runs[-1]["imported_by_berg_onnx"]
    summary["all_core_session_made"] = runs[-1]["all_core_session_made"]
    return summary


def report(summary: dict) -> str:
    cells = ", ".join(
        f"{p} {summary[p]['min_s'] * 1000:.0f}/{summary[p]['median_s'] * 1000:.0f}" for p in PHASES
    )
    return (
        f"cold start breakdown, ms min/median of {summary['repeats']} fresh processes "
        f"(load average {summary['load_average_1min']:.1f}): {cells}; "
        f"import berg_onnx pulled in: {', '.join(summary['imported_by_berg_onnx']) or 'none'} "
        "of PIL/tqdm/huggingface_hub; second (all-core) session made: "
        f"{summary['all_core_session_made']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__)
    parser.add_argument("export_dir")
    parser.add_argument("image")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    print(report(measure(args.export_dir, args.image, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
