"""Convert an original BERG directory into an export directory (ONNX + npz + manifest).

Idempotent and resumable: a model whose files and sources still match its
manifest entry is skipped; every file is written under a temporary name and
renamed into place only once verified, and the manifest is rewritten
atomically after each model, so an interrupted run loses at most the model it
was working on.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

import berg_onnx
import berg_onnx.source.catalog
import berg_onnx.source.manifest
import berg_onnx.utils.cpu
from berg_onnx.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError
from berg_onnx.source.catalog import ModelSpec
from berg_onnx.source.manifest import FileEntry, Manifest, ModelEntry, SplitEntry
from berg_onnx.source.metadata import flatten, load_npz
from berg_onnx.utils.fileio import atomic_path, sha256_file

from . import layout
from .checkpoint import check_source_size, load_checkpoint, load_pickled_npy
from .int8_select import PROCEDURE, Calibration, Selection, Tolerance, select, speedup
from .onnx_export import EXPORTER, OPSET, ExportError, export_onnx, reference_preprocess, verify
from .reference import build_model
from .samples import photographs

#: Natural photographs the int8 choice is measured on, and how many of them are timed.
CALIBRATION_IMAGES = 24
SPEED_IMAGES = 3


@dataclass(frozen=True)
class Job:
    subject: int
    roi: str
    sources: tuple[Path, ...]
    metadata: Path


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def plan(
    berg_dir: Path, spec: ModelSpec, subjects: Sequence[int] | None, rois: Sequence[str] | None
) -> list[Job]:
    """The (subject, ROI) pairs to convert; clear errors for a wrong dir or missing model."""
    if not layout.is_berg_dir(berg_dir):
        raise InvalidParameterError(
            f"{berg_dir} is not a BERG directory: expected the folder "
            f"{layout.WEIGHTS_DIR} inside it (the directory BERG downloads, holding "
            "encoding_models/). Create a synthetic one with: python -m export synth --out DIR"
        )
    found = sorted(
        {
            int(m.group(1))
            for p in (berg_dir / layout.WEIGHTS_DIR).glob("weights_sub-*.pt")
            if (m := re.match(r"weights_sub-(\d+)_roi-", p.name))
        }
    )
    explicit_subjects = bool(subjects)
    both_explicit = bool(subjects) and bool(rois)
    subjects = [spec.check_subject(s) for s in subjects] if subjects else found
    rois = [spec.check_roi(r).name for r in rois] if rois else list(spec.roi_names)
    jobs = []
    for s in subjects:
        for r in rois:
            sources = layout.checkpoint_paths(berg_dir, s, r, spec.roi(r).splits)
            meta = layout.metadata_path(berg_dir, s, r)
            missing = [p for p in [*sources, meta] if not p.is_file()]
            if missing and both_explicit:
                raise ModelNotFoundError(
                    f"{berg_dir} has no subject {s} ROI {r}: missing "
                    + ", ".join(str(p.relative_to(berg_dir)) for p in missing)
                )
            if not missing:
                jobs.append(Job(s, r, tuple(sources), meta))
    for r in rois if len(rois) < len(spec.roi_names) else []:
        if not any(j.roi == r for j in jobs):
            raise ModelNotFoundError(f"{berg_dir} has no complete model for ROI {r}")
    for s in subjects if explicit_subjects else []:
        if not any(j.subject == s for j in jobs):
            raise ModelNotFoundError(f"{berg_dir} has no complete model for subject {s}")
    if not jobs:
        raise ModelNotFoundError(f"{berg_dir} holds no fwRF checkpoints with metadata to convert")
    return jobs


def _up_to_date(entry: ModelEntry | None, out_dir: Path, src_sha: list[str], meta_sha: str) -> bool:
    """Whether ``entry``'s files are intact and made from these sources (int8 aside)."""
    if entry is None:
        return False
    if [
        s.source_sha256 for s in entry.splits
    ] != src_sha or entry.metadata_source_sha256 != meta_sha:
        return False
    return all(f.problem(out_dir / f.name) is None for f in entry.files)


def int8_current(entry: ModelEntry, tolerance: Tolerance | None = None) -> bool:
    """Whether ``entry``'s int8 tier (or its recorded absence) was chosen by this
    procedure with this tolerance: a tier made otherwise, e.g. with one fixed scheme
    before per-model choice, is chosen again."""
    sel = entry.int8_selection or {}
    want = asdict(tolerance or Tolerance())
    if sel.get("procedure") != PROCEDURE or sel.get("tolerance") != want:
        return False
    return entry.onnx_int8 is not None or bool(entry.int8_absent_reason)


