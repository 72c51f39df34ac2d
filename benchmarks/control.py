"""python -m benchmarks.control: relational neural control (berg_onnx.control) at scale.

Builds (once, under --work) a run store of N images x S subjects x 2 ROIs (V1, V2, the
catalogue's voxel counts, every voxel kept) with planted values, through the real
ExperimentStore, beside a metadata-only export (manifest + metadata npz: RNC reads ncsnr,
never a graph). Then, each in a fresh child process (peak RSS = VmHWM):

- univariate RNC, cv off, the method's defaults (10^6 null batches);
- multivariate RNC, cv off, align, the method's defaults (2,000 generations x 2,400
  batches, 10^6 null batches), engine "auto" under the 2 GB budget, with the per-
  generation state file the CLI writes;
- the "gram" engine (no RSM held: what N = 73,000 uses) for a few generations;
- a straightforward loop implementation of the same definitions (the authors' way:
  one null batch at a time; RSM entries pair by pair with scipy.stats.pearsonr; one
  pearsonr per batch), timed on a slice and scaled to the full job.

Prints a table and the extrapolation to N = 73,000 x 8 subjects.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "fmri-nsd-fwrf"
ROIS = ("V1", "V2")
GRAM_NULL = 4096  # null batches timed on the gram engine (one block)


def _cpu_s() -> float:
    """CPU seconds of this process (user + system): on a shared machine the wall clock
    mostly measures the neighbours."""
    t = os.times()
    return t.user + t.system


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the store ---------------------------------------------------------------------------
def _metadata(nv: int, seed: int) -> dict:
    from berg_onnx.source.metadata import flatten

    rng = np.random.default_rng(seed)
    mask = np.zeros(81 * 104 * 83, dtype=bool)
    mask[rng.choice(mask.size, nv, replace=False)] = True
    meta = {
        "fmri": {
            "ncsnr": np.ones(nv, dtype=np.float32),  # every voxel kept (> 0.5)
            "roi_mask_volume": mask.reshape(81, 104, 83),
            "fmri_affine": np.eye(4),
        },
        "encoding_models": {
            "r2": np.zeros(nv, dtype=np.float32),
            "noise_ceiling": np.ones(nv, dtype=np.float32),
            "explained_variance": np.zeros(nv, dtype=np.float32),
            "train_img_num": np.arange(10),
            "val_img_num": np.arange(10),
            "test_img_num": np.arange(10),
        },
    }
    return flatten(meta)


def build_export(src: Path, dst: Path, subjects: int) -> Path:
    """Manifest entries for V1/V2 of subjects 1..S at the catalogue's voxel counts: their
    metadata written here, their graph a synthetic one (never loaded by RNC)."""
    from berg_onnx.source.manifest import FileEntry, Manifest

    dst.mkdir(parents=True, exist_ok=True)
    base = Manifest.load(src / "manifest.json")
    donor = base.get(MODEL, 1, "V1")
    shutil.copy2(src / donor.onnx.name, dst / donor.onnx.name)
    manifest = Manifest()
    for s in range(1, subjects + 1):
        for roi in ROIS:
            nv = _voxels(s, roi)
            name = f"{MODEL}_sub-{s:02d}_roi-{roi}.npz"
            np.savez_compressed(dst / name, **_metadata(nv, s * 100 + len(roi)))
            d = copy.deepcopy(donor.to_dict())
            d.update(subject=s, roi=roi, nv=nv)
            d["splits"] = [{**d["splits"][0], "nv": nv}]
            d["metadata"] = dataclasses.asdict(FileEntry.of(dst, name))
            d.pop("onnx_int8", None)
            manifest.add(type(donor).from_dict(d))
    manifest.write(dst / "manifest.json")
    return dst


def _voxels(subject: int, roi: str) -> int:
    """The catalogue's subject-1 voxel count (the only one it lists), 23 fewer per subject."""
    counts = json.loads((REPO / "models.json").read_text())["models"][MODEL]["voxels"]["1"]
    return int(counts[roi]) - 23 * (subject - 1)


