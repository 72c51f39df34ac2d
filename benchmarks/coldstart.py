"""Cold start, broken down: a fresh process that imports berg_onnx, loads V1 from a local
export and encodes one image file.

    python -m benchmarks.coldstart EXPORT_DIR IMAGE [--repeats 10]

Each repeat is a new interpreter, started the way a user's script starts:
``import berg_onnx`` first (it imports numpy and onnxruntime). Phases:
``import`` (import berg_onnx, numpy and onnxruntime included), ``verify`` (BERG,
manifest, the model file's check: a sha256, or the user cache's record of an
earlier one, see berg_onnx/utils/verified.py), ``session`` (get_encoding_model:
the onnxruntime session, from the graph onnxruntime optimised for this CPU at an
earlier start when the user cache holds it, see berg_onnx/utils/optimized.py;
``BERG_ONNX_SESSION_CACHE=off`` measures without), ``first_encode`` (Pillow
import, decode, exact resize, first run), ``in_process`` (their sum), ``wall``
(spawn to exit, measured by the parent: with the interpreter's own start and
exit) and ``cpu`` (user + system time of the whole child process, from its
rusage: what the process itself used, which a shared machine's load inflates far
less than wall time).

One process runs first and is not counted: it leaves the page cache warm, and the
model file's verification record and optimised graph in the user cache, as any
earlier start has. Three more processes import numpy, onnxruntime and berg_onnx
one at a time to show their shares (``import_shares``). The machine may be
shared: min and median of the repeats are reported, with the load average at the
start.
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

#: The cold-start goal (issue 24): median wall of a fresh process, quiet machine.
GOAL_S = 0.2
PHASES = ("import", "verify", "session", "first_encode", "in_process", "wall", "cpu")
SHARES = ("numpy", "onnxruntime", "berg_onnx")

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import berg_onnx
t1 = time.perf_counter()
lazy = [m for m in ("PIL", "tqdm", "huggingface_hub", "torch", "zipfile") if m in sys.modules]
def rchar():  # bytes this process has read (Linux); a hash reads the whole file
    try:
        return int(open("/proc/self/io").read().split("rchar:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None
berg = berg_onnx.BERG(berg_dir=sys.argv[1])
entry = berg.store.manifest().get("fmri-nsd-fwrf", 1, "V1").onnx
r0 = rchar()
berg.store.fetch(entry)
tv = time.perf_counter()
r1 = rchar()
hashed = None if r0 is None else r1 - r0 >= entry.size
model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
t4 = time.perf_counter()
r = berg.encode(model, [sys.argv[2]], show_progress=False)
t5 = time.perf_counter()
assert r.shape[0] == 1
print(json.dumps({"import": t1 - t0, "verify": tv - t1, "session": t4 - tv,
                  "first_encode": t5 - t4, "in_process": t5 - t0,
                  "imported_by_berg_onnx": lazy, "hashed": hashed,
                  "all_core_session_made": model._all_core_session is not None,
                  "optimized_graph": model.session._model_path != str(model.onnx_path)}))
"""

_SHARES_CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import onnxruntime
t2 = time.perf_counter()
import berg_onnx
t3 = time.perf_counter()
print(json.dumps({"numpy": t1 - t0, "onnxruntime": t2 - t1, "berg_onnx": t3 - t2}))
"""


def _byte_compile() -> None:
    """Write berg_onnx's .pyc files first, as pip does when it installs the wheel: with
    PYTHONDONTWRITEBYTECODE set (as on the CI machines), a checkout would otherwise be
    compiled from source in every process (~40-60 ms here), which no installed user pays."""
    import compileall

    import berg_onnx

    compileall.compile_dir(Path(berg_onnx.__file__).parent, quiet=1)


def _run(args: list[str]) -> tuple[dict, float, float]:
    """(the child's JSON, wall seconds spawn to exit, CPU seconds of the whole child)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child is reaped: counted
    if done.returncode != 0:
        raise RuntimeError(f"cold-start child failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(done.stdout.strip().splitlines()[-1]), wall, cpu


def measure(export_dir: str | Path, image: str | Path, repeats: int = 10) -> dict:
    """Min and median of each phase over ``repeats`` fresh processes (after one warm-up)."""
    _byte_compile()
    cmd = [sys.executable, "-c", _CHILD, str(export_dir), str(image)]
    warmup, _, _ = _run(cmd)
    runs = []
    for _ in range(repeats):
        result, wall, cpu = _run(cmd)
        runs.append({**result, "wall": wall, "cpu": cpu})
    shares = [_run([sys.executable, "-c", _SHARES_CHILD])[0] for _ in range(3)]
    summary = {
        phase: {
            "min_s": min(r[phase] for r in runs),
            "median_s": statistics.median(r[phase] for r in runs),
        }
        for phase in PHASES
    }
    summary["import_shares"] = {
        k: {"median_s": statistics.median(s[k] for s in shares)} for k in SHARES
    }
    summary["repeats"] = repeats
    summary["load_average_1min"] = os.getloadavg()[0]
    summary["imported_by_berg_onnx"] = runs[-1]["imported_by_berg_onnx"]
    summary["hashed_at_start"] = sum(bool(r["hashed"]) for r in runs)
    summary["warmup_hashed"] = bool(warmup["hashed"])
    summary["all_core_session_made"] = runs[-1]["all_core_session_made"]
    summary["optimized_graph_used"] = sum(bool(r["optimized_graph"]) for r in runs)
    return summary


def report(summary: dict) -> str:
    cells = ", ".join(
        f"{p} {summary[p]['min_s'] * 1000:.0f}/{summary[p]['median_s'] * 1000:.0f}" for p in PHASES
    )
    shares = summary.get("import_shares", {})
    share_text = ", ".join(f"{k} {v['median_s'] * 1000:.0f}" for k, v in shares.items())
    return (
        f"cold start breakdown, ms min/median of {summary['repeats']} fresh processes "
        f"(load average {summary['load_average_1min']:.1f}): {cells}; "
        f"import shares (median of 3, imported one at a time): {share_text}; "
        f"model file hashed in {summary.get('hashed_at_start', '?')} of them "
        "(else its verification was remembered); "
        f"imported at start: {', '.join(summary['imported_by_berg_onnx']) or 'none'} "
        "of PIL/tqdm/huggingface_hub/torch/zipfile; session from the cached optimised "
        f"graph in {summary.get('optimized_graph_used', '?')} of them; second (all-core) "
        f"session made: {summary['all_core_session_made']}; goal: median wall <= "
        f"{GOAL_S * 1000:.0f} ms on a quiet machine: "
        f"{'met' if summary['wall']['median_s'] <= GOAL_S else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__)
    parser.add_argument("export_dir")
    parser.add_argument("image")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    summary = measure(args.export_dir, args.image, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
