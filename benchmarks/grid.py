"""python -m benchmarks.grid: an experiment grid (berg_onnx.experiment) against encode per model.

Measures, on the same images (an in-memory (N, 3, 256, 256) uint8 array):
- the grid: ``BERG.run`` over M models into a fresh Zarr store (model loading,
  preprocessing once per image, writes and completion records included);
- the sum over the M models of get_encoding_model + encode (each resizes every image);
- the grid's peak RSS, in a fresh child process (VmHWM).
Both alternate (order swapped each repeat) and the best of ``--repeats`` each is
kept, as wall time and as this process's CPU time (all threads): on a shared
machine the wall clock mostly measures the neighbours, the CPU time much less.

Standalone:  python -m benchmarks.grid --export EXPORT_DIR --rois all --images 2000
From the suite: python -m benchmarks runs ``grid_benchmark`` on its three ROIs
(skip with --skip grid).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "fmri-nsd-fwrf"


def _images(n: int):
    from export.samples import photographs

    return photographs(256, n)


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _grid_once(export_dir: Path, rois: list[str], images, workdir: Path) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one grid into a fresh store."""
    from berg_onnx import BERG

    store = Path(tempfile.mkdtemp(dir=workdir)) / "grid.zarr"
    t, c = time.perf_counter(), time.process_time()
    report = BERG(berg_dir=export_dir).run(
        images, subjects=[1], rois=rois, store=store, show_progress=False, device="cpu"
    )
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert report.complete, report
    shutil.rmtree(store.parent)
    return wall, cpu


def _encode_sum_once(export_dir: Path, rois: list[str], images) -> tuple[float, float]:
    """(wall s, CPU s) of get_encoding_model + encode for each model in turn."""
    from berg_onnx import BERG

    berg = BERG(berg_dir=export_dir)
    t, c = time.perf_counter(), time.process_time()
    for roi in rois:
        model = berg.get_encoding_model(MODEL, 1, {"roi": roi}, device="cpu")
        berg.encode(model, images, show_progress=False)
        berg._models.clear()  # one model at a time, as the grid holds them
    return time.perf_counter() - t, time.process_time() - c


def rss_child(export_dir: str, rois: list[str], folder: str) -> dict:
    """Run in a fresh process: the grid alone over a folder of image files, then its peak RSS.

    Files, as users run it: the RSS then holds no input array, only the grid.
    """
    workdir = Path(tempfile.mkdtemp(prefix="berg-grid-rss."))
    try:
        wall, _ = _grid_once(Path(export_dir), rois, folder, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"peak_rss_mb": _rss_mb(), "wall_s": wall}


def grid_rss(export_dir: Path, rois: list[str], n: int) -> dict:
    """Peak RSS of a fresh process running the grid over n JPEG files (written here)."""
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="berg-grid-images."))
    try:
        for i, img in enumerate(_images(n)):
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i:06d}.jpg", quality=95)
        job = {"export_dir": str(export_dir), "rois": rois, "folder": str(folder)}
        cmd = [sys.executable, "-m", "benchmarks.grid", "--child-rss", json.dumps(job)]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if run.returncode != 0:
        raise RuntimeError(f"grid RSS child failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def grid_benchmark(
    export_dir: Path, rois: list[str], n: int, repeats: int = 2, rss_n: int | None = None
) -> dict:
    """Grid vs per-model encode throughput on n images, and the grid's peak RSS."""
    from berg_onnx.source.manifest import Manifest

    manifest = Manifest.load(export_dir / "manifest.json")
    voxels = {r: manifest.get(MODEL, 1, r).nv for r in rois}
    images = _images(n)
    workdir = Path(tempfile.mkdtemp(prefix="berg-grid-bench."))
    import zarr  # noqa: F401 - imported once per process (~0.3 s): not the grid's cost

    runs: dict[str, list[tuple[float, float]]] = {"grid": [], "encode": []}
    try:
        for i in range(repeats):
            print(f"grid benchmark {len(rois)} models x {n} images, repeat {i + 1} ...", flush=True)
            for name in ("grid", "encode") if i % 2 == 0 else ("encode", "grid"):
                if name == "grid":
                    runs[name].append(_grid_once(export_dir, rois, images, workdir))
                else:
                    runs[name].append(_encode_sum_once(export_dir, rois, images))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    cells = n * len(rois)
    result = {
        "n_images": n,
        "rois": voxels,
        "runs_wall_cpu_s": runs,
        "grid_wall_s": best["grid"][0],
        "grid_cpu_s": best["grid"][1],
        "encode_sum_wall_s": best["encode"][0],
        "encode_sum_cpu_s": best["encode"][1],
        "grid_image_models_per_s": cells / best["grid"][0],
        "encode_sum_image_models_per_s": cells / best["encode"][0],
        "grid_speedup_vs_encode_sum_wall": best["encode"][0] / best["grid"][0],
        "grid_speedup_vs_encode_sum_cpu": best["encode"][1] / best["grid"][1],
    }
    print(
        f"grid peak RSS ({len(rois)} models x {rss_n or n} images, fresh process) ...", flush=True
    )
    result["rss"] = {"n_images": rss_n or n, **grid_rss(export_dir, rois, rss_n or n)}
    return result


