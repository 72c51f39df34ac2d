"""python -m benchmarks.web --berg-dir EXPORT: the page in headless Chromium vs native berg_onnx.

Per image, end to end from decoded pixels (the resize included), one image at a
time, on the same natural photographs: the page (onnxruntime-web WebAssembly,
?threads=1 and 2) and berg_onnx (onnxruntime, BERG(threads=1 and 2)). Also the
load time (manifest + model file + sha256, then the session) and the page's
memory. Each browser round is a fresh context (no Cache Storage), so its load
includes the download over loopback. Figures are min and median over rounds x
images; the first image of a page is reported apart (onnxruntime-web warms up).

Needs a checkout with `npm ci` in web/, Debian's /usr/bin/chromium and the
webtest + export extras. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
]
READY = "['ready', 'error'].includes(document.body.dataset.state)"


def photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """n natural photographs as PNG files of size (w, h)."""
    from PIL import Image

    from export.samples import photo_paths

    paths = photo_paths()
    out = []
    for i in range(n):
        with Image.open(paths[i % len(paths)]) as im:
            im = im.convert("RGB")
            if i // len(paths) % 2:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            path = folder / f"photo{i:02d}.png"
            im.resize(size, Image.Resampling.BICUBIC).save(path)
            out.append(path)
    return out


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "n": len(values)}


def native_round(
    berg_dir: Path, roi: str, arrays: list[np.ndarray], threads: int, out: dict
) -> None:
    """One round of berg_onnx: load (manifest, checks, sessions), then one image at a time."""
    from berg_onnx import BERG

    t0 = time.perf_counter()
    berg = BERG(berg_dir=berg_dir, threads=threads)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": roi}, "cpu")
    berg.encode(model, arrays[0], show_progress=False)  # makes the single-image session
    out["load"].append((time.perf_counter() - t0) * 1e3)
    for x in arrays:
        t = time.perf_counter()
        berg.encode(model, x, show_progress=False)
        out["ms"].append((time.perf_counter() - t) * 1e3)


def renderer_rss_mb() -> float:
    """Resident memory of this run's Chromium renderer processes (the pages), MB."""
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in " ".join(proc.cmdline()):
                total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def browser_round(chromium, url: str, roi: str, images: list[Path], threads: int, out: dict):
    """One round of the page in a fresh context (empty Cache Storage): load, then the images."""
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{url}?threads={threads}&sw=0")  # no service worker precaching meanwhile
        page.wait_for_function(READY, timeout=300_000)
        if page.input_value("#roi") != roi:
            page.select_option("#roi", roi)
            page.wait_for_function(
                f"bergPage.state().roi === {json.dumps(roi)} && bergPage.state().ready",
                timeout=300_000,
            )
        if page.evaluate("document.body.dataset.state") != "ready":
            raise RuntimeError(page.text_content("#error"))
        timings, shown_threads = page.evaluate(
            "[bergPage.state().timings, document.querySelector('#threads').value]"
        )
        assert int(shown_threads) == threads, (shown_threads, threads)
        out["files"].append(timings["filesMs"])
        out["session"].append(timings["sessionMs"])
        page.set_input_files("#files", [str(p) for p in images])
        page.wait_for_function(
            f"document.querySelectorAll('.card').length === {len(images)} && {READY}",
            timeout=600_000,
        )
        ms = page.evaluate("bergPage.state().images.map(r => r.ms)")
        out["first"].append(ms[0])
        out["ms"].extend(ms[1:])
        memory = page.evaluate(
            "performance.measureUserAgentSpecificMemory ? "
            "performance.measureUserAgentSpecificMemory().then(m => m.bytes) : null"
        )
        if memory:
            out["memory"].append(memory / 2**20)
        out["rss"].append(renderer_rss_mb())
    finally:
        context.close()


def compare(pw, url, berg_dir, roi, images, threads, rounds) -> dict:
    """Native and browser rounds interleaved, so that the shared machine's drift hits both."""
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1)[None] for p in images]
    nat = {"load": [], "ms": []}
    web = {k: [] for k in ("files", "session", "first", "ms", "memory", "rss")}
    chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    try:
        for _ in range(rounds):
            native_round(berg_dir, roi, arrays, threads, nat)
            browser_round(chromium, url, roi, images, threads, web)
    finally:
        chromium.close()
    result = {
        "native": {"load_ms": summary(nat["load"]), "ms_per_image": summary(nat["ms"])},
        "browser": {
            "files_ms": summary(web["files"]),
            "session_ms": summary(web["session"]),
            "first_image_ms": summary(web["first"]),
            "ms_per_image": summary(web["ms"]),
            "page_memory_mb": summary(web["memory"]) if web["memory"] else None,
            "renderer_rss_mb": summary(web["rss"]),
        },
    }
    ratio = result["browser"]["ms_per_image"]["median"] / result["native"]["ms_per_image"]["median"]
    result["ratio"] = ratio
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--berg-dir", required=True, type=Path)
    parser.add_argument("--rois", nargs="+", default=["V1"])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="500x375", help="photograph size WxH")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from berg_onnx.web.server import make_server, start_in_thread, url_of

    w, h = (int(v) for v in args.size.split("x"))
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    server = make_server(args.berg_dir, port=0, quiet=True)
    start_in_thread(server)
    results = {"cpu": cpu, "size": args.size, "images": args.images, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        images = photos(Path(tmp), args.images, (w, h))
        for roi in args.rois:
            for threads in (1, 2):
                r = compare(pw, url_of(server), args.berg_dir, roi, images, threads, args.rounds)
                results[f"{roi}/threads={threads}"] = r
                nat, web, ratio = r["native"], r["browser"], r["ratio"]
                print(
                    f"{roi} threads={threads}: browser {web['ms_per_image']['median']:.1f} ms/img "
                    f"(min {web['ms_per_image']['min']:.1f}; first image "
                    f"{web['first_image_ms']['median']:.1f}), native "
                    f"{nat['ms_per_image']['median']:.1f} (min {nat['ms_per_image']['min']:.1f}) "
                    f"-> {ratio:.2f}x native; session {web['session_ms']['median']:.0f} ms "
                    f"(min {web['session_ms']['min']:.0f}) + files "
                    f"{web['files_ms']['median']:.0f} ms, native load "
                    f"{nat['load_ms']['median']:.0f} ms; page memory "
                    f"{(web['page_memory_mb'] or {}).get('median', float('nan')):.0f} MB, "
                    f"renderer RSS {web['renderer_rss_mb']['median']:.0f} MB",
                    flush=True,
                )
    server.shutdown()
    print(f"CPU: {cpu}; photographs {args.size}, {args.images} images x {args.rounds} rounds")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
