"""python -m benchmarks [--quick]: throughput, latency, memory, cold start, install size.

berg_onnx (onnxruntime, CPU) against the export's PyTorch reference model
(eager, same thread count) on the same natural images, in one run, with the
machine's own sgemm peak as the yardstick (roofline = peak / FLOPs per image).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "fmri-nsd-fwrf"
ROIS = {"FFA-1": (484, 1), "V1": (1350, 1), "lateral": (7799, 2)}
#: Batch at which eager torch is also timed: it amortises its per-call overhead there.
TORCH_BATCH = 8
ENCODER_GFLOP = 1.41  # per image, spec
ORIGINAL = {  # the original BERG code, spec "Reference behaviour" (images/s, peak RSS GB)
    "FFA-1": (38.7, 1.9),
    "V1": (13.6, 3.2),
    "lateral": (3.6, 7.2),
}


def gflop_per_image(nv: int, splits: int) -> float:
    return ENCODER_GFLOP * splits + 2 * nv * 1523 * 256 / 1e9


def child(name: str, env: dict | None = None, **kwargs) -> dict:
    """Run benchmarks.workers.<name>(**kwargs) in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.workers", name, json.dumps(kwargs)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def timed_child(name: str, repeats: int, **kwargs) -> tuple[float, dict]:
    """Best wall time of a whole child process (spawn to exit), and its own phase timings."""
    best, phases = float("inf"), {}
    for _ in range(repeats):
        t = time.perf_counter()
        result = child(name, **kwargs)
        wall = time.perf_counter() - t
        if wall < best:
            best, phases = wall, result
    return best, phases


def sgemm_peak() -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    return child("sgemm", env=env)


def machine_info(threads: int) -> dict:
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from berg_onnx.utils.cpu import current

    cpu_class, cpu_flags = current()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cpu_class": cpu_class,
        "cpu_flags": list(cpu_flags),
        "cores_usable": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        pass
    return info


def prepare(workdir: Path) -> tuple[Path, Path]:
    """Synthesize the benchmark's models (once) and export them in fp32 (skipped when up to date).

    The int8 tier is made separately, per ROI, by ``int8_tier``: a tier failing
    its check must not stop the run.
    """
    from berg_onnx.source.catalog import load_catalog
    from export import layout
    from export.convert import convert
    from export.synth import synthesize

    spec = load_catalog().model(MODEL)
    berg_dir, export_dir = workdir / "berg_dir", workdir / "export"
    missing = [
        r
        for r, (_, splits) in ROIS.items()
        if not all(p.is_file() for p in layout.checkpoint_paths(berg_dir, 1, r, splits))
    ]
    if missing:
        print(f"synthesizing {', '.join(missing)} (realistic voxel counts) ...", flush=True)
        synthesize(berg_dir, spec, [1], missing, None, 0, progress=False)
    print("exporting (skipped when up to date) ...", flush=True)
    convert(berg_dir, export_dir, spec, [1], list(ROIS), progress=False)
    return berg_dir, export_dir