def calibration_images() -> tuple[np.ndarray, str]:
    """The int8 choice's calibration set: natural photographs, preprocessed as verified."""
    photos = photographs(256, CALIBRATION_IMAGES)
    x = reference_preprocess(photos).numpy()
    return x, (
        f"{CALIBRATION_IMAGES} natural photographs (scikit-image's, crops and mirror images) "
        f"at batch 1 and as one batch of {CALIBRATION_IMAGES}"
    )


def as_tolerance(tolerance: Tolerance | float | None) -> Tolerance:
    """A Tolerance; a number sets only the check against PyTorch (``--int8-tolerance``)."""
    if isinstance(tolerance, Tolerance):
        return tolerance
    return Tolerance() if tolerance is None else Tolerance(max_abs_vs_reference=float(tolerance))


class _NoScheme(Exception):
    """No scheme met the tolerance: aborts the int8 file's atomic write, carrying why."""

    def __init__(self, selection: Selection) -> None:
        super().__init__(selection.reason)
        self.selection = selection


def export_int8(
    out_dir: Path,
    onnx_name: str,
    int8_name: str,
    reference: torch.nn.Module,
    photos: np.ndarray,
    tolerance: Tolerance | float | None = None,
) -> dict[str, Any]:
    """Choose ``onnx_name``'s int8 tier (``int8_select``) and write it to ``int8_name``;
    its ModelEntry fields.

    When no scheme meets the tolerance, nothing is written (a stale ``int8_name``
    is removed) and the fields say why in ``int8_absent_reason``. Raises
    ExportError only for a broken graph or a kernel bound that could fail.
    """
    tol = as_tolerance(tolerance)
    x, description = calibration_images()
    calibration = Calibration(out_dir / onnx_name, x, description)
    try:
        with atomic_path(out_dir / int8_name) as tmp:
            result = select(out_dir / onnx_name, tmp, reference, photos, calibration, tol)
            if result.chosen is None:
                raise _NoScheme(result)  # the temporary file is removed, nothing renamed
    except _NoScheme as e:
        (out_dir / int8_name).unlink(missing_ok=True)
        return {
            **_NO_INT8,
            "int8_selection": e.selection.record(),
            "int8_absent_reason": e.selection.reason,
        }
    trial = result.trial
    assert trial is not None
    measured, flags = berg_onnx.utils.cpu.current()
    speed = speedup(out_dir / onnx_name, out_dir / int8_name, x[:SPEED_IMAGES])
    return {
        **_NO_INT8,
        "onnx_int8": FileEntry.of(out_dir, int8_name),
        "int8_max_abs_diff": trial.vs_reference,
        "int8_scheme": result.chosen.as_dict(),
        "int8_tolerance": tol.max_abs_vs_reference,
        "int8_pair_bound": trial.pair_bound,
        "int8_verified_on": {
            "cpu": berg_onnx.utils.cpu.model_name(),
            "class": measured,
            "flags": list(flags),
        },
        "int8_verified_classes": berg_onnx.utils.cpu.int8_covered_classes(
            measured, trial.pair_bound
        ),
        "int8_max_abs_vs_fp32": trial.max_abs_vs_fp32,
        "int8_min_voxel_r": trial.min_voxel_r,
        "int8_speedup": speed["speedup"],
        "int8_selection": {**result.record(), "speed": speed},
    }


#: A ModelEntry's int8 fields, emptied.
_NO_INT8: dict[str, Any] = {
    "onnx_int8": None,
    "int8_max_abs_diff": None,
    "int8_scheme": None,
    "int8_tolerance": None,
    "int8_pair_bound": None,
    "int8_verified_on": None,
    "int8_verified_classes": (),
    "int8_max_abs_vs_fp32": None,
    "int8_min_voxel_r": None,
    "int8_speedup": None,
    "int8_selection": None,
    "int8_absent_reason": None,
}


