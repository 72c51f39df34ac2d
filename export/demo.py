"""The README's first command: synthesize, export, encode natural photographs, summarise.

Everything runs locally: a BERG-format synthetic model set stands in for the
real NSD weights, the photographs are those scikit-image ships, and the
encoding goes through berg_onnx exactly as a user's code would.

The demo export holds what the README's examples use (two subjects; V1, V2,
V3, FFA-1 and lateral for subject 1, V1 and FFA-1 for subject 2), with small
voxel counts so that it builds in about a minute; ``python -m export synth``
and ``convert`` build bigger sets (realistic voxel counts, every ROI). It
leaves in WORKDIR:

- ``berg_dir/``: the BERG-format synthetic checkpoints;
- ``export/``: the verified ONNX export, the ``--berg-dir`` of every example;
- ``photos/``: the photographs it encoded, as files;
- ``stimuli.npy``: the same photographs as one (N, 3, 256, 256) uint8 array.

Run again with the same seed, it reuses what it built (the synthetic files
are recorded in ``demo.json``; ``convert`` skips models already exported from
the same source files) and only encodes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from berg_onnx import BERG
from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.source.catalog import load_catalog
from berg_onnx.utils.fileio import atomic_path, sha256_file

from .convert import convert
from .samples import photo_paths, photographs
from .synth import synthesize

#: (subject, ROI) -> voxels. Subject 1's ROIs cover the README's examples (V1 V2 V3 in one
#: volume, a face ROI, a split ROI); subject 2 makes ``--subjects 1 2`` work.
DEMO_MODELS: dict[tuple[int, str], int] = {
    (1, "V1"): 240,
    (1, "V2"): 220,
    (1, "V3"): 200,
    (1, "FFA-1"): 90,
    (1, "lateral"): 300,
    (2, "V1"): 240,
    (2, "FFA-1"): 90,
}
RECORD = "demo.json"


def demo_paths(workdir: Path) -> dict[str, Path]:
    """Where the demo puts its BERG directory, export, photographs and stimulus array."""
    workdir = Path(workdir)
    return {
        "berg_dir": workdir / "berg_dir",
        "export": workdir / "export",
        "photos": workdir / "photos",
        "stimuli": workdir / "stimuli.npy",
    }


def _synthesized(workdir: Path, seed: int) -> set[tuple[int, str]]:
    """The models a previous run synthesized with this seed whose files are unchanged."""
    try:
        record = json.loads((workdir / RECORD).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(record, dict) or record.get("seed") != seed:
        return set()
    done = set()
    for item in record.get("models", []):
        try:
            subject, roi, nv, files = item["subject"], item["roi"], item["voxels"], item["files"]
            if DEMO_MODELS.get((subject, roi)) == nv and all(
                sha256_file(workdir / name) == sha for name, sha in files.items()
            ):
                done.add((subject, roi))
        except (KeyError, TypeError, OSError):
            continue
    return done


def _model_files(berg_dir: Path, spec, subject: int, roi: str) -> list[Path]:
    from . import layout

    return [
        *layout.checkpoint_paths(berg_dir, subject, roi, spec.roi(roi).splits),
        layout.metadata_path(berg_dir, subject, roi),
    ]


def _write_record(workdir: Path, seed: int, spec) -> None:
    """Record every demo model's synthetic files (name -> sha256) for the next run."""
    berg_dir = demo_paths(workdir)["berg_dir"]
    models = [
        {
            "subject": s,
            "roi": r,
            "voxels": nv,
            "files": {
                p.relative_to(workdir).as_posix(): sha256_file(p)
                for p in _model_files(berg_dir, spec, s, r)
            },
        }
        for (s, r), nv in DEMO_MODELS.items()
    ]
    with atomic_path(workdir / RECORD) as tmp:
        tmp.write_text(json.dumps({"seed": seed, "models": models}, indent=1) + "\n")


def _leave_photographs(paths: dict[str, Path], photos: list[Path]) -> None:
    """Copy the photographs into WORKDIR/photos and their 256x256 crops into stimuli.npy."""
    paths["photos"].mkdir(parents=True, exist_ok=True)
    for src in photos:
        dst = paths["photos"] / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    with atomic_path(paths["stimuli"]) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, photographs(256), allow_pickle=False)


