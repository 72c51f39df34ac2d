"""python -m benchmarks.ray_grid: the ray engine against the local engine on the same grid.

Measures, on one machine, in one run (the machine may be shared: compare the
ratios, not the absolute figures):
- fixed start-up costs: ``ray start --head`` until a driver connects; a local
  Ray started and stopped by the engine itself (no address); and a one-chunk
  grid on the running cluster against the same grid on the local engine (actor
  start, session loading, pipeline start);
- throughput: the same grid of N images x M models into a fresh store, by the
  local engine and by the ray engine on the running cluster (connection
  included), alternating, best of ``--repeats``; and the ray engine's
  steady-state rate, (N - one chunk) x M over the difference of the two walls.

Ray listens on every interface, so this runs in a private network namespace
(loopback only); run as root, it re-executes itself under ``unshare -n``.

    python -m benchmarks.ray_grid --export EXPORT_DIR --rois V1 FFA-1 lateral --images 96
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _reexec_in_namespace() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root (for unshare -n), or inside a loopback-only network namespace")
    inner = shlex.join([sys.executable, "-m", "benchmarks.ray_grid", *sys.argv[1:]])
    os.execvp("unshare", ["unshare", "-n", "bash", "-c", f"ip link set lo up && exec {inner}"])


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


class _CpuMeter:
    """CPU seconds of this process plus every process of session ``sid`` over a run.

    Wall time misleads on a shared machine: with autogroup scheduling each
    session gets its own share of the CPUs, so a cluster in a session of its own
    gets more of a contended machine than one process does. CPU time is what the
    work cost. Cluster processes come and go (actors end with each run), so a
    thread samples them every 0.1 s and keeps each one's last reading; a process
    that ends loses at most its last 0.1 s.
    """

    def __init__(self, sid: int | None) -> None:
        self.sid, self.tick = sid, os.sysconf("SC_CLK_TCK")
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()

    def _sample(self) -> None:
        for pid in _session_pids(self.sid) if self.sid is not None else []:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
            self.first.setdefault(pid, cpu)
            self.last[pid] = cpu

    def __enter__(self) -> _CpuMeter:
        self._sample()
        self.first = dict(self.last)
        self.t0 = sum(os.times()[:2])
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            before = set(self.last)
            self._sample()
            for pid in set(self.last) - before:
                self.first[pid] = 0.0

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        cluster = sum(self.last[p] - self.first.get(p, 0.0) for p in self.last)
        self.seconds = sum(os.times()[:2]) - self.t0 + cluster


def _start_head(base: Path, cpus: int) -> tuple[subprocess.Popen, str, float]:
    """A head node in its own session; (process, address, seconds until a driver connected)."""
    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block"]
        + ["--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={base / 'head'}"]
        + [f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    while True:
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            break
        except ConnectionError:
            if head.poll() is not None or time.perf_counter() - t > 180:
                raise
            time.sleep(0.2)
    ray.shutdown()
    return head, address, time.perf_counter() - t


def _stop_head(head: subprocess.Popen) -> None:
    for _ in range(50):
        pids = _session_pids(head.pid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    head.wait(timeout=30)


def _grid(
    export_dir: Path, rois: list[str], images, chunk: int, engine, work: Path, sid: int
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and the cluster) of one grid run."""
    from berg_onnx import BERG

    store = Path(tempfile.mkdtemp(dir=work)) / "grid.zarr"
    with _CpuMeter(sid) as cpu:
        t = time.perf_counter()
        report = BERG(berg_dir=export_dir).run(
            images, subjects=[1], rois=rois, store=store, chunk_size=chunk, show_progress=False,
            engine=engine,
        )  # fmt: skip
        wall = time.perf_counter() - t
    assert report.complete, report
    shutil.rmtree(store.parent)
    return wall, cpu.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=REPO / ".cache" / "benchmarks" / "export")
    parser.add_argument("--rois", nargs="+", default=["V1", "FFA-1", "lateral"])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=None, help="the cluster's CPUs (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args()
    if not _only_loopback():
        _reexec_in_namespace()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on the way out
    sys.path.insert(0, str(REPO))
    from berg_onnx.constants import available_cores
    from berg_onnx.engines import RayOptions
    from berg_onnx.engines.ray import ray_connection
    from export.samples import photographs

    cpus = args.cpus or available_cores()
    base = Path(tempfile.mkdtemp(prefix="berg-ray-bench."))
    os.environ.update(RAY_AUTH_MODE="disabled", HOME=str(base), RAY_TMPDIR=str(base / "tmp"))
    os.environ.pop("RAY_ADDRESS", None)
    (base / "tmp").mkdir()
    images = photographs(256, args.images)
    one_chunk = images[: args.chunk_size]
    m = len(args.rois)
    res: dict = {"images": args.images, "models": m, "chunk_size": args.chunk_size, "cpus": cpus}
    try:
        t = time.perf_counter()
        with ray_connection(None):  # what --engine ray does without an address
            pass
        res["local_ray_start_stop_s"] = time.perf_counter() - t
        head, address, res["cluster_start_s"] = _start_head(base, cpus)
        engine = RayOptions(address=address)
        try:
            grid = (args.export, args.rois)
            _grid(*grid, one_chunk, args.chunk_size, "local", base, None)  # warm-up
            runs: dict[str, list[tuple[float, float]]] = {
                k: [] for k in ("local", "ray", "local1", "ray1")
            }
            for _ in range(args.repeats):
                for name, data, eng in (
                    ("local", images, "local"),
                    ("ray", images, engine),
                    ("local1", one_chunk, "local"),
                    ("ray1", one_chunk, engine),
                ):
                    sid = None if eng == "local" else head.pid  # local: this process only
                    runs[name].append(_grid(*grid, data, args.chunk_size, eng, base, sid))
                    wall, cpu = runs[name][-1]
                    print(f"{name}: {wall:.2f} s wall, {cpu:.2f} CPU s", flush=True)
        finally:
            _stop_head(head)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    res["runs_wall_cpu_s"] = runs
    n, c = args.images, args.chunk_size
    for unit, i in (("wall", 0), ("cpu", 1)):
        best = {k: min(r[i] for r in v) for k, v in runs.items()}
        res[f"{unit}_local_rate"] = n * m / best["local"]
        res[f"{unit}_ray_rate"] = n * m / best["ray"]
        res[f"{unit}_ray_vs_local"] = best["local"] / best["ray"]
        res[f"{unit}_local_steady_rate"] = (n - c) * m / (best["local"] - best["local1"])
        res[f"{unit}_ray_steady_rate"] = (n - c) * m / (best["ray"] - best["ray1"])
        res[f"{unit}_ray_fixed_s"] = best["ray1"] - best["local1"]
    print(report(res))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")


def report(r: dict) -> str:
    lines = [
        f"ray engine vs local engine: {r['images']} images x {r['models']} models, "
        f"chunks of {r['chunk_size']}, {r['cpus']} CPUs (best of the repeats)",
        f"  fixed: ray start --head {r['cluster_start_s']:.1f} s wall; a local Ray started "
        f"and stopped by the engine {r['local_ray_start_stop_s']:.1f} s wall",
    ]
    for unit, per in (("wall", "wall s"), ("cpu", "CPU s")):
        lines += [
            f"  per {per}: local {r[unit + '_local_rate']:.1f} images x models "
            f"(steady {r[unit + '_local_steady_rate']:.1f}); ray {r[unit + '_ray_rate']:.1f} "
            f"= {r[unit + '_ray_vs_local']:.2f}x local (steady {r[unit + '_ray_steady_rate']:.1f}"
            f" = {r[unit + '_ray_steady_rate'] / r[unit + '_local_steady_rate']:.2f}x); "
            f"one-chunk grid {r[unit + '_ray_fixed_s']:+.1f} {per} on ray"
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
