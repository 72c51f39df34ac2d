"""`berg-onnx list`, `metadata` and `download`: what a model source holds, and fetching it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from berg_onnx.cli._common import (
    CLIError,
    add_command,
    make_berg,
    progress_flags,
    rois_help,
    show_progress,
    subjects_help,
)
from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.errors import BERGError
from berg_onnx.source.catalog import model_key
from berg_onnx.source.hub import placeholder_hint

LIST_EXAMPLES = """examples:
  berg-onnx list
  berg-onnx list --berg-dir export_dir"""
METADATA_EXAMPLES = """examples:
  berg-onnx metadata --subject 1 --roi V1
  berg-onnx metadata --subject 1 --out sub-01_metadata.npz"""
DOWNLOAD_EXAMPLES = """examples:
  berg-onnx download --subject 1 --roi V1 FFA-1
  berg-onnx download --subject 1 2   # every ROI of subjects 1 and 2"""


def run_list(args: argparse.Namespace) -> int:
    berg = make_berg(args)
    store = berg.store
    problem = None
    try:
        manifest = store.manifest()
    except BERGError as e:  # unreachable Hub, offline without a cached manifest, no export
        manifest, problem = None, " ".join(str(e).split())
    print(f"source: {store.describe()}")
    if problem:
        print(f"  could not read the export's manifest: {problem}")
    elif getattr(store, "repo_id", None) and placeholder_hint(store.repo_id):
        print(f"  {placeholder_hint(store.repo_id)}")
    for model_id, spec in berg.catalog.models.items():
        print(f"{model_id}: {spec.description}")
        line = f"  subjects: {', '.join(map(str, spec.subjects))}"
        if manifest is not None:
            held = sorted({e.subject for e in manifest.models.values() if e.model_id == model_id})
            line += f"; in this source: {', '.join(map(str, held)) or 'none'}"
        print(line)
        print(f"  {'ROI':<12} {'split':>5} {'voxels (sub-01)':>16}  status")
        for roi in spec.rois:
            # the source's own count where it has subject 1's model, else the catalogue's
            held_entry = (
                None if manifest is None else manifest.models.get(model_key(model_id, 1, roi.name))
            )
            nv = held_entry.nv if held_entry else spec.voxels.get(1, {}).get(roi.name, "?")
            status = (
                "unknown (manifest unavailable)"
                if problem
                else _status(store, manifest, model_id, roi.name, spec.subjects)
            )
            print(f"  {roi.name:<12} {roi.splits:>5} {nv:>16}  {status}")
    return 0


def _status(store, manifest, model_id: str, roi: str, subjects) -> str:
    if manifest is None:
        return "not cached"
    have, cached = [], []
    for s in subjects:
        key = model_key(model_id, s, roi)
        if key in manifest.models:
            have.append(s)
            entry = manifest.models[key]
            if not hasattr(store, "cached") or all(store.cached(f) for f in entry.files):
                cached.append(s)
    if not have:
        return "not in this export"
    word = "cached" if hasattr(store, "cached") else "available"
    return f"{word}: subjects {','.join(map(str, cached))}" if cached else "not cached"


def run_metadata(args: argparse.Namespace) -> int:
    from berg_onnx.source.metadata import flatten
    from berg_onnx.utils.fileio import atomic_path
    from berg_onnx.utils.outputs import check_output

    if args.out:
        check_output(Path(args.out), (".npz",))  # before anything is printed
    berg = make_berg(args)
    meta = berg.get_model_metadata(DEFAULT_MODEL_ID, args.subject, args.roi)
    per_roi = {args.roi: meta} if args.roi else meta
    print(f"{'ROI':<12} {'voxels':>7} {'ncsnr':>7} {'r2':>7} {'expl.var %':>10}")
    for roi, m in per_roi.items():
        nv = int(m["fmri"]["roi_mask_volume"].sum())
        em = m["encoding_models"]
        print(
            f"{roi:<12} {nv:>7} {m['fmri']['ncsnr'].mean():>7.3f} {em['r2'].mean():>7.3f} "
            f"{em['explained_variance'].mean():>10.1f}"
        )
    if args.out:
        out = Path(args.out)
        flat = flatten(meta if args.roi else {roi: m for roi, m in per_roi.items()})
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **flat)
        print(f"wrote {out} ({len(flat)} arrays)")
    return 0


def run_download(args: argparse.Namespace) -> int:
    berg = make_berg(args)
    spec = berg.catalog.model(DEFAULT_MODEL_ID)
    rois = [spec.check_roi(r).name for r in args.roi] if args.roi else list(spec.roi_names)
    subjects = [spec.check_subject(s) for s in args.subject]
    manifest = berg.store.manifest()
    files, absent = [], []
    for s in subjects:
        for r in rois:
            if model_key(spec.model_id, s, r) in manifest.models:
                files += manifest.get(spec.model_id, s, r).files
            else:
                absent.append(f"sub-{s:02d} {r}")
    if absent and (args.roi or not files):  # asked for by name, or nothing at all: an error
        raise CLIError(
            f"{berg.store.describe()} has no model for {', '.join(absent)}; nothing downloaded"
        )
    from tqdm.auto import tqdm

    show = show_progress(args)
    for entry in tqdm(files, desc="download", unit="file", disable=not show, file=sys.stderr):
        berg.store.fetch(entry)
    total = sum(f.size for f in files)
    print(f"{len(files)} files ({total / 1e6:.1f} MB) verified in {berg.store.describe()}")
    if absent:
        print(f"not in this export (skipped): {', '.join(absent)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `list`, `metadata` and `download` commands' options."""
    p = add_command(
        sub, "list", "list models, ROIs, voxel counts and what is cached", LIST_EXAMPLES
    )
    p.set_defaults(func=run_list)

    p = add_command(
        sub, "metadata", "summarise (and optionally save) a subject's metadata", METADATA_EXAMPLES
    )
    p.add_argument("--subject", type=int, required=True, help=subjects_help())
    p.add_argument("--roi", default=None, help=f"default: every ROI; {rois_help()}")
    p.add_argument("--out", default=None, help="save as .npz")
    p.set_defaults(func=run_metadata)

    p = add_command(sub, "download", "prefetch models for offline use", DOWNLOAD_EXAMPLES)
    p.add_argument("--subject", type=int, nargs="+", required=True, help=subjects_help())
    p.add_argument("--roi", nargs="+", default=None, help=f"default: every ROI; {rois_help()}")
    progress_flags(p)
    p.set_defaults(func=run_download)