def report(r: dict) -> str:
    rss, runs = r["rss"], r["runs_wall_cpu_s"]

    def listed(name: str) -> str:
        return ", ".join(f"{w:.1f}/{c:.1f}" for w, c in runs[name])

    return "\n".join(
        [
            f"experiment grid: {len(r['rois'])} models (sub-01 "
            + ", ".join(f"{k} {v}" for k, v in r["rois"].items())
            + f" voxels) x {r['n_images']} images, CPU",
            "| | best wall s | best CPU s | image x models / s (wall) | runs (wall/CPU s) |",
            "|---|---|---|---|---|",
            f"| grid (BERG.run into Zarr) | {r['grid_wall_s']:.1f} | {r['grid_cpu_s']:.1f} | "
            f"{r['grid_image_models_per_s']:.1f} | {listed('grid')} |",
            f"| sum of per-model encode | {r['encode_sum_wall_s']:.1f} | "
            f"{r['encode_sum_cpu_s']:.1f} | {r['encode_sum_image_models_per_s']:.1f} | "
            f"{listed('encode')} |",
            f"grid speed vs the encode sum: {r['grid_speedup_vs_encode_sum_wall']:.3f}x wall, "
            f"{r['grid_speedup_vs_encode_sum_cpu']:.3f}x CPU; grid peak RSS "
            f"{rss['peak_rss_mb']:.0f} MB for {len(r['rois'])} models x {rss['n_images']} "
            f"images (JPEG files; wall {rss['wall_s']:.0f} s)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.grid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--export", type=Path, help="export dir (default: the suite's)")
    parser.add_argument(
        "--rois", nargs="+", default=["FFA-1", "V1", "lateral"], help="ROIs of subject 1, or all"
    )
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rss-images", type=int, default=None, help="default: --images")
    parser.add_argument("--rss-only", action="store_true", help="only the peak RSS child")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    parser.add_argument("--child-rss", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss:
        print(json.dumps(rss_child(**json.loads(args.child_rss))))
        return 0
    export_dir = args.export or REPO / ".cache" / "benchmarks" / "export"
    rois = args.rois
    if rois == ["all"]:
        from berg_onnx.source.catalog import load_catalog
        from berg_onnx.source.manifest import Manifest

        manifest = Manifest.load(export_dir / "manifest.json")
        spec = load_catalog().model(MODEL)
        rois = [r for r in spec.roi_names if f"{MODEL}/sub-01/{r}" in manifest.models]
    if args.rss_only:
        result = {"rss": grid_rss(export_dir, rois, args.rss_images or args.images)}
        print(json.dumps(result, indent=2))
    else:
        result = grid_benchmark(export_dir, rois, args.images, args.repeats, args.rss_images)
        print("\n" + report(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
