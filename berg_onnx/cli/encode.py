"""`berg-onnx encode`: responses of one model to images, written as .npy or NIfTI + listing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.cli._common import (
    CLIError,
    add_command,
    make_berg,
    note,
    positive_int,
    progress_flags,
    rois_help,
    show_progress,
    subjects_help,
)
from berg_onnx.constants import DEFAULT_MODEL_ID, PRECISIONS
from berg_onnx.source.catalog import load_catalog

EXAMPLES = """examples:
  berg-onnx encode photos/ --subject 1 --roi V1 --out v1.npy
  berg-onnx encode a.jpg b.png --subject 2 --roi lateral --device cuda --out r.npy
  berg-onnx encode stimuli.npy --subject 1 --roi FFA-1 --batch-size 16 --out r.npy
  berg-onnx encode photos/ --subject 1 --roi V1 --berg-dir export_dir --out v1.npy"""


class RowLabels(Sequence[str]):
    """``path[0]``, ``path[1]``, ... made when asked: an array of 10^9 rows costs nothing
    before the output budget has been checked."""

    def __init__(self, path: str, n: int) -> None:
        self.path, self.n = path, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        i = range(self.n)[i]  # IndexError beyond the rows, negative indices from the end
        return f"{self.path}[{i}]"


def collect_images(args: argparse.Namespace) -> tuple[Any, Sequence[str], list[Path]]:
    """(stimulus, row labels, input files) from one .npy or files and folders (read_inputs)."""
    from berg_onnx.inputs.stimulus import as_stimulus, read_inputs

    npy, scan = read_inputs(args.images)
    if npy is not None:  # header checked, memory-mapped (streamed), validated
        path = Path(args.images[0])
        return npy, RowLabels(str(path), len(npy)), [path]
    if scan.skipped:  # said after a successful run, so that an error stays one line
        args.notes.append(scan.summary())
    stimulus = as_stimulus(list(scan.files), on_error=args.on_error)
    return stimulus, [str(p) for p in scan.files], list(scan.files)


def write_output(out: Path, responses: np.ndarray, labels: Sequence[str], berg, model) -> str:
    """Write the responses by ``out``'s suffix (.npy, or a NIfTI in the subject's space) and
    the .paths.txt beside it, as one pair (outputs.py); returns what was written."""
    from berg_onnx.utils.outputs import is_nifti_path, write_responses

    write = None
    if is_nifti_path(out):
        from berg_onnx.brain.runs import nifti_writer

        write = nifti_writer(out, berg, model)
    listing = write_responses(out, responses, labels, write=write)
    return f"{out} and {listing}"


def run(args: argparse.Namespace) -> int:
    from berg_onnx.utils.outputs import RESPONSE_SUFFIXES, check_output, is_nifti_path

    out = Path(args.out)
    check_output(out, RESPONSE_SUFFIXES)  # before any work; again below against the inputs
    if is_nifti_path(out):
        from berg_onnx.brain.volume import require_nibabel

        require_nibabel()
    spec = load_catalog().model(DEFAULT_MODEL_ID)
    spec.check_subject(args.subject)  # argument errors before scanning folders
    spec.check_roi(args.roi)
    args.notes = []
    stimulus, labels, inputs = collect_images(args)
    check_output(out, RESPONSE_SUFFIXES, inputs)
    berg = make_berg(args)
    model = berg.get_encoding_model(
        DEFAULT_MODEL_ID, args.subject, {"roi": args.roi}, args.device, args.precision
    )
    responses = berg.encode(model, stimulus, show_progress=show_progress(args))
    failures = getattr(stimulus, "failures", ())
    for f in failures:  # --on-error skip: each left-out image, by name
        print(f"berg-onnx: skipped {f.source}: {' '.join(f.reason.split())}", file=sys.stderr)
    if failures:
        keep = stimulus.ok_rows()
        if not len(keep):
            raise CLIError(f"none of the {len(labels)} images could be read; nothing written")
        responses, labels = responses[keep], [labels[i] for i in keep]
    written = write_output(out, responses, labels, berg, model)
    skipped = f", {len(failures)} skipped" if failures else ""
    for text in args.notes:
        note(args, text)
    print(
        f"wrote {written} ({responses.shape[0]} images x {responses.shape[1]} voxels, "
        f"{model.provider.replace('ExecutionProvider', '')}{skipped})"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `encode` command's options."""
    p = add_command(sub, "encode", "predict responses to images", EXAMPLES)
    p.add_argument(
        "images",
        nargs="+",
        help="image files, folders (recursive; hidden files skipped; every extension Pillow "
        "opens), or one .npy (N,3,H,W) array",
    )
    p.add_argument("--subject", type=int, required=True, help=subjects_help())
    p.add_argument("--roi", required=True, help=rois_help())
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU cores to use (default: all)"
    )
    p.add_argument(
        "--on-error",
        default="fail",
        choices=["fail", "skip"],
        help="an image that cannot be read: fail = stop, write nothing (default); "
        "skip = leave it out, name it on stderr",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="int8: opt-in faster readout, ~0.01 max abs difference (if exported)",
    )
    p.add_argument("--out", required=True, help="responses .npy (paths list written beside it)")
    progress_flags(p)
    p.set_defaults(func=run)
