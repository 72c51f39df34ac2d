"""``berg-onnx control``: univariate or multivariate RNC on a run store, into a result file.

``add_parser(subparsers)`` adds the command; ``run(args)`` runs it (errors are BERGErrors,
which the CLI's main prints as one line). The multivariate search records its state in
``NAME.search/`` beside ``--out NAME.json`` after every generation: the same command run
again after an interruption resumes there, and the folder is removed once the result is
written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from berg_onnx.cli._common import make_berg
from berg_onnx.control import _common as c
from berg_onnx.errors import InvalidParameterError

EXAMPLES = """examples:
  berg-onnx control grid.zarr --rois V1 V4 --univariate --cv --out v1_v4_uni.json
  berg-onnx control grid.zarr --rois V1 V4 --multivariate --condition disentangle \\
      --out v1_v4_dis.json                      # interrupted? run it again: it resumes"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    help = "relational neural control (RNC) of two ROIs on a run store"
    p = subparsers.add_parser(
        "control",
        help=help,
        description=help + " (spec: Gifford et al., univariate and multivariate RNC)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="run store written by berg-onnx run (a .zarr folder)")
    p.add_argument("--rois", nargs=2, required=True, metavar=("ROI_1", "ROI_2"))
    method = p.add_mutually_exclusive_group(required=True)
    method.add_argument("--univariate", action="store_true", help="mean-response RNC")
    method.add_argument("--multivariate", action="store_true", help="RSA RNC (genetic search)")
    p.add_argument(
        "--condition",
        choices=["align", "disentangle"],
        default="align",
        help="multivariate: align or disentangle (default align)",
    )
    p.add_argument(
        "--cv",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="leave one subject out, with test-subject statistics (default off)",
    )
    p.add_argument(
        "--subjects",
        nargs="+",
        type=int,
        default=None,
        help="subjects to use (default: every subject holding both ROIs)",
    )
    p.add_argument("--seed", type=int, default=c.SEED, help=f"default {c.SEED}")
    p.add_argument("--ncsnr-threshold", type=float, default=c.NCSNR_THRESHOLD)
    p.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="images per condition / batch (default 25 univariate, 50 multivariate)",
    )
    p.add_argument("--null-samples", type=int, default=c.NULL_SAMPLES)
    p.add_argument("--margin", type=float, default=0.04, help="univariate: baseline margin")
    p.add_argument("--generations", type=int, default=2000, help="multivariate")
    p.add_argument("--n-batches", type=int, default=200, help="multivariate: batches kept")
    p.add_argument("--permutations", type=int, default=c.STATS_SAMPLES)
    p.add_argument("--bootstrap", type=int, default=c.STATS_SAMPLES)
    p.add_argument("--memory", default="2GB", help="multivariate memory budget (default 2GB)")
    p.add_argument(
        "--engine",
        choices=["auto", "rsm", "gram"],
        default="auto",
        help="multivariate: precomputed RSMs or per-batch Gram products",
    )
    p.add_argument("--out", required=True, help="result file NAME.json (arrays in NAME.npz)")
    p.add_argument("--figure", default=None, help="also draw the result: .png, .pdf or .svg")
    p.add_argument("--berg-dir", help="read ncsnr from this export (default: the store's source)")
    p.add_argument("--repo-id", help="read ncsnr from this Hub repo")
    p.add_argument("--revision", help="Hub revision")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _berg(args):
    """The BERG the flags name (as every command builds it), or None: the store's source."""
    if not (args.berg_dir or args.repo_id or args.revision):
        return None
    return make_berg(args)


def _draw(result, path: str | None) -> None:
    if path is None:
        return
    from berg_onnx.control.figures import figure
    from berg_onnx.utils.fileio import atomic_path

    out = Path(path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise InvalidParameterError(f"--figure must be .png, .pdf or .svg, got {out}")
    with atomic_path(out) as tmp:
        figure(result).savefig(tmp, format=fmt)
    print(f"wrote {out}")


def run(args: argparse.Namespace) -> int:
    from berg_onnx.control._multivariate import multivariate
    from berg_onnx.control._univariate import univariate
    from berg_onnx.control.results import save_result

    out = Path(args.out)
    if args.figure is not None and Path(args.figure).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InvalidParameterError(f"--figure must be .png, .pdf or .svg, got {args.figure}")
    if out.suffix.lower() != ".json":
        raise InvalidParameterError(
            f"--out must name a .json file (arrays go beside it), got {out}"
        )
    show = not args.quiet and sys.stderr.isatty()
    common = dict(
        cv=args.cv,
        subjects=args.subjects,
        null_samples=args.null_samples,
        ncsnr_threshold=args.ncsnr_threshold,
        seed=args.seed,
        permutations=args.permutations,
        bootstrap=args.bootstrap,
        berg=_berg(args),
        show_progress=show,
    )
    roi_1, roi_2 = args.rois
    if args.univariate:
        result = univariate(
            args.store, roi_1, roi_2, n_images=args.n_images or 25, margin=args.margin, **common
        )
        save_result(result, out, {"method": "univariate"})
        _draw(result, args.figure)
        folds = result.folds if args.cv else (result,)
        lines = [
            f"{name}: {len(f.controlling_images[name])} images"
            for f in folds[:1]
            for name in f.controlling_images
        ]
        print(f"wrote {out} (univariate RNC {roi_1} vs {roi_2}; " + ", ".join(lines) + ")")
        return 0
    search = out.with_suffix(".search")
    if search.is_dir() and not args.quiet:
        print(f"berg-onnx: resuming the search recorded in {search}", file=sys.stderr)
    result = multivariate(
        args.store,
        roi_1,
        roi_2,
        condition=args.condition,
        generations=args.generations,
        n_batches=args.n_batches,
        n_images=args.n_images or 50,
        memory=args.memory,
        engine=args.engine,
        checkpoint=search,
        **common,
    )
    save_result(result, out, {"method": "multivariate"})
    shutil.rmtree(search, ignore_errors=True)
    _draw(result, args.figure)
    folds = result.folds if args.cv else (result,)
    scores = ", ".join(f"{f.best_score:.4f}" for f in folds)
    print(
        f"wrote {out} (multivariate RNC {roi_1} vs {roi_2}, {args.condition}: best score "
        f"{scores}; baseline {folds[0].baseline_score:.4f})"
    )
    return 0
