"""`berg-onnx volume` and `berg-onnx plot`: responses in the subject's brain space."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from berg_onnx.api import BERG
from berg_onnx.brain.runs import (
    FIGURE_SUFFIXES,
    Loaded,
    describe_responses,
    is_store,
    labels_beside,
    single_or_all,
    store_metadata,
)
from berg_onnx.brain.volume import from_nifti, require_nibabel, save_nifti, write_nifti
from berg_onnx.cli._common import OVERLAP_HELP, add_command, hub_berg, make_berg
from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.errors import InvalidParameterError, ModelNotFoundError
from berg_onnx.experiment.store import ExperimentStore
from berg_onnx.utils.fileio import open_npy_responses
from berg_onnx.utils.outputs import (
    NIFTI_SUFFIXES,
    check_output,
    is_nifti_path,
    listing_path,
    write_pair,
)

VOLUME_EXAMPLES = """examples:
  berg-onnx volume experiment.zarr --subject 1 --roi V1 --out sub-01_V1.nii.gz
  berg-onnx volume experiment.zarr --subject 1 --roi V1 V2 V3 hV4 --out early.nii.gz
  berg-onnx volume experiment.zarr --subject 1 --roi early V1 --overlap last --out e.nii.gz
  berg-onnx volume v1.npy --subject 1 --roi V1 --fill nan --out v1.nii.gz"""
PLOT_EXAMPLES = """examples:
  berg-onnx plot v1.npy --subject 1 --roi V1 --out v1.png           # mean over images
  berg-onnx plot v1.nii.gz --subject 1 --roi V1 --image 3 --out img3.png
  berg-onnx plot experiment.zarr --subject 2 --roi FFA-1 --view mosaic --out ffa.png
  berg-onnx plot --accuracy --subject 1 --roi V1 --out v1_accuracy.png"""


def berg_for(store: ExperimentStore | None, args: argparse.Namespace) -> BERG:
    """The BERG to read metadata from: the flags' source, else the store's, else the Hub."""
    if args.berg_dir or args.repo_id or args.revision or store is None:
        return make_berg(args)  # as every command builds it from the flags
    if "export_dir" in store.source:
        export_dir = Path(store.source["export_dir"])
        if not export_dir.is_dir():
            raise ModelNotFoundError(
                f"{store.path} was written from the export {export_dir}, which is not there "
                "now; pass --berg-dir (or --repo-id/--revision) to read the metadata elsewhere"
            )
        return BERG(berg_dir=export_dir)
    return hub_berg(store.source.get("repo_id"), store.source.get("revision"))


def load_responses(args: argparse.Namespace) -> Loaded:
    """Responses + metadata of ``args.input``: a run store, an encode .npy or an encode NIfTI."""
    path, subject, rois = Path(args.input), args.subject, args.roi
    if is_store(path):
        store = ExperimentStore.open(path)
        berg = berg_for(store, args)
        rois = [berg.catalog.model(store.model_id).check_roi(r).name for r in rois]
        responses = {r: store.responses(subject, r) for r in rois}
        metadata = {r: store_metadata(berg, store, subject, r) for r in rois}
        return Loaded(responses, metadata, store.labels(), store.model_id)
    if len(rois) != 1:
        raise InvalidParameterError(
            f"{path} holds one ROI's responses; give one --roi (several ROIs come from a run store)"
        )
    if not (is_nifti_path(path) or path.suffix.lower() == ".npy"):
        raise InvalidParameterError(
            f"{path}: give an encode output (.npy, .nii, .nii.gz) or a run store (.zarr)"
        )
    if not path.is_file():
        raise ModelNotFoundError(f"no such file: {path}")
    berg = berg_for(None, args)
    roi = berg.catalog.model(DEFAULT_MODEL_ID).check_roi(rois[0]).name
    meta = berg.get_model_metadata(DEFAULT_MODEL_ID, subject, roi)
    if is_nifti_path(path):
        rows = from_nifti(path, meta)
    else:
        rows = open_npy_responses(path)  # header checked before anything is mapped
    labels = labels_beside(listing_path(path), np.shape(rows))
    return Loaded({roi: rows}, {roi: meta}, labels, DEFAULT_MODEL_ID)


def run_volume(args: argparse.Namespace) -> int:
    """berg-onnx volume: a store's (or encode output's) responses as a NIfTI."""
    out, subject, fill, overlap = Path(args.out), args.subject, args.fill, args.overlap
    check_output(out, NIFTI_SUFFIXES)  # before any work
    require_nibabel()
    loaded = load_responses(args)
    responses, metadata = single_or_all(loaded)
    description = describe_responses(loaded.model_id, subject, list(loaded.responses))
    n = np.shape(next(iter(loaded.responses.values())))[0]
    written = [out]
    if loaded.labels is None:
        save_nifti(out, responses, metadata, fill, overlap=overlap, description=description)
    else:  # the volume and its rows' listing as one pair (outputs.py)
        gz = str(out).lower().endswith(".gz")
        written.append(
            write_pair(
                out,
                loaded.labels,
                lambda f: write_nifti(
                    f, gz, responses, metadata, fill, overlap=overlap, description=description
                ),
            )
        )
    print(
        f"wrote {' and '.join(map(str, written))} ({n} images, ROIs {', '.join(loaded.responses)})"
    )
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """berg-onnx plot: a response map (or --accuracy figure) saved to a PNG/PDF/SVG file."""
    out, subject, rois, input_path = Path(args.out), args.subject, args.roi, args.input
    image, view, overlap = args.image, args.view, args.overlap
    check_output(out, FIGURE_SUFFIXES)  # before any work
    from berg_onnx.brain import plot
    from berg_onnx.utils.fileio import atomic_path

    plot.require_matplotlib()
    if args.accuracy:
        if len(rois) != 1:
            raise InvalidParameterError("--accuracy plots one ROI: give one --roi")
        if input_path is not None and is_store(input_path):
            store = ExperimentStore.open(input_path)
            berg = berg_for(store, args)
            meta = store_metadata(berg, store, subject, rois[0])
        else:
            berg = berg_for(None, args)
            meta = berg.get_model_metadata(DEFAULT_MODEL_ID, subject, rois[0])
        fig = plot.accuracy(meta, subject=subject, roi=rois[0])
    else:
        if input_path is None:
            raise InvalidParameterError(
                "give INPUT (an encode .npy/.nii.gz or a run store) or --accuracy"
            )
        require_nibabel()
        loaded = load_responses(args)
        responses, metadata = single_or_all(loaded)
        name = None
        if image is not None and loaded.labels is not None and 0 <= image < len(loaded.labels):
            name = Path(loaded.labels[image]).name
            name = None if name == str(image) else name  # an array input's rows are "0", "1", ...
        fig = plot.response_map(
            responses,
            metadata,
            image,
            subject=subject,
            roi=", ".join(loaded.responses),
            view=view,
            image_name=name,
            overlap=overlap,
        )
    fmt = out.suffix.lower().lstrip(".")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt)
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    print(f"wrote {out} ({width}x{height} px)" if fmt == "png" else f"wrote {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `volume` and `plot` commands' options."""
    p = add_command(
        sub,
        "volume",
        "responses (a run store or encode output) as a NIfTI in the subject's space",
        VOLUME_EXAMPLES,
    )
    p.add_argument("input", help="run store (.zarr) or encode output (.npy, .nii, .nii.gz)")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--roi", nargs="+", required=True, help="one ROI, or several of a store")
    p.add_argument("--overlap", choices=["first", "last"], default=None, help=OVERLAP_HELP)
    p.add_argument("--fill", type=float, default=0.0, help="value outside the ROI, e.g. nan (0)")
    p.add_argument("--out", required=True, help=".nii or .nii.gz (rows' paths written beside)")
    p.set_defaults(func=run_volume)

    p = add_command(
        sub,
        "plot",
        "draw responses on brain slices, or a model's accuracy (--accuracy)",
        PLOT_EXAMPLES,
    )
    p.add_argument("input", nargs="?", help="encode output (.npy, .nii.gz) or run store (.zarr)")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--roi", nargs="+", required=True)
    p.add_argument("--image", type=int, default=None, help="row to show (default: the mean)")
    p.add_argument("--view", choices=["ortho", "mosaic"], default="ortho")
    p.add_argument("--overlap", choices=["first", "last"], default=None, help=OVERLAP_HELP)
    p.add_argument("--accuracy", action="store_true", help="ncsnr, explained variance, r2")
    p.add_argument("--out", required=True, help="figure file: .png, .pdf or .svg")
    p.set_defaults(func=run_plot)