def int8_tier(berg_dir: Path, export_dir: Path, roi: str, tolerance: float | None = None) -> dict:
    """Choose (or reuse) ROI's int8 tier; its status and figures. Never raises on a failed check.

    {"status": "ok", "scheme", "max_abs_diff" (vs PyTorch), "tolerance", ...};
    {"status": "absent", "max_abs_diff" (the closest candidate's figure against the
    check that failed), "tolerance", "error" (the manifest's reason)} when no scheme
    met the tolerance; {"status": "failed", "max_abs_diff": None, ...} when the
    export itself failed. The fp32 model stays usable either way.
    """
    from berg_onnx.source.catalog import load_catalog
    from berg_onnx.source.manifest import Manifest
    from export.convert import add_int8, as_tolerance, int8_current
    from export.onnx_export import ExportError

    catalog = load_catalog()
    tol = as_tolerance(tolerance)
    entry = Manifest.load(export_dir / catalog.manifest_name).get(MODEL, 1, roi)
    int8_file = entry.onnx_int8
    current = int8_current(entry, tol) and (
        int8_file is None or int8_file.problem(export_dir / int8_file.name) is None
    )
    if not current:
        print(f"int8 tier {roi}: choosing a scheme ({tol.describe()}) ...", flush=True)
        try:
            entry = add_int8(berg_dir, export_dir, catalog.model(MODEL), 1, roi, tol)
        except ExportError as e:
            print(f"int8 tier {roi}: FAILED: {e}", flush=True)
            return {
                "status": "failed",
                "max_abs_diff": None,
                "tolerance": tol.max_abs_vs_reference,
                "error": str(e),
            }
    selection = entry.int8_selection or {}
    if entry.onnx_int8 is None:
        print(f"int8 tier {roi}: absent: {entry.int8_absent_reason}", flush=True)
        trials = selection.get("trials", [])
        figures = [t["vs_reference"] for t in trials if t.get("vs_reference") is not None]
        return {
            "status": "absent",
            "max_abs_diff": min(figures) if figures else None,
            "tolerance": tol.max_abs_vs_reference,
            "error": entry.int8_absent_reason or "",
            "trials": trials,
        }
    return {
        "status": "ok",
        "scheme": (entry.int8_scheme or {}).get("name"),
        "max_abs_diff": entry.int8_max_abs_diff,
        "tolerance": tol.max_abs_vs_reference,
        "calibration_max_abs_vs_fp32": entry.int8_max_abs_vs_fp32,
        "export_speedup": entry.int8_speedup,
        "trials": selection.get("trials", []),
        "pair_bound": entry.int8_pair_bound,
        "verified_on": entry.int8_verified_on,
        "verified_classes": list(entry.int8_verified_classes),
    }


def rate(fn, n_images: int, min_time: float) -> float:
    """Images per second of fn() (which processes n_images), best of repeated runs."""
    fn()  # warm-up
    best, spent = float("inf"), 0.0
    while spent < min_time or best == float("inf"):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return n_images / best


def throughput(
    berg_dir: Path,
    export_dir: Path,
    threads: int,
    quick: bool,
    sgemm_samples: list[dict],
    tiers: dict[str, dict],
) -> dict:
    """Images/s per ROI; appends an sgemm measurement after each ROI to ``sgemm_samples``."""
    import torch

    from berg_onnx import BERG
    from export import layout
    from export.checkpoint import load_checkpoint
    from export.onnx_export import reference_preprocess
    from export.reference import build_model
    from export.samples import photographs

    torch.set_num_threads(threads)
    n = 24 if quick else 60
    min_time = 2.0 if quick else 6.0
    images = photographs(256, n)
    berg = BERG(berg_dir=export_dir, threads=threads)
    results = {}
    for roi, (nv, splits) in ROIS.items():
        print(f"throughput {roi} ...", flush=True)
        model = berg.get_encoding_model(MODEL, 1, {"roi": roi}, device="cpu")
        bs = model.batch_size
        e2e = rate(lambda m=model: berg.encode(m, images, show_progress=False), n, min_time)
        pre = np.concatenate([berg_preprocess(images[i : i + bs]) for i in range(0, n, bs)])

        def model_only(m=model, x=pre, bs=bs):  # encode()'s scheduling, resize excluded
            m.run_preprocessed(lambda a, b: x[a:b], len(x), batch_size=bs)

        only = rate(model_only, n, min_time)
        lat = []
        one = images[:1]
        berg.encode(model, one, show_progress=False)
        for _ in range(10 if quick else 30):
            t = time.perf_counter()
            berg.encode(model, one, batch_size=1, show_progress=False)
            lat.append(time.perf_counter() - t)

        int8 = dict(tiers[roi])
        if int8["status"] == "ok":
            try:
                int8.update(int8_figures(berg, model, images, n, min_time))
            except Exception as e:  # a tier that fails at run time is reported, not fatal
                int8.update(status="failed", error=f"{type(e).__name__}: {e}")

        cks = [load_checkpoint(p) for p in layout.checkpoint_paths(berg_dir, 1, roi, splits)]
        ref = build_model([(c.encoder, c.readout) for c in cks])

        def torch_batches(tbs, x=images, ref=ref):
            def run():
                with torch.no_grad():
                    for i in range(0, len(x), tbs):
                        ref(reference_preprocess(x[i : i + tbs]))

            return run

        def torch_original_loop(x=images, ref=ref):  # BERG's loop: resize all, batches of 100
            with torch.no_grad():
                xt = reference_preprocess(x)
                for i in range(0, len(xt), 100):
                    ref(xt[i : i + 100])

        # torch at berg's batch (1 on CPU) and at TORCH_BATCH, where eager torch
        # amortises its per-call overhead: the ratio is taken against its best.
        t_same = rate(torch_batches(bs), n, min_time / 2)
        t_big = rate(torch_batches(TORCH_BATCH), n, min_time / 2)
        t_orig = rate(torch_original_loop, n, min_time / 2)
        results[roi] = {
            "nv": nv,
            "splits": splits,
            "gflop_per_image": gflop_per_image(nv, splits),
            "batch": bs,
            "berg_e2e_images_per_s": e2e,
            "berg_model_only_images_per_s": only,
            "berg_batch1_ms": 1000 * statistics.median(lat),
            "torch_same_batch_images_per_s": t_same,
            f"torch_batch{TORCH_BATCH}_images_per_s": t_big,
            "torch_original_loop_images_per_s": t_orig,
            "int8": int8,
        }
        del ref, cks
        sgemm_samples.append(sgemm_peak())
    return results