def run_demo(workdir: Path, seed: int = 0, progress: bool | None = None) -> dict[str, np.ndarray]:
    """Build (or reuse) the demo export in ``workdir`` and encode the photographs with it.

    ``progress``: bars for synth/convert/encode; None means when stderr is a terminal.
    Returns subject 1's responses per ROI.
    """
    from berg_onnx.utils.progress import resolve_show

    show = resolve_show(progress)
    workdir = Path(workdir)
    paths = demo_paths(workdir)
    spec = load_catalog().model(DEFAULT_MODEL_ID)
    subjects = sorted({s for s, _ in DEMO_MODELS})
    t0 = time.perf_counter()
    done = _synthesized(workdir, seed)
    todo = [m for m in DEMO_MODELS if m not in done]
    described = "; ".join(
        f"subject {s}: " + ", ".join(f"{r} ({n})" for (s2, r), n in DEMO_MODELS.items() if s2 == s)
        for s in subjects
    )
    print(f"1/3 synthesizing BERG-format checkpoints (ROI (voxels)) for {described}")
    if not todo:
        print(f"    reusing {paths['berg_dir']} (seed {seed})")
    for subject, roi in todo:
        nv = {roi: DEMO_MODELS[(subject, roi)]}
        synthesize(paths["berg_dir"], spec, [subject], [roi], nv, seed, show)
    if todo:
        _write_record(workdir, seed, spec)
    t1 = time.perf_counter()
    print(f"2/3 exporting to ONNX and verifying against PyTorch -> {paths['export']}")
    for subject in subjects:  # convert keeps the models already exported from these files
        rois = [r for s, r in DEMO_MODELS if s == subject]
        manifest = convert(paths["berg_dir"], paths["export"], spec, [subject], rois, show)
    t2 = time.perf_counter()
    photos = photo_paths()
    _leave_photographs(paths, photos)
    kept = sorted(paths["photos"].iterdir())
    print(f"3/3 encoding {len(kept)} photographs shipped with scikit-image ({paths['photos']})")
    berg = BERG(berg_dir=paths["export"])
    responses = {}
    for subject, roi in DEMO_MODELS:
        if subject != 1:
            continue
        model = berg.get_encoding_model(DEFAULT_MODEL_ID, 1, {"roi": roi}, device="auto")
        responses[roi] = berg.encode(model, kept, show_progress=show)
    t3 = time.perf_counter()

    names = [p.stem for p in kept]
    print()
    print("Subject 1's responses to the photographs:")
    print(f"  {'ROI':<8} {'voxels':>6} {'shape':>8} {'mean':>7} {'SD':>6}  max |diff| vs PyTorch")
    for roi, r in responses.items():
        diff = manifest.get(DEFAULT_MODEL_ID, 1, roi).max_abs_diff
        shape = f"{r.shape[0]}x{r.shape[1]}"
        row = f"{roi:<8} {r.shape[1]:>6} {shape:>8} {r.mean():>7.3f} {r.std():>6.3f}"
        print(f"  {row}  {diff:.1e}")
    print()
    print("Which photograph drives each ROI most (share of voxels whose strongest image it is):")
    for roi, r in responses.items():
        share = np.bincount(r.argmax(axis=0), minlength=len(names)) / r.shape[1]
        order = np.argsort(share)[::-1][:3]
        print(f"  {roi:<8} " + ", ".join(f"{names[i]} {100 * share[i]:.0f}%" for i in order))
    print()
    print(
        f"synth {t1 - t0:.1f} s, export {t2 - t1:.1f} s, encode {t3 - t2:.1f} s; "
        f"total {t3 - t0:.1f} s"
    )
    print(
        "Note: synthetic weights (small voxel counts), so the pattern is illustrative, not "
        "neuroscience; point python -m export convert at real BERG weights for real predictions."
    )
    print()
    export, photos_dir = paths["export"], paths["photos"]
    print(
        f"Next, use the export with --berg-dir {export} (Python: BERG(berg_dir={str(export)!r})):"
    )
    print(f"  berg-onnx list --berg-dir {export}")
    print(f"  berg-onnx encode {photos_dir}/ --berg-dir {export} --subject 1 --roi V1 --out v1.npy")
    return responses