def build_store(export: Path, path: Path, n: int, subjects: int) -> Path:
    """Planted values: a shared 8-dim latent geometry for a fifth of the images in both
    ROIs, independent latents elsewhere in V2, plus noise (the search has work to do)."""
    from berg_onnx import BERG
    from berg_onnx.experiment import ExperimentStore, plan_experiment

    stimulus = np.zeros((n, 3, 8, 8), dtype=np.uint8)
    stimulus[:, 0, 0, 0] = np.arange(n) % 256
    stimulus[:, 1, 0, 0] = np.arange(n) // 256 % 256  # distinct rows; the fingerprint sees them
    job = plan_experiment(
        BERG(berg_dir=export), stimulus, list(range(1, subjects + 1)), list(ROIS), chunk_size=512
    )
    store = ExperimentStore.create_or_open(path, job)
    rng = np.random.default_rng(0)
    h, g = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    g[: n // 5] = h[: n // 5]
    for plan in job.models:
        latent = h if plan.roi == ROIS[0] else g
        w = rng.normal(size=(8, plan.n_voxels)).astype(np.float32)
        for i in range(store.n_chunks):
            a, b = store.chunk_bounds(i)
            rows = latent[a:b] @ w + rng.normal(0, 2.0, size=(b - a, plan.n_voxels))
            store.write_chunk(plan.subject, plan.roi, i, rows.astype(np.float32))
    return path


# -- children ----------------------------------------------------------------------------
def child_univariate(store: str, null_samples: int) -> dict:
    from berg_onnx.control import univariate

    t = time.perf_counter()
    u = univariate(store, *ROIS, null_samples=null_samples)
    return {"seconds": time.perf_counter() - t, "cpu_s": _cpu_s(), "rss_mb": _rss_mb(),
            "images": {k: len(v) for k, v in u.controlling_images.items()}}  # fmt: skip


def child_multivariate(store: str, generations: int, engine: str, null_samples: int) -> dict:
    import tempfile

    from berg_onnx.control import multivariate

    with tempfile.TemporaryDirectory() as state:
        t = time.perf_counter()
        m = multivariate(
            store, *ROIS, condition="align", generations=generations, engine=engine,
            null_samples=null_samples, checkpoint=state,
        )  # fmt: skip
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "cpu_s": _cpu_s(), "rss_mb": _rss_mb(),
            "timings": m.params["timings"], "engine": m.params["engine"],
            "best_score": m.best_score, "baseline_score": m.baseline_score,
            "first_score": float(m.scores[0])}  # fmt: skip


def child_loops(store: str, n_null: int, n_pairs: int, n_batches: int) -> dict:
    """The loop implementation on slices of the job (the authors' style)."""
    import zarr
    from scipy.stats import pearsonr

    root = zarr.open_group(store, mode="r")
    n = root.attrs["n_images"]
    rng = np.random.default_rng(0)
    t = time.process_time()  # CPU time throughout: the machine is shared
    uni = np.stack([np.nanmean(root[f"sub-{s:02d}/{ROIS[0]}"][:], axis=1) for s in (1, 2)])
    uni = uni.mean(axis=0)
    read_s = time.process_time() - t
    t = time.process_time()
    for _ in range(n_null):  # univariate null: one batch at a time
        sample = rng.choice(n, 25, replace=False)
        sample.sort()
        float(np.mean(uni[sample]))
    null_per_batch = (time.process_time() - t) / n_null
    x = root[f"sub-01/{ROIS[0]}"][:2000].astype(np.float64)
    t = time.process_time()
    done = 0
    for a in range(1, 2000):  # RSM entries, pair by pair
        for b in range(a):
            pearsonr(x[a], x[b])
            done += 1
            if done == n_pairs:
                break
        if done == n_pairs:
            break
    pair_s = (time.process_time() - t) / n_pairs
    rsm1 = rng.normal(size=(2000, 2000)).astype(np.float32)
    rsm2 = rng.normal(size=(2000, 2000)).astype(np.float32)
    lower = np.tril_indices(50, -1)
    t = time.process_time()
    for _ in range(n_batches):  # one RSA score per batch
        batch = np.sort(rng.choice(2000, 50, replace=False))
        pearsonr(rsm1[batch][:, batch][lower], rsm2[batch][:, batch][lower])
    batch_s = (time.process_time() - t) / n_batches
    return {"read_2_subjects_s": read_s, "null_batch_s": null_per_batch, "pair_s": pair_s,
            "rsa_batch_s": batch_s, "rss_mb": _rss_mb()}  # fmt: skip