def int8_figures(berg, model, images: np.ndarray, n: int, min_time: float) -> dict:
    """End-to-end images/s of the int8 tier, and its difference from fp32 on these images."""
    fast = berg.get_encoding_model(MODEL, 1, {"roi": model.roi}, device="cpu", precision="int8")
    e2e = rate(lambda m=fast: berg.encode(m, images, show_progress=False), n, min_time)
    y8 = berg.encode(fast, images, show_progress=False)
    y32 = berg.encode(model, images, show_progress=False)
    corr = [float(np.corrcoef(y32[:, j], y8[:, j])[0, 1]) for j in range(y32.shape[1])]
    return {
        "e2e_images_per_s": e2e,
        "max_abs_diff_vs_fp32": float(np.abs(y8 - y32).max()),
        "min_voxel_corr_vs_fp32": min(corr),
        "median_voxel_corr_vs_fp32": float(np.median(corr)),
    }


def best_torch(t: dict) -> float:
    return max(v for k, v in t.items() if k.startswith("torch_") and k.endswith("_images_per_s"))


def berg_preprocess(images: np.ndarray) -> np.ndarray:
    from berg_onnx.inputs.stimulus import as_stimulus

    return as_stimulus(images).chunk(0, len(images))


def memory(berg_dir: Path, export_dir: Path, n: int, quick: bool) -> dict:
    out = {}
    for roi, (_, splits) in ROIS.items():
        print(f"peak RSS {roi}, N={n} (fresh processes) ...", flush=True)
        berg = child("rss_berg", export_dir=str(export_dir), roi=roi, n=n, batch=None)
        torch_ = child(
            "rss_torch", berg_dir=str(berg_dir), roi=roi, n=n, batch=berg["batch"], splits=splits
        )
        out[roi] = {"n": n, "berg": berg, "torch_same_batch": torch_}
    return out


def cold_start(berg_dir: Path, export_dir: Path, repeats: int) -> dict:
    from export.samples import photo_paths

    image = str(photo_paths()[0])
    print("cold start (fresh processes) ...", flush=True)
    wall_b, phases_b = timed_child(
        "cold_berg", repeats, export_dir=str(export_dir), image_path=image
    )
    wall_t, phases_t = timed_child("cold_torch", repeats, berg_dir=str(berg_dir), image_path=image)
    from benchmarks.coldstart import measure  # breakdown, min/median

    breakdown = measure(export_dir, image, repeats=10)
    return {
        "berg": {"wall_s": wall_b, **phases_b},
        "torch": {"wall_s": wall_t, **phases_t},
        "breakdown": breakdown,
    }