def add_int8(
    berg_dir: Path,
    out_dir: Path,
    spec: ModelSpec,
    subject: int,
    roi: str,
    tolerance: Tolerance | float | None = None,
) -> ModelEntry:
    """(Re)choose the int8 tier of a model already exported to ``out_dir``.

    The model's fp32 entry and files stay as they were whatever happens (the
    int8 file is only renamed into place once verified); when no scheme meets
    the tolerance the entry records why (``int8_absent_reason``), so a caller
    such as the benchmark can report it and go on.
    """
    berg_dir, out_dir = Path(berg_dir), Path(out_dir)
    catalog = berg_onnx.source.catalog.load_catalog()
    manifest_path = out_dir / catalog.manifest_name
    manifest = Manifest.load(manifest_path)
    entry = manifest.get(spec.model_id, subject, roi)
    if entry.onnx_int8 is not None:  # a failure below must leave no stale int8 tier
        entry = dataclasses.replace(entry, **_NO_INT8)
        manifest.add(entry)
        manifest.write(manifest_path)
    paths = layout.checkpoint_paths(berg_dir, subject, roi, spec.roi(roi).splits)
    for p in paths:
        check_source_size(p)
    if [sha256_file(p) for p in paths] != [s.source_sha256 for s in entry.splits]:
        raise ModelLoadError(
            f"{berg_dir} no longer holds the checkpoints {entry.key} was exported from; "
            "re-run `python -m export convert` first"
        )
    checkpoints = [load_checkpoint(p) for p in paths]
    reference = build_model([(ck.encoder, ck.readout) for ck in checkpoints])
    int8_name = catalog.file_name("onnx_int8", spec.model_id, subject, roi)
    fields = export_int8(
        out_dir, entry.onnx.name, int8_name, reference, photographs(256, 8), tolerance
    )  # an absent tier is a result, recorded like a chosen one
    manifest.add(dataclasses.replace(entry, **fields))
    manifest.write(manifest_path)
    return manifest.models[entry.key]


def convert_one(
    job: Job,
    spec: ModelSpec,
    out_dir: Path,
    photos: np.ndarray,
    source_sha: Sequence[str],
    metadata_sha: str,
    int8: bool = False,
    tolerance: Tolerance | float | None = None,
) -> ModelEntry:
    catalog = berg_onnx.source.catalog.load_catalog()
    checkpoints = [load_checkpoint(p) for p in job.sources]
    for split, ck in enumerate(checkpoints, start=1):
        if ck.subject != job.subject or ck.split != split or ck.roi != job.roi:
            raise ModelLoadError(
                f"{ck.path} holds subject {ck.subject} ROI {ck.roi!r:.40} split {ck.split}, but "
                f"is filed as subject {job.subject} ROI {job.roi!r} split {split}; the file "
                "was renamed or moved: put each checkpoint under its own name"
            )
    nv = sum(ck.nv for ck in checkpoints)
    meta = load_pickled_npy(job.metadata)
    try:
        mask_count = int(np.count_nonzero(meta["fmri"]["roi_mask_volume"]))
    except (KeyError, TypeError) as e:
        raise ModelLoadError(f"{job.metadata}: no fmri/roi_mask_volume ({e!r})") from None
    if mask_count != nv:
        raise ModelLoadError(
            f"{job.metadata}: the ROI mask has {mask_count} voxels but the checkpoints predict {nv}"
        )
    states = [(ck.encoder, ck.readout) for ck in checkpoints]
    reference = build_model(states)
    deploy = build_model(states, gemm=True)

    onnx_name = catalog.file_name("onnx", spec.model_id, job.subject, job.roi)
    npz_name = catalog.file_name("metadata", spec.model_id, job.subject, job.roi)
    with atomic_path(out_dir / onnx_name) as tmp:
        export_onnx(deploy, tmp)
        result = verify(tmp, reference, photos)  # raises before the rename on mismatch
    int8_fields: dict[str, Any] = {}
    if int8:
        int8_name = catalog.file_name("onnx_int8", spec.model_id, job.subject, job.roi)
        int8_fields = export_int8(out_dir, onnx_name, int8_name, reference, photos, tolerance)
    flat = flatten(meta)
    with atomic_path(out_dir / npz_name) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **flat)
        back = flatten(load_npz(tmp))
        if back.keys() != flat.keys() or not all(
            np.array_equal(back[k], flat[k]) and back[k].dtype == flat[k].dtype for k in flat
        ):
            raise ModelLoadError(f"{npz_name}: metadata did not survive the npz round trip")
    return ModelEntry(
        model_id=spec.model_id,
        subject=job.subject,
        roi=job.roi,
        nv=nv,
        splits=tuple(
            SplitEntry(split=i, nv=ck.nv, source=ck.path.name, source_sha256=sha)
            for i, (ck, sha) in enumerate(zip(checkpoints, source_sha, strict=True), start=1)
        ),
        onnx=FileEntry.of(out_dir, onnx_name),
        metadata=FileEntry.of(out_dir, npz_name),
        metadata_source_sha256=metadata_sha,
        opset=OPSET,
        versions={
            "torch": torch.__version__,
            "onnx": _version("onnx"),
            "onnxscript": _version("onnxscript"),
            "onnxruntime": onnxruntime.__version__,
            "berg_onnx": berg_onnx.__version__,
        },
        exporter=EXPORTER,
        max_abs_diff=result.max_abs_diff,
        verification={
            "images": result.description,
            "n_images": result.n_images,
            "batch_sizes": list(result.batch_sizes),
            "tolerance": 1e-4,
        },
        **int8_fields,
    )


