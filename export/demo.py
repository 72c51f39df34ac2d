"""The README's first command: synthesize, export, encode natural photographs, summarise.

Everything runs locally: a BERG-format synthetic model set stands in for the
real NSD weights, the photographs are those scikit-image ships, and the
encoding goes through berg_onnx exactly as a user's code would.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from berg_onnx import BERG
from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.source.catalog import load_catalog

from .convert import convert
from .samples import photo_paths
from .synth import synthesize

DEMO_ROIS = ("V1", "hV4", "FFA-1", "PPA")


def run_demo(workdir: Path, seed: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    spec = load_catalog().model(DEFAULT_MODEL_ID)
    berg_dir, export_dir = workdir / "berg_dir", workdir / "export"
    t0 = time.perf_counter()
    print(f"1/3 synthesizing BERG-format checkpoints for subject 1, ROIs {', '.join(DEMO_ROIS)}")
    synthesize(berg_dir, spec, [1], DEMO_ROIS, None, seed, progress)
    t1 = time.perf_counter()
    print(f"2/3 exporting to ONNX and verifying against PyTorch -> {export_dir}")
    manifest = convert(berg_dir, export_dir, spec, [1], DEMO_ROIS, progress)
    t2 = time.perf_counter()
    paths = photo_paths()
    print(f"3/3 encoding {len(paths)} photographs shipped with scikit-image, with berg_onnx")
    berg = BERG(berg_dir=export_dir)
    responses = {}
    for roi in DEMO_ROIS:
        model = berg.get_encoding_model(DEFAULT_MODEL_ID, 1, {"roi": roi}, device="auto")
        responses[roi] = berg.encode(model, paths, show_progress=progress)
    t3 = time.perf_counter()

    names = [p.stem for p in paths]
    print()
    print(f"{'ROI':<7} {'voxels':>6} {'shape':>10} {'mean':>7} {'SD':>6}  max |diff| vs PyTorch")
    for roi, r in responses.items():
        diff = manifest.get(DEFAULT_MODEL_ID, 1, roi).max_abs_diff
        shape = f"{r.shape[0]}x{r.shape[1]}"
        print(f"{roi:<7} {r.shape[1]:>6} {shape:>10} {r.mean():>7.3f} {r.std():>6.3f}  {diff:.1e}")
    print()
    print("Which photograph drives each ROI most (share of voxels whose strongest image it is):")
    for roi, r in responses.items():
        share = np.bincount(r.argmax(axis=0), minlength=len(names)) / r.shape[1]
        order = np.argsort(share)[::-1][:3]
        print(f"  {roi:<6} " + ", ".join(f"{names[i]} {100 * share[i]:.0f}%" for i in order))
    print()
    print(
        f"synth {t1 - t0:.1f} s, export {t2 - t1:.1f} s, encode {t3 - t2:.1f} s; files in {workdir}"
    )
    print(
        "Note: synthetic weights, so the pattern is illustrative, not neuroscience; "
        "point python -m export convert at real BERG weights for real predictions."
    )
    return responses