def runtime_venv_size(workdir: Path) -> dict:
    """du of a fresh venv holding only the berg-onnx wheel and its dependencies."""
    venv = workdir / "runtime-venv"
    if not (venv / "bin" / "berg-onnx").exists():
        print("building the wheel and a fresh runtime venv ...", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        dist = workdir / "dist"
        shutil.rmtree(dist, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)],
            check=True,
            capture_output=True,
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        wheel = next(dist.glob("*.whl"))
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
            check=True,
            capture_output=True,
        )
    size = int(
        subprocess.run(["du", "-sk", str(venv)], capture_output=True, text=True).stdout.split()[0]
    )
    has_torch = (
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True
        ).returncode
        == 0
    )
    return {"runtime_venv_mb": size / 1024, "torch_importable": has_torch}


def int8_table(r: dict) -> list[str]:
    """The int8 tier's rows: the scheme chosen per model, or why there is none."""
    lines = [
        "opt-in int8 tier (readout GEMMs in int8, scheme chosen per model by measured "
        "error; --int8 at export, precision='int8'), CPU kernel class "
        f"{r['machine'].get('cpu_class', '?')}:",
        "| ROI | scheme (layer 0/1/2) | int8 e2e img/s | vs fp32 e2e "
        "| max abs vs reference (export check) | max abs vs fp32 "
        "| voxel corr vs fp32 (min / median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for roi, t in r["throughput"].items():
        q = t["int8"]
        if q["status"] != "ok" or "e2e_images_per_s" not in q:
            figure = "no figure" if q.get("max_abs_diff") is None else f"{q['max_abs_diff']:.3g}"
            word = "ABSENT" if q["status"] == "absent" else "FAILED"
            lines.append(
                f"| {roi} | {word}: {figure} > tolerance {q['tolerance']:g} "
                f"({q.get('error', '')[:160]}) | - | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {roi} | {q.get('scheme') or '?'} | {q['e2e_images_per_s']:.1f} | "
            f"{q['e2e_images_per_s'] / t['berg_e2e_images_per_s']:.2f}x | "
            f"{q['max_abs_diff']:.4f} (<= {q['tolerance']:g}) | "
            f"{q['max_abs_diff_vs_fp32']:.4f} | "
            f"{q['min_voxel_corr_vs_fp32']:.5f} / {q['median_voxel_corr_vs_fp32']:.5f} |"
        )
    return lines


def report(r: dict) -> str:
    peak = r["sgemm"]["gflops"]
    m = r["machine"]
    lines = [
        f"berg-onnx benchmark, {m['date']}, {m['cpu']}, {m['cores_usable']} cores, "
        f"onnxruntime {m['onnxruntime']}, torch {m.get('torch', '-')}",
        f"sgemm peak (numpy, {m['cores_usable']} threads): {peak:.0f} GFLOP/s, the highest of "
        + ", ".join(f"{g:.0f}" for g in r["sgemm"]["measured_gflops"])
        + " (measured before the throughput runs and after each ROI)",
        "",
        "| ROI (nv) | GFLOP/img | roofline img/s | berg e2e img/s (% roof) "
        "| berg model-only img/s (% roof) | berg batch-1 ms "
        f"| torch ref img/s (batch 1 / {TORCH_BATCH}) "
        "| torch original loop img/s | berg/best torch | original (spec) img/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for roi, t in r["throughput"].items():
        roof = peak / t["gflop_per_image"]
        lines.append(
            f"| {roi} ({t['nv']}) | {t['gflop_per_image']:.2f} | {roof:.0f} | "
            f"{t['berg_e2e_images_per_s']:.1f} ({100 * t['berg_e2e_images_per_s'] / roof:.0f}%) | "
            f"{t['berg_model_only_images_per_s']:.1f} "
            f"({100 * t['berg_model_only_images_per_s'] / roof:.0f}%) | "
            f"{t['berg_batch1_ms']:.1f} | {t['torch_same_batch_images_per_s']:.1f} / "
            f"{t[f'torch_batch{TORCH_BATCH}_images_per_s']:.1f} | "
            f"{t['torch_original_loop_images_per_s']:.1f} | "
            f"{t['berg_e2e_images_per_s'] / best_torch(t):.1f}x | "
            f"{ORIGINAL[roi][0]} |"
        )
    lines += ["", *int8_table(r)]
    if "memory" in r:
        lines += [
            "",
            "| ROI | N | berg peak RSS MB | torch ref peak RSS MB | original (spec, N=100) |",
            "|---|---|---|---|---|",
        ]
        for roi, mem in r["memory"].items():
            lines.append(
                f"| {roi} | {mem['n']} | {mem['berg']['peak_rss_mb']:.0f} | "
                f"{mem['torch_same_batch']['peak_rss_mb']:.0f} | {ORIGINAL[roi][1]} GB |"
            )
    if "cold_start" in r:
        b, t = r["cold_start"]["berg"], r["cold_start"]["torch"]
        lines += [
            "",
            "cold start (fresh process: import + load V1 + encode one image): "
            f"berg_onnx {b['wall_s']:.2f} s "
            f"(import {b['import_s']:.2f}, load {b['load_s']:.2f}, encode {b['encode_s']:.3f}); "
            f"torch reference {t['wall_s']:.2f} s (import {t['import_s']:.2f}); "
            f"{t['wall_s'] / b['wall_s']:.0f}x faster; the original (spec): 3.7-7.5 s, "
            f"{3.7 / b['wall_s']:.0f}-{7.5 / b['wall_s']:.0f}x",
        ]
        if "breakdown" in r["cold_start"]:
            from benchmarks.coldstart import report as coldstart_report

            lines.append(coldstart_report(r["cold_start"]["breakdown"]))
    if "install" in r:
        lines.append(
            "runtime venv (wheel + dependencies, no torch): "
            f"{r['install']['runtime_venv_mb']:.0f} MB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "benchmarks")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON results (default: workdir/results.json)"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["memory", "cold", "install", "grid"]
    )
    parser.add_argument(
        "--int8-tolerance",
        type=float,
        default=None,
        help="max abs vs PyTorch the int8 tier must meet (default: the export's 0.05)",
    )
    args = parser.parse_args(argv)

    from berg_onnx.constants import available_cores

    threads = available_cores()
    args.workdir.mkdir(parents=True, exist_ok=True)
    berg_dir, export_dir = prepare(args.workdir)
    tiers = {roi: int8_tier(berg_dir, export_dir, roi, args.int8_tolerance) for roi in ROIS}
    samples = [sgemm_peak()]
    results = {"machine": machine_info(threads), "quick": args.quick, "int8_tiers": tiers}
    results["throughput"] = throughput(berg_dir, export_dir, threads, args.quick, samples, tiers)
    # The peak is measured before the throughput runs and after each ROI, and
    # the highest is the yardstick: a neighbour slowing the machine during one
    # measurement must not make the roofline look easier to reach.
    results["sgemm"] = dict(max(samples, key=lambda r: r["gflops"]))
    results["sgemm"]["measured_gflops"] = [r["gflops"] for r in samples]
    out = args.out or args.workdir / "results.json"
    save(results, out)  # after each phase: a slow or failing later phase loses nothing
    if "memory" not in args.skip:
        results["memory"] = memory(berg_dir, export_dir, 200 if args.quick else 1000, args.quick)
        save(results, out)
    if "cold" not in args.skip:
        results["cold_start"] = cold_start(berg_dir, export_dir, 2 if args.quick else 3)
        save(results, out)
    if "install" not in args.skip:
        results["install"] = runtime_venv_size(args.workdir)
    if "grid" not in args.skip:  # experiment grid vs per-model encode (benchmarks/grid.py)
        from .grid import grid_benchmark

        results["grid"] = grid_benchmark(export_dir, list(ROIS), 24 if args.quick else 120)
    print("\n" + save(results, out))
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


def save(results: dict, out: Path) -> str:
    """Write the results so far as JSON and as the report's markdown; the report."""
    from berg_onnx.utils.fileio import atomic_write_bytes

    text = report(results)
    if "grid" in results:  # experiment grid vs per-model encode (benchmarks/grid.py)
        from .grid import report as grid_report

        text += "\n\n" + grid_report(results["grid"])
    atomic_write_bytes(out, (json.dumps(results, indent=2) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), (text + "\n").encode())
    return text


if __name__ == "__main__":
    sys.exit(main())
