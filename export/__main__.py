"""python -m export synth|convert|publish."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from berg_onnx.constants import DEFAULT_MODEL_ID
from berg_onnx.errors import BERGError
from berg_onnx.source.catalog import load_catalog

EPILOG = """examples:
  python -m export synth --out berg_dir --subjects 1 --rois V1 FFA-1 lateral
  python -m export synth --out berg_dir --voxels V1=200 lateral=300 --seed 7
  python -m export convert --berg-dir berg_dir --out export_dir
  python -m export convert --berg-dir /data/berg --out export_dir --subjects 1 2 --rois V1
  python -m export convert --berg-dir berg_dir --out export_dir --int8
  python -m export convert --berg-dir berg_dir --out export_dir --int8=require
  python -m export publish export_dir --repo-id my-org/fmri-nsd-fwrf-onnx --dry-run
  python -m export demo --workdir berg-onnx-demo
"""


def _voxels(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        roi, sep, n = item.partition("=")
        if not sep or not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"--voxels takes ROI=N with N >= 1, got {item!r}")
        out[roi] = int(n)
    return out


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _print_int8(manifest, subjects: list[int] | None, rois: list[str] | None) -> None:
    """One line per converted model: its int8 scheme, error and speed-up, or why it has none."""
    for entry in manifest.models.values():
        if (subjects and entry.subject not in subjects) or (rois and entry.roi not in rois):
            continue
        if entry.onnx_int8 is not None and entry.int8_max_abs_vs_fp32 is not None:
            scheme = (entry.int8_scheme or {}).get("name", "?")
            print(
                f"int8 {entry.key}: {scheme}, max abs {entry.int8_max_abs_vs_fp32:.3g} vs fp32, "
                f"{entry.int8_speedup:.2f}x"
            )
        elif entry.int8_absent_reason:
            print(f"int8 {entry.key}: absent, fp32 only: {entry.int8_absent_reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export BERG fwRF checkpoints to verified ONNX models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a BERG-format synthetic model directory")
    p.add_argument("--out", type=Path, required=True, help="BERG directory to create")
    p.add_argument("--subjects", type=int, nargs="+", default=[1])
    p.add_argument("--rois", nargs="+", default=None, help="default: all 23 ROIs")
    p.add_argument("--voxels", nargs="+", default=[], metavar="ROI=N", help="voxel counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--readout-scale",
        type=_positive,
        default=1.0,
        help="multiply the readout weights (and responses' SD, ~0.1-0.3) by this",
    )
    p.add_argument(
        "--rf-sharpness",
        type=_positive,
        default=1.0,
        help="divide the receptive fields' widths by this (> 1 sharper, < 1 broader)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("convert", help="export a BERG directory to ONNX + npz + manifest")
    p.add_argument("--berg-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="export directory")
    p.add_argument("--subjects", type=int, nargs="+", default=None)
    p.add_argument("--rois", nargs="+", default=None)
    p.add_argument(
        "--int8",
        nargs="?",
        const="auto",
        default=False,
        choices=["auto", "require"],
        help="also write the opt-in int8-readout tier, its scheme chosen per model by "
        "measured error; a model no scheme suits keeps fp32 only (the reason is printed). "
        "--int8=require makes that an error",
    )
    p.add_argument(
        "--int8-max-abs",
        type=_positive,
        default=None,
        metavar="X",
        help="the int8 tier's tolerance against fp32 on natural photographs (default 0.03)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("publish", help="upload an export to a Hugging Face Hub repo")
    p.add_argument("export_dir", type=Path)
    p.add_argument("--repo-id", required=True, help="ORG/NAME")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded")

    p = sub.add_parser(
        "demo",
        help="synthesize a small model set (2 subjects), export it, encode sample photographs",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("berg-onnx-demo"),
        help="where to put berg_dir/, export/ (the --berg-dir to use next), photos/ and "
        "stimuli.npy (default: berg-onnx-demo)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    args = parser.parse_args(argv)
    spec = load_catalog().model(DEFAULT_MODEL_ID)
    start = time.perf_counter()
    try:
        if args.command == "synth":
            from .synth import Scales, synthesize

            voxels = _voxels(args.voxels)
            subjects = [spec.check_subject(s) for s in args.subjects]
            rois = [spec.check_roi(r).name for r in (args.rois or spec.roi_names)]
            for roi in voxels:
                spec.check_roi(roi)
            scales = Scales(readout=args.readout_scale, rf_sharpness=args.rf_sharpness)
            files = synthesize(
                args.out, spec, subjects, rois, voxels, args.seed, not args.quiet, scales
            )
            print(f"wrote {len(files)} files to {args.out} in {time.perf_counter() - start:.1f} s")
        elif args.command == "publish":
            from .publish import publish

            result = publish(
                args.export_dir, args.repo_id, args.revision, args.private, args.dry_run
            )
            if args.dry_run:
                for f in result:
                    print(f"{f.size:>12,d}  {f.sha256}  {f.name}")
                total = sum(f.size for f in result)
                print(f"{len(result)} files, {total / 1e6:.1f} MB (+ README.md model card)")
            else:
                print(f"published {args.export_dir} to {args.repo_id}; pin this revision:")
                print(result)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.workdir, args.seed, False if args.quiet else None)
        elif args.command == "convert":
            from .preflight import check_sources

            check_sources(args.berg_dir, spec, args.subjects, args.rois)  # before torch loads
            from .convert import convert
            from .int8_select import Tolerance

            tolerance = Tolerance(
                **({} if args.int8_max_abs is None else {"max_abs_vs_fp32": args.int8_max_abs})
            )
            manifest = convert(
                args.berg_dir,
                args.out,
                spec,
                args.subjects,
                args.rois,
                not args.quiet,
                args.int8,
                tolerance,
            )
            worst = max((m.max_abs_diff for m in manifest.models.values()), default=0.0)
            print(
                f"{len(manifest.models)} verified models in {args.out} "
                f"(max abs diff vs PyTorch {worst:.2g}) in {time.perf_counter() - start:.1f} s"
            )
            if args.int8:
                rois = [spec.check_roi(r).name for r in args.rois] if args.rois else None
                _print_int8(manifest, args.subjects, rois)
    except (BERGError, argparse.ArgumentTypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
