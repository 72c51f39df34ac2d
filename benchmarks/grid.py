"""python -m benchmarks.grid: an experiment grid (berg_onnx.experiment) against encode per model.

Measures, on the same images (an in-memory (N, 3, 256, 256) uint8 array):
- the grid: ``BERG.run`` over M models into a fresh Zarr store (model loading,
  preprocessing once per image, writes and completion records included);
- the sum over the M models of get_encoding_model + encode (each resizes every image);
- the grid's peak RSS, in a fresh child process (VmHWM).
Both timings alternate and the best of ``--repeats`` each is kept (the machine
may be shared: compare the ratio, measured in one run).

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


def _grid_once(export_dir: Path, rois: list[str], images, workdir: Path) -> float:
    from berg_onnx import BERG

    store = Path(tempfile.mkdtemp(dir=workdir)) / "grid.zarr"
    t = time.perf_counter()
    report = BERG(berg_dir=export_dir).run(
        images, subjects=[1], rois=rois, store=store, show_progress=False
    )
    wall = time.perf_counter() - t
    assert report.complete, report
    shutil.rmtree(store.parent)
    return wall


def _encode_sum_once(export_dir: Path, rois: list[str], images) -> tuple[float, dict]:
    from berg_onnx import BERG

    berg = BERG(berg_dir=export_dir)
    per_model = {}
    for roi in rois:
        t = time.perf_counter()
        model = berg.get_encoding_model(MODEL, 1, {"roi": roi}, device="cpu")
        berg.encode(model, images, show_progress=False)
        per_model[roi] = time.perf_counter() - t
        berg._models.clear()  # one model at a time, as the grid holds them
    return sum(per_model.values()), per_model


def rss_child(export_dir: str, rois: list[str], folder: str) -> dict:
    """Run in a fresh process: the grid alone over a folder of image files, then its peak RSS.

    Files, as users run it: the RSS then holds no input array, only the grid.
    """
    workdir = Path(tempfile.mkdtemp(prefix="berg-grid-rss."))
    try:
        wall = _grid_once(Path(export_dir), rois, folder, workdir)
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
    from berg_onnx.manifest import Manifest

    manifest = Manifest.load(export_dir / "manifest.json")
    voxels = {r: manifest.get(MODEL, 1, r).nv for r in rois}
    images = _images(n)
    workdir = Path(tempfile.mkdtemp(prefix="berg-grid-bench."))
    grid_walls, encode_walls, per_model = [], [], {}
    try:
        for i in range(repeats):
            print(f"grid benchmark {len(rois)} models x {n} images, repeat {i + 1} ...", flush=True)
            grid_walls.append(_grid_once(export_dir, rois, images, workdir))
            total, per = _encode_sum_once(export_dir, rois, images)
            encode_walls.append(total)
            if total == min(encode_walls):
                per_model = per
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    grid, encode = min(grid_walls), min(encode_walls)
    cells = n * len(rois)
    result = {
        "n_images": n,
        "rois": voxels,
        "grid_wall_s": grid,
        "encode_sum_wall_s": encode,
        "grid_walls_s": grid_walls,
        "encode_sum_walls_s": encode_walls,
        "encode_per_model_s": per_model,
        "grid_image_models_per_s": cells / grid,
        "encode_sum_image_models_per_s": cells / encode,
        "grid_speedup_vs_encode_sum": encode / grid,
    }
    print(
        f"grid peak RSS ({len(rois)} models x {rss_n or n} images, fresh process) ...", flush=True
    )
    result["rss"] = {"n_images": rss_n or n, **grid_rss(export_dir, rois, rss_n or n)}
    return result


def report(r: dict) -> str:
    rss = r["rss"]
    return "\n".join(
        [
            f"experiment grid: {len(r['rois'])} models (sub-01 "
            + ", ".join(f"{k} {v}" for k, v in r["rois"].items())
            + f" voxels) x {r['n_images']} images",
            "| | wall s (best of runs) | image x models / s |",
            "|---|---|---|",
            f"| grid (BERG.run into Zarr) | {r['grid_wall_s']:.1f} "
            f"({', '.join(f'{w:.1f}' for w in r['grid_walls_s'])}) | "
            f"{r['grid_image_models_per_s']:.1f} |",
            f"| sum of per-model encode | {r['encode_sum_wall_s']:.1f} "
            f"({', '.join(f'{w:.1f}' for w in r['encode_sum_walls_s'])}) | "
            f"{r['encode_sum_image_models_per_s']:.1f} |",
            f"grid / encode-sum speed: {r['grid_speedup_vs_encode_sum']:.3f}x; grid peak RSS "
            f"{rss['peak_rss_mb']:.0f} MB for {len(r['rois'])} models x {rss['n_images']} images "
            f"(JPEG files; wall {rss['wall_s']:.0f} s)",
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
        from berg_onnx.catalog import load_catalog
        from berg_onnx.manifest import Manifest

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
