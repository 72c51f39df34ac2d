"""The berg-onnx command line: a thin layer over the Python API.

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import load_catalog
from .constants import DEFAULT_MODEL_ID, ENV_CACHE, ENV_REPO, ENV_REVISION, check_positive_int
from .errors import BERGError, InvalidParameterError
from .manifest import model_key

#: A 69-byte ONNX graph (Identity) used by `doctor` to try each execution provider.
_PROBE_MODEL = base64.b64decode(
    "CAg6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAN"
)
ORT_FLAVOURS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
)


_OVERLAP_HELP = "which of several overlapping ROIs wins (default: refuse overlaps)"


class CLIError(Exception):
    """A user error the CLI reports as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other berg-onnx error (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _berg(args: argparse.Namespace):
    from .api import BERG

    batch_size, threads = getattr(args, "batch_size", None), getattr(args, "threads", None)
    if args.berg_dir:
        return BERG(berg_dir=args.berg_dir, batch_size=batch_size, threads=threads)
    berg = BERG(
        repo_id=args.repo_id, revision=args.revision, batch_size=batch_size, threads=threads
    )
    berg.store.fail_fast = True  # interactive: an unreachable Hub is one line, at once
    return berg


def _show_progress(args: argparse.Namespace) -> bool:
    """--progress/--no-progress if given; else a bar only on a terminal, and not with --quiet."""
    if args.progress is not None:
        return args.progress
    return not args.quiet and sys.stderr is not None and sys.stderr.isatty()


def _note(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"berg-onnx: {message}", file=sys.stderr)


def collect_images(args: argparse.Namespace) -> tuple[Any, list[str], list[Path]]:
    """(stimulus, row labels, input files) from files, folders (files.py's rules) or one .npy."""
    from .files import scan_images
    from .stimulus import as_stimulus, load_npy_stimulus

    items = args.images
    npys = [i for i in items if i.lower().endswith(".npy")]
    if npys:
        if len(items) != 1:
            raise CLIError("give either one .npy stimulus array or image files/folders, not both")
        path = Path(npys[0])
        if not path.is_file():
            raise CLIError(f"no such file: {path}")
        # header checked, memory-mapped (streamed), then validated before any model loads
        stimulus = load_npy_stimulus(path)
        return stimulus, [f"{path}[{i}]" for i in range(len(stimulus))], [path]
    scan = scan_images(items)
    if scan.skipped:  # said after a successful run, so that an error stays one line
        args.notes.append(scan.summary())
    stimulus = as_stimulus(list(scan.files), on_error=args.on_error)
    return stimulus, [str(p) for p in scan.files], list(scan.files)


def write_output(out: Path, responses: np.ndarray, labels: list[str], berg, model) -> str:
    """Write the responses by ``out``'s suffix (.npy, or a NIfTI in the subject's space) and
    the .paths.txt beside it, as one pair (outputs.py); returns what was written."""
    from .outputs import is_nifti_path, write_responses

    write = None
    if is_nifti_path(out):
        from .brainspace import nifti_writer

        write = nifti_writer(out, berg, model)
    listing = write_responses(out, responses, labels, write=write)
    return f"{out} and {listing}"


def cmd_encode(args: argparse.Namespace) -> int:
    from .outputs import RESPONSE_SUFFIXES, check_output, is_nifti_path

    out = Path(args.out)
    check_output(out, RESPONSE_SUFFIXES)  # before any work; again below against the inputs
    if is_nifti_path(out):
        from .volume import require_nibabel

        require_nibabel()
    spec = load_catalog().model(DEFAULT_MODEL_ID)
    spec.check_subject(args.subject)  # argument errors before scanning folders
    spec.check_roi(args.roi)
    args.notes = []
    stimulus, labels, inputs = collect_images(args)
    check_output(out, RESPONSE_SUFFIXES, inputs)
    berg = _berg(args)
    model = berg.get_encoding_model(
        DEFAULT_MODEL_ID, args.subject, {"roi": args.roi}, args.device, args.precision
    )
    responses = berg.encode(model, stimulus, show_progress=_show_progress(args))
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
    for note in args.notes:
        _note(args, note)
    print(
        f"wrote {written} ({responses.shape[0]} images x {responses.shape[1]} voxels, "
        f"{model.provider.replace('ExecutionProvider', '')}{skipped})"
    )
    return 0


def _grid_choice(values: list[str], what: str) -> Any:
    """``all`` or the values given (subjects as ints)."""
    if values == ["all"]:
        return "all"
    if what == "subjects":
        try:
            return [int(v) for v in values]
        except ValueError:
            raise CLIError(f"--subjects takes numbers or 'all', got {' '.join(values)}") from None
    return values


def cmd_run(args: argparse.Namespace) -> int:
    from .engines import engine_from_cli
    from .experiment import run_experiment

    berg = _berg(args)
    try:
        report = run_experiment(
            berg,
            args.images,
            store=args.out,
            subjects=_grid_choice(args.subjects, "subjects"),
            rois=_grid_choice(args.rois, "rois"),
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
            device=args.device,
            precision=args.precision,
            show_progress=not args.quiet,
            engine=engine_from_cli(args.engine, args.ray_address, args.ray_actors),
        )
    except KeyboardInterrupt:
        print(
            f"berg-onnx: completed chunks are kept in {args.out}; run again to resume",
            file=sys.stderr,
        )
        raise
    state = "complete" if report.complete else "incomplete"
    print(
        f"{args.out}: {report.n_images} images x {len(report.models)} models, {state} "
        f"({report.chunks_written} chunks written, {report.chunks_already_complete} already "
        f"complete, {report.seconds:.1f} s)"
    )
    return 0


def cmd_volume(args: argparse.Namespace) -> int:
    from .brainspace import volume_command
    from .outputs import NIFTI_SUFFIXES, check_output

    out = Path(args.out)
    check_output(out, NIFTI_SUFFIXES)  # before any work
    print(
        volume_command(
            args.input,
            args.subject,
            args.roi,
            out,
            fill=args.fill,
            overlap=args.overlap,
            berg_dir=args.berg_dir,
            repo_id=args.repo_id,
            revision=args.revision,
        )
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .brainspace import FIGURE_SUFFIXES, plot_command
    from .outputs import check_output

    out = Path(args.out)
    check_output(out, FIGURE_SUFFIXES)  # before any work
    print(
        plot_command(
            args.input,
            args.subject,
            args.roi,
            out,
            image=args.image,
            accuracy=args.accuracy,
            view=args.view,
            overlap=args.overlap,
            berg_dir=args.berg_dir,
            repo_id=args.repo_id,
            revision=args.revision,
        )
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    berg = _berg(args)
    store = berg.store
    problem = None
    try:
        manifest = store.manifest()
    except BERGError as e:  # unreachable Hub, offline without a cached manifest, no export
        manifest, problem = None, " ".join(str(e).split())
    print(f"source: {store.describe()}")
    if problem:
        print(f"  could not read the export's manifest: {problem}")
    for model_id, spec in berg.catalog.models.items():
        print(f"{model_id}: {spec.description}")
        print(f"  subjects: {', '.join(map(str, spec.subjects))}")
        print(f"  {'ROI':<12} {'split':>5} {'voxels (sub-01)':>16}  status")
        for roi in spec.rois:
            nv = spec.voxels.get(1, {}).get(roi.name, "?")
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


def cmd_metadata(args: argparse.Namespace) -> int:
    from .fileio import atomic_path
    from .metadata import flatten
    from .outputs import check_output

    if args.out:
        check_output(Path(args.out), (".npz",))  # before anything is printed
    berg = _berg(args)
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


def cmd_download(args: argparse.Namespace) -> int:
    berg = _berg(args)
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

    show = _show_progress(args)
    for entry in tqdm(files, desc="download", unit="file", disable=not show, file=sys.stderr):
        berg.store.fetch(entry)
    total = sum(f.size for f in files)
    print(f"{len(files)} files ({total / 1e6:.1f} MB) verified in {berg.store.describe()}")
    if absent:
        print(f"not in this export (skipped): {', '.join(absent)}")
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from .web import serve

    serve(Path(args.berg_dir), args.port, Path(args.web_dir) if args.web_dir else None)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    from huggingface_hub import constants as hf

    from . import __version__
    from .hub import hub_settings
    from .session import available_cores, default_threads

    print(f"berg-onnx {__version__}, Python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"huggingface_hub {importlib.metadata.version('huggingface-hub')}")
    flavours = []
    for dist in ORT_FLAVOURS:
        try:
            flavours.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    print(f"onnxruntime flavours installed: {', '.join(flavours) or 'none'}")
    if len(flavours) > 1:
        print(
            "WARNING: more than one onnxruntime flavour is installed; they share one module "
            "folder and break each other. Uninstall all of them, then install only one."
        )
    print(f"onnxruntime module {ort.__version__}, device {ort.get_device()}")
    print(f"providers available: {', '.join(ort.get_available_providers())}")
    for provider in ort.get_available_providers():
        try:
            session = ort.InferenceSession(_PROBE_MODEL, providers=[provider])
            used = session.get_providers()[0]
            state = "usable" if used == provider else f"NOT usable (fell back to {used})"
        except Exception as e:  # noqa: BLE001 - report whatever the provider raised
            state = f"NOT usable ({str(e).splitlines()[0][:120]})"
        print(f"  {provider}: {state}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("  CUDA: not available in this onnxruntime (see README, GPU install)")
    print(f"threads: {default_threads()} (cores usable by this process: {available_cores()})")
    repo, revision, cache = hub_settings(args.repo_id, args.revision)
    print(f"Hub repo: {repo}@{revision} (env {ENV_REPO}, {ENV_REVISION}); endpoint {hf.ENDPOINT}")
    if args.berg_dir:
        print(f"export directory: {args.berg_dir} (--berg-dir; the Hub is not used)")
    print(f"cache: {cache or hf.HF_HUB_CACHE} (env {ENV_CACHE} or HF_HUB_CACHE)")
    print(f"offline mode (HF_HUB_OFFLINE): {'on' if hf.HF_HUB_OFFLINE else 'off'}")
    _print_cached(cache)
    return 0


def _print_cached(cache: Path | None) -> None:
    """Exported models in the cache, per Hub repo (any repo: pins and forks differ)."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except Exception:  # noqa: BLE001 - an absent or unreadable cache just means nothing cached
        print("cached models: none")
        return
    found = {}
    for r in info.repos:
        files = {f.file_name for rev in r.revisions for f in rev.files}
        names = sorted(n.removesuffix(".onnx") for n in files if n.endswith(".onnx"))
        if names:
            found[r.repo_id] = names
    if not found:
        print("cached models: none")
    for repo_id, names in sorted(found.items()):
        print(f"cached models in {repo_id}: {', '.join(names)}")


EXAMPLES = {
    "encode": """examples:
  berg-onnx encode photos/ --subject 1 --roi V1 --out v1.npy
  berg-onnx encode a.jpg b.png --subject 2 --roi lateral --device cuda --out r.npy
  berg-onnx encode stimuli.npy --subject 1 --roi FFA-1 --batch-size 16 --out r.npy
  berg-onnx encode photos/ --subject 1 --roi V1 --berg-dir export_dir --out v1.npy""",
    "run": """examples:
  berg-onnx run photos/ --subjects 1 2 --rois V1 FFA-1 --out experiment.zarr
  berg-onnx run stimuli.npy --subjects all --rois all --out grid.zarr --device cuda
  berg-onnx run photos/ --subjects 1 --rois all --out experiment.zarr   # again: resumes
  berg-onnx run photos/ --subjects all --rois all --out g.zarr --engine ray --ray-address H:6379""",
    "volume": """examples:
  berg-onnx volume experiment.zarr --subject 1 --roi V1 --out sub-01_V1.nii.gz
  berg-onnx volume experiment.zarr --subject 1 --roi V1 V2 V3 hV4 --out early.nii.gz
  berg-onnx volume experiment.zarr --subject 1 --roi early V1 --overlap last --out e.nii.gz
  berg-onnx volume v1.npy --subject 1 --roi V1 --fill nan --out v1.nii.gz""",
    "plot": """examples:
  berg-onnx plot v1.npy --subject 1 --roi V1 --out v1.png           # mean over images
  berg-onnx plot v1.nii.gz --subject 1 --roi V1 --image 3 --out img3.png
  berg-onnx plot experiment.zarr --subject 2 --roi FFA-1 --view mosaic --out ffa.png
  berg-onnx plot --accuracy --subject 1 --roi V1 --out v1_accuracy.png""",
    "list": """examples:
  berg-onnx list
  berg-onnx list --berg-dir export_dir""",
    "metadata": """examples:
  berg-onnx metadata --subject 1 --roi V1
  berg-onnx metadata --subject 1 --out sub-01_metadata.npz""",
    "download": """examples:
  berg-onnx download --subject 1 --roi V1 FFA-1
  berg-onnx download --subject 1 2   # every ROI of subjects 1 and 2""",
    "doctor": """examples:
  berg-onnx doctor""",
    "web": """examples:
  berg-onnx web --berg-dir export_dir              # then open http://127.0.0.1:8765/
  berg-onnx web --berg-dir export_dir --port 9000""",
}


def build_parser() -> argparse.ArgumentParser:
    catalog = load_catalog()
    parser = _Parser(
        prog="berg-onnx",
        description="Predict fMRI responses to images with BERG's fmri-nsd-fwrf models "
        "on onnxruntime.",
        epilog="\n\n".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"berg-onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--berg-dir", help="local export directory (default: the Hub)")
    source.add_argument("--repo-id", help=f"Hub repo (default: {catalog.hub_repo_id})")
    source.add_argument("--revision", help="Hub revision (default: the pinned one)")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[source],
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    spec = catalog.model(DEFAULT_MODEL_ID)
    subjects_help = f"subject: {', '.join(map(str, spec.subjects))}"
    rois_help = f"ROI: {', '.join(spec.roi_names)}"

    def progress_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quiet", action="store_true", help="no progress bar, no notes on stderr")
        p.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="force the progress bar on or off (default: on when stderr is a terminal)",
        )

    p = add("encode", "predict responses to images")
    p.add_argument(
        "images",
        nargs="+",
        help="image files, folders (recursive; hidden files skipped; every extension Pillow "
        "opens), or one .npy (N,3,H,W) array",
    )
    p.add_argument("--subject", type=int, required=True, help=subjects_help)
    p.add_argument("--roi", required=True, help=rois_help)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="CPU cores to use (default: all)"
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
        choices=["fp32", "int8"],
        help="int8: opt-in faster readout, ~0.01 max abs difference (if exported)",
    )
    p.add_argument("--out", required=True, help="responses .npy (paths list written beside it)")
    progress_flags(p)
    p.set_defaults(func=cmd_encode)

    p = add("run", "an in silico experiment: subjects x ROIs over one image set, into Zarr")
    p.add_argument("images", nargs="+", help="image files, folders, or one .npy (N,3,H,W) array")
    p.add_argument("--subjects", nargs="+", required=True, help="subject numbers, or all")
    p.add_argument("--rois", nargs="+", required=True, help="ROI names, or all")
    p.add_argument("--out", required=True, help="the Zarr store (a folder, e.g. grid.zarr)")
    p.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default 256)")
    p.add_argument("--overwrite", action="store_true", help="delete the store and start over")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="ray: [ray] extra")
    p.add_argument("--ray-address", help="HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--ray-actors", type=int, default=None, help="actors per model group")
    p.set_defaults(func=cmd_run)
    p = add("volume", "responses (a run store or encode output) as a NIfTI in the subject's space")
    p.add_argument("input", help="run store (.zarr) or encode output (.npy, .nii, .nii.gz)")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--roi", nargs="+", required=True, help="one ROI, or several of a store")
    p.add_argument("--overlap", choices=["first", "last"], default=None, help=_OVERLAP_HELP)
    p.add_argument("--fill", type=float, default=0.0, help="value outside the ROI, e.g. nan (0)")
    p.add_argument("--out", required=True, help=".nii or .nii.gz (rows' paths written beside)")
    p.set_defaults(func=cmd_volume)

    p = add("plot", "draw responses on brain slices, or a model's accuracy (--accuracy)")
    p.add_argument("input", nargs="?", help="encode output (.npy, .nii.gz) or run store (.zarr)")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--roi", nargs="+", required=True)
    p.add_argument("--image", type=int, default=None, help="row to show (default: the mean)")
    p.add_argument("--view", choices=["ortho", "mosaic"], default="ortho")
    p.add_argument("--overlap", choices=["first", "last"], default=None, help=_OVERLAP_HELP)
    p.add_argument("--accuracy", action="store_true", help="ncsnr, explained variance, r2")
    p.add_argument("--out", required=True, help="figure file: .png, .pdf or .svg")
    p.set_defaults(func=cmd_plot)

    p = add("list", "list models, ROIs, voxel counts and what is cached")
    p.set_defaults(func=cmd_list)

    p = add("metadata", "summarise (and optionally save) a subject's metadata")
    p.add_argument("--subject", type=int, required=True, help=subjects_help)
    p.add_argument("--roi", default=None, help=f"default: every ROI; {rois_help}")
    p.add_argument("--out", default=None, help="save as .npz")
    p.set_defaults(func=cmd_metadata)

    p = add("download", "prefetch models for offline use")
    p.add_argument("--subject", type=int, nargs="+", required=True, help=subjects_help)
    p.add_argument("--roi", nargs="+", default=None, help=f"default: every ROI; {rois_help}")
    progress_flags(p)
    p.set_defaults(func=cmd_download)

    p = add("doctor", "check the installation: versions, providers, CUDA, cache")
    p.set_defaults(func=cmd_doctor)

    from .web import add_arguments as add_web_arguments

    help = "serve the browser page and a local export on 127.0.0.1 (needs a checkout's web/)"
    p = sub.add_parser(
        "web",
        help=help,
        description=help,
        epilog=EXAMPLES["web"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_web_arguments(p)
    p.set_defaults(func=cmd_web, repo_id=None, revision=None)

    from .control._cli import add_parser as add_control_parser  # berg-onnx control (RNC)

    add_control_parser(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        return check_positive_int(int(text), "value")
    except (ValueError, InvalidParameterError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as given
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    if args.berg_dir and (args.repo_id or args.revision):
        print(
            "berg-onnx: error: give --berg-dir or --repo-id/--revision, not both", file=sys.stderr
        )
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:  # `berg-onnx list | head`: the reader left; not an error
        _silence_stdout()
        return 0
    except (CLIError, BERGError, OSError) as e:  # BERGError covers every berg_onnx error
        message = " ".join(str(e).split())  # one line
        print(f"berg-onnx: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("berg-onnx: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