INT8_MODES = (False, True, "auto", "require")


def convert(
    berg_dir: Path,
    out_dir: Path,
    spec: ModelSpec,
    subjects: Sequence[int] | None = None,
    rois: Sequence[str] | None = None,
    progress: bool = True,
    int8: bool | str = False,
    tolerance: Tolerance | float | None = None,
) -> Manifest:
    """Export every (subject, ROI) found.

    ``int8`` True (or "auto") also chooses each model's int8-readout tier
    (``int8_select``); a model for which no scheme meets the tolerance keeps its
    fp32 files and its entry records why. "require" makes that an error, raised
    once every model is written (``int8_absent``). A model whose fp32 export is
    up to date only has its int8 tier chosen.
    """
    from tqdm.auto import tqdm

    if int8 not in INT8_MODES:
        raise InvalidParameterError(f"int8 must be one of {INT8_MODES}, got {int8!r}")
    want_int8 = bool(int8)
    tol = as_tolerance(tolerance)
    berg_dir, out_dir = Path(berg_dir), Path(out_dir)
    jobs = plan(berg_dir, spec, subjects, rois)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / berg_onnx.source.catalog.load_catalog().manifest_name
    manifest = Manifest.load(manifest_path)
    photos = photographs(256, 8)
    bar = tqdm(jobs, desc="convert", unit="model", disable=not progress)
    for job in bar:
        bar.set_postfix_str(f"sub-{job.subject:02d} {job.roi}")
        key = berg_onnx.source.manifest.model_key(spec.model_id, job.subject, job.roi)
        for p in (*job.sources, job.metadata):
            check_source_size(p)  # a size no BERG file has is refused before it is hashed
        src_sha = [sha256_file(p) for p in job.sources]
        meta_sha = sha256_file(job.metadata)
        entry = manifest.models.get(key)
        if _up_to_date(entry, out_dir, src_sha, meta_sha):
            if not want_int8 or int8_current(entry, tol):
                continue
            add_int8(berg_dir, out_dir, spec, job.subject, job.roi, tol)
            manifest = Manifest.load(manifest_path)
            continue
        if manifest.models.pop(key, None) is not None:
            manifest.write(manifest_path)  # a failure below must leave no stale entry
        manifest.add(convert_one(job, spec, out_dir, photos, src_sha, meta_sha, want_int8, tol))
        manifest.write(manifest_path)
    manifest.write(manifest_path)
    if int8 == "require":
        missing = int8_absent(manifest, [(spec.model_id, j.subject, j.roi) for j in jobs])
        if missing:
            raise ExportError(
                f"--int8=require: {len(missing)} model(s) have no int8 tier (their fp32 "
                "files are written): " + "; ".join(f"{k}: {why}" for k, why in missing.items())
            )
    return manifest


def int8_absent(manifest: Manifest, models: Sequence[tuple[str, int, str]]) -> dict[str, str]:
    """{key: reason} of ``models`` whose int8 tier is absent because no scheme met the
    tolerance."""
    out = {}
    for model_id, subject, roi in models:
        entry = manifest.models.get(berg_onnx.source.manifest.model_key(model_id, subject, roi))
        if entry is not None and entry.onnx_int8 is None and entry.int8_absent_reason:
            out[entry.key] = entry.int8_absent_reason
    return out
