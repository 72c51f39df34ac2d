"""Code run in fresh child processes (peak memory, cold start, sgemm peak).

Each entry point prints one JSON line on stdout. Kept apart from the driver so a
child imports only what it measures.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across
    exec, so a child would report its parent's peak."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sgemm(n: int = 2048, repeats: int = 7) -> dict:
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    info = {}
    try:
        from threadpoolctl import threadpool_info

        info = [
            {k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for d in threadpool_info()
        ]
    except ImportError:
        info = "threadpoolctl not installed"
    return {"gflops": 2 * n**3 / best / 1e9, "n": n, "blas": info}


def _images(n: int, size: int):
    from export.samples import photographs

    return photographs(size, n)


def rss_berg(export_dir: str, roi: str, n: int, batch: int | None) -> dict:
    images = _images(n, 227)
    from berg_onnx import BERG

    berg = BERG(berg_dir=export_dir, batch_size=batch)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, device="cpu")
    t = time.perf_counter()
    out = berg.encode(model, images, show_progress=False)
    dt = time.perf_counter() - t
    return {
        "peak_rss_mb": _rss_mb(),
        "images_per_s": n / dt,
        "input_mb": images.nbytes / 1e6,
        "output_shape": list(out.shape),
        "batch": model.batch_size,
    }


def rss_torch(berg_dir: str, roi: str, n: int, batch: int, splits: int) -> dict:
    images = _images(n, 227)
    import torch

    from export import layout
    from export.checkpoint import load_checkpoint
    from export.onnx_export import reference_preprocess
    from export.reference import build_model

    paths = layout.checkpoint_paths(__import__("pathlib").Path(berg_dir), 1, roi, splits)
    cks = [load_checkpoint(p) for p in paths]
    model = build_model([(c.encoder, c.readout) for c in cks])
    t = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, n, batch):
            model(reference_preprocess(images[lo : lo + batch]))
    dt = time.perf_counter() - t
    return {"peak_rss_mb": _rss_mb(), "images_per_s": n / dt, "batch": batch}


def cold_berg(export_dir: str, image_path: str) -> dict:
    t0 = time.perf_counter()
    from berg_onnx import BERG

    t1 = time.perf_counter()
    berg = BERG(berg_dir=export_dir)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, device="cpu")
    t2 = time.perf_counter()
    berg.encode(model, [image_path], show_progress=False)
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "encode_s": t3 - t2}


def cold_torch(berg_dir: str, image_path: str) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import torch
    from PIL import Image

    from export import layout
    from export.checkpoint import load_checkpoint
    from export.onnx_export import reference_preprocess
    from export.reference import build_model

    t1 = time.perf_counter()
    (path,) = layout.checkpoint_paths(__import__("pathlib").Path(berg_dir), 1, "V1", 1)
    ck = load_checkpoint(path)
    model = build_model([(ck.encoder, ck.readout)])
    t2 = time.perf_counter()
    with Image.open(image_path) as im:
        x = np.asarray(im.convert("RGB")).transpose(2, 0, 1)[None]
    with torch.no_grad():
        model(reference_preprocess(x))
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "encode_s": t3 - t2}


if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(globals()[name](**args)))
