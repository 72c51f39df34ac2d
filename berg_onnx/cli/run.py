"""`berg-onnx run`: an in silico experiment, subjects x ROIs over one image set, into Zarr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from berg_onnx.cli._common import (
    CLIError,
    add_command,
    make_berg,
    progress_flags,
    show_progress,
)
from berg_onnx.constants import PRECISIONS
from berg_onnx.utils.outputs import label_text

EXAMPLES = """examples:
  berg-onnx run photos/ --subjects 1 2 --rois V1 FFA-1 --out experiment.zarr
  berg-onnx run stimuli.npy --subjects all --rois all --out grid.zarr --device cuda
  berg-onnx run photos/ --subjects 1 --rois all --out experiment.zarr   # again: resumes
  berg-onnx run photos/ --subjects all --rois all --out g.zarr --engine ray --ray-address H:6379"""


def grid_choice(values: list[str], what: str) -> Any:
    """``all`` or the values given (subjects as ints)."""
    if values == ["all"]:
        return "all"
    if what == "subjects":
        try:
            return [int(v) for v in values]
        except ValueError:
            raise CLIError(f"--subjects takes numbers or 'all', got {' '.join(values)}") from None
    return values


def check_out(out: str) -> None:
    """--out: a store folder, named *.zarr unless it is already one (or a URL)."""
    from berg_onnx.experiment.store import is_store_path

    if "://" in out or out.rstrip("/").lower().endswith(".zarr") or is_store_path(out):
        return
    raise CLIError(
        f"--out must be a Zarr store folder ending in .zarr (e.g. experiment.zarr), got {out}"
    )


def run(args: argparse.Namespace) -> int:
    from berg_onnx.engines import engine_from_cli, run_experiment

    check_out(args.out)
    berg = make_berg(args)
    try:
        report = run_experiment(
            berg,
            args.images,
            store=args.out,
            subjects=grid_choice(args.subjects, "subjects"),
            rois=grid_choice(args.rois, "rois"),
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
            device=args.device,
            precision=args.precision,
            show_progress=show_progress(args),
            engine=engine_from_cli(args.engine, args.ray_address, args.ray_actors),
            on_error=args.on_error,
            wait=args.wait,
        )
    except KeyboardInterrupt:
        print(
            f"berg-onnx: completed chunks are kept in {args.out}; run again to resume",
            file=sys.stderr,
        )
        raise
    except OSError as e:  # disk full, permissions...: what failed, where, and what is kept
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise CLIError(
            f"{e.strerror or e}{where} while running into {args.out}; the chunks completed "
            "are kept: fix that and run the same command again to resume"
        ) from None
    if not args.quiet:
        for text in report.notes:
            print(f"berg-onnx: {text}", file=sys.stderr)
    for label, why in report.failed:  # each NaN row, by name, as encode names what it skips
        print(f"berg-onnx: skipped {label_text(label)}: {why}", file=sys.stderr)
    state = "complete" if report.complete else "incomplete"
    failed = f", {len(report.failed)} images could not be read (NaN rows)" if report.failed else ""
    print(
        f"{args.out}: {report.n_images} images x {len(report.models)} models, {state} "
        f"({report.chunks_written} chunks written, {report.chunks_already_complete} already "
        f"complete, {report.seconds:.1f} s{failed})"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `run` command's options."""
    p = add_command(
        sub,
        "run",
        "an in silico experiment: subjects x ROIs over one image set, into Zarr",
        EXAMPLES,
    )
    p.add_argument("images", nargs="+", help="image files, folders, or one .npy (N,3,H,W) array")
    p.add_argument("--subjects", nargs="+", required=True, help="subject numbers, or all")
    p.add_argument("--rois", nargs="+", required=True, help="ROI names, or all")
    p.add_argument("--out", required=True, help="the Zarr store (a folder, e.g. grid.zarr)")
    p.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default 256)")
    p.add_argument("--overwrite", action="store_true", help="delete the store and start over")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    progress_flags(p)
    p.add_argument(
        "--on-error",
        default="fail",
        choices=["fail", "skip"],
        help="an image that cannot be read: fail = stop before writing anything, naming "
        "every such image (default); skip = NaN rows, recorded in the store and named",
    )
    p.add_argument(
        "--wait", action="store_true", help="if another run writes the store, wait for it"
    )
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="ray: [ray] extra")
    p.add_argument("--ray-address", help="HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--ray-actors", type=int, default=None, help="actors per model group")
    p.set_defaults(func=run)
