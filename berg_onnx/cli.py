"""The berg-onnx command line: a thin layer over the Python API.

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import load_catalog
from .constants import DEFAULT_MODEL_ID, ENV_CACHE, ENV_REPO, ENV_REVISION
from .errors import BERGError, InvalidParameterError, StimulusError
from .manifest import model_key

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
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


class CLIError(Exception):
    """A user error the CLI reports as one line."""


def _berg(args: argparse.Namespace):
    from .api import BERG

    if args.berg_dir:
        return BERG(berg_dir=args.berg_dir, batch_size=getattr(args, "batch_size", None))
    return BERG(
        repo_id=args.repo_id, revision=args.revision, batch_size=getattr(args, "batch_size", None)
    )


def collect_images(items: list[str]) -> tuple[Any, list[str]]:
    """(stimulus, row labels) from files, folders (recursive, sorted) or one .npy array."""
    npys = [i for i in items if i.lower().endswith(".npy")]
    if npys:
        if len(items) != 1:
            raise CLIError("give either one .npy stimulus array or image files/folders, not both")
        path = Path(npys[0])
        if not path.is_file():
            raise CLIError(f"no such file: {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # streamed, not loaded
        except ValueError as e:
            raise CLIError(f"{path} is not a plain numpy array: {e}") from None
        return array, [f"{path}[{i}]" for i in range(len(array))]
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise CLIError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise CLIError(f"no such file or directory: {p}")
    return paths, [str(p) for p in paths]


def _check_writable(out: Path) -> None:
    """Fail before hours of encoding, not after: probe-write beside the output."""
    import tempfile

    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"output folder does not exist: {parent}")
    if out.is_dir():
        raise CLIError(f"--out {out} is a directory; give a file name ending in .npy")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".berg-onnx-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIError(f"cannot write to {parent} (for {out}): {e.strerror or e}") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from .fileio import atomic_path

    out = Path(args.out)
    if out.suffix != ".npy":
        raise CLIError(f"--out must end in .npy, got {out}")
    _check_writable(out)
    stimulus, labels = collect_images(args.images)
    berg = _berg(args)
    model = berg.get_encoding_model(
        DEFAULT_MODEL_ID, args.subject, {"roi": args.roi}, args.device, args.precision
    )
    responses = berg.encode(model, stimulus, show_progress=not args.quiet)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, responses)
    listing = out.with_suffix(".paths.txt")
    with atomic_path(listing) as tmp:
        tmp.write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(
        f"wrote {out} ({responses.shape[0]} images x {responses.shape[1]} voxels, "
        f"{model.provider.replace('ExecutionProvider', '')}) and {listing}"
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


def cmd_list(args: argparse.Namespace) -> int:
    berg = _berg(args)
    store = berg.store
    try:
        manifest = store.manifest()
    except BERGError:
        manifest = None
    print(f"source: {store.describe()}")
    for model_id, spec in berg.catalog.models.items():
        print(f"{model_id}: {spec.description}")
        print(f"  subjects: {', '.join(map(str, spec.subjects))}")
        print(f"  {'ROI':<12} {'split':>5} {'voxels (sub-01)':>16}  status")
        for roi in spec.rois:
            nv = spec.voxels.get(1, {}).get(roi.name, "?")
            status = _status(store, manifest, model_id, roi.name, spec.subjects)
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
        _check_writable(out)
        flat = flatten(meta if args.roi else {roi: m for roi, m in per_roi.items()})
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **flat)
        print(f"wrote {out} ({len(flat)} arrays)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    berg = _berg(args)
    spec = berg.catalog.model(DEFAULT_MODEL_ID)
    rois = args.roi or list(spec.roi_names)
    manifest = berg.store.manifest()
    files = []
    for subject in args.subject:
        for roi in rois:
            s, r = spec.check_subject(subject), spec.check_roi(roi).name
            files += manifest.get(spec.model_id, s, r).files
    from tqdm.auto import tqdm

    for entry in tqdm(files, desc="download", unit="file", disable=args.quiet):
        berg.store.fetch(entry)
    total = sum(f.size for f in files)
    print(f"{len(files)} files ({total / 1e6:.1f} MB) verified in {berg.store.describe()}")
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
    repo, revision, cache = hub_settings()
    print(f"Hub repo: {repo}@{revision} (env {ENV_REPO}, {ENV_REVISION}); endpoint {hf.ENDPOINT}")
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
}


def build_parser() -> argparse.ArgumentParser:
    catalog = load_catalog()
    parser = argparse.ArgumentParser(
        prog="berg-onnx",
        description="Predict fMRI responses to images with BERG's fmri-nsd-fwrf models "
        "on onnxruntime.",
        epilog="\n\n".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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

    p = add("encode", "predict responses to images")
    p.add_argument("images", nargs="+", help="image files, folders, or one .npy (N,3,H,W) array")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--roi", required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "int8"],
        help="int8: opt-in faster readout, ~0.01 max abs difference (if exported)",
    )
    p.add_argument("--out", required=True, help="responses .npy (paths list written beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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

    p = add("list", "list models, ROIs, voxel counts and what is cached")
    p.set_defaults(func=cmd_list)

    p = add("metadata", "summarise (and optionally save) a subject's metadata")
    p.add_argument("--subject", type=int, required=True)
    p.add_argument("--roi", default=None, help="default: every ROI")
    p.add_argument("--out", default=None, help="save as .npz")
    p.set_defaults(func=cmd_metadata)

    p = add("download", "prefetch models for offline use")
    p.add_argument("--subject", type=int, nargs="+", required=True)
    p.add_argument("--roi", nargs="+", default=None, help="default: every ROI")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_download)

    p = add("doctor", "check the installation: versions, providers, CUDA, cache")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.berg_dir and (args.repo_id or args.revision):
        print(
            "berg-onnx: error: give --berg-dir or --repo-id/--revision, not both", file=sys.stderr
        )
        return 2
    try:
        return args.func(args)
    except (CLIError, BERGError, InvalidParameterError, StimulusError, OSError) as e:
        message = " ".join(str(e).split())  # one line
        print(f"berg-onnx: error: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `berg-onnx list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("berg-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