def _child(name: str, **kw) -> dict:
    code = (
        "import json, sys; from benchmarks import control as c; "
        f"print(json.dumps(c.child_{name}(**json.loads(sys.argv[1]))))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kw)], env=env, cwd=REPO,
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.control", description=__doc__)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--generations", type=int, default=2000)
    p.add_argument("--null-samples", type=int, default=1_000_000)
    p.add_argument("--gram-generations", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/berg-onnx-rnc-bench"))
    p.add_argument("--artifacts", type=Path, default=Path(
        os.environ.get("BERG_TEST_ARTIFACTS", "/tmp/berg-artifacts")))  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    tag = hashlib.sha256(f"{args.images}-{args.subjects}-v1".encode()).hexdigest()[:8]
    export = args.work / f"export-{args.subjects}"
    store = args.work / f"store-{tag}.zarr"
    if not (store / "zarr.json").is_file():
        t = time.perf_counter()
        build_export(args.artifacts / "export", export, args.subjects)
        build_store(export, store, args.images, args.subjects)
        print(f"built {store} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    n, s = args.images, args.subjects
    voxels = [sum(_voxels(x, r) for x in range(1, s + 1)) for r in ROIS]
    print(f"machine: {_cpu()}, {os.cpu_count()} cores; numpy {np.__version__}")
    print(f"store: N = {n} images x {s} subjects x {ROIS} ({voxels[0]} + {voxels[1]} voxels)")
    figures = {"images": n, "subjects": s, "voxels": voxels, "cpu": _cpu()}
    figures["univariate"] = u = _child("univariate", store=str(store),
                                       null_samples=args.null_samples)  # fmt: skip
    print(f"univariate RNC, {args.null_samples} null batches: {u['seconds']:.1f} s wall, "
          f"{u['cpu_s']:.1f} s CPU, peak RSS {u['rss_mb']:.0f} MB")  # fmt: skip
    figures["multivariate"] = m = _child(
        "multivariate", store=str(store), generations=args.generations, engine="auto",
        null_samples=args.null_samples,
    )  # fmt: skip
    t = m["timings"]
    print(f"multivariate RNC ({m['engine']} engine), {args.generations} generations: "
          f"{m['seconds']:.0f} s wall, {m['cpu_s']:.0f} s CPU, peak RSS {m['rss_mb']:.0f} MB; "
          f"CPU s: read {t['read_cpu_s']:.0f}, RSMs {t['engine_cpu_s']:.0f}, null "
          f"{t['null_cpu_s']:.0f}, search {t['search_cpu_s']:.0f}; score {m['first_score']:.3f}"
          f" -> {m['best_score']:.3f} (baseline {m['baseline_score']:.3f})")  # fmt: skip
    figures["gram"] = g = _child(
        "multivariate", store=str(store), generations=args.gram_generations, engine="gram",
        null_samples=GRAM_NULL,
    )  # fmt: skip
    gt = g["timings"]
    gen_cpu = gt["search_cpu_s"] / args.gram_generations
    null_cpu = gt["null_cpu_s"] / GRAM_NULL
    print(f"gram engine: {gen_cpu:.2f} CPU s per generation, {null_cpu * 1e3:.2f} CPU ms per "
          f"null batch, peak RSS {g['rss_mb']:.0f} MB")  # fmt: skip
    figures["loops"] = lp = _child("loops", store=str(store), n_null=20_000, n_pairs=20_000,
                                   n_batches=2400)  # fmt: skip
    loop_uni = lp["null_batch_s"] * args.null_samples * 2
    loop_rsm = lp["pair_s"] * n * (n - 1) / 2 * s * 2
    loop_search = lp["rsa_batch_s"] * 2400 * args.generations
    loop_null = lp["rsa_batch_s"] * args.null_samples
    print(f"loop implementation, CPU s scaled from slices: univariate nulls {loop_uni:.0f} s "
          f"(2 ROIs); RSMs pair by pair {loop_rsm / 3600:.1f} h; search {loop_search / 3600:.2f}"
          f" h; null {loop_null / 60:.0f} min")  # fmt: skip
    scale = 73_000 / n
    uni73 = u["cpu_s"] * scale  # reading dominates; the null does not grow with N
    multi73 = (t["read_cpu_s"] * scale * (8 / s) + null_cpu * args.null_samples
               + gen_cpu * args.generations)  # fmt: skip
    loop73 = lp["pair_s"] * 73_000 * 72_999 / 2 * 8 * 2 + loop_search + loop_null
    print(f"extrapolated to N = 73,000 x 8 subjects (CPU time): univariate ~{uni73:.0f} s;"
          f" multivariate (gram engine, no RSM; rows memory-mapped beyond the budget) "
          f"~{multi73 / 3600:.1f} h; loop implementation ~{loop73 / 86400:.0f} days "
          f"(+ a 21 GB float32 RSM per ROI and subject set)")  # fmt: skip
    figures["extrapolated_73000_cpu_s"] = {"univariate": uni73, "multivariate": multi73,
                                           "loops": loop73}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
