"""Publish an export directory to a Hugging Face Hub model repo in one commit.

Refuses an export whose files do not match its manifest, so what lands on the
Hub is exactly what was verified. The model card is generated from the
manifest. huggingface_hub honours HF_TOKEN and HF_ENDPOINT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from berg_onnx.errors import InvalidParameterError, ModelLoadError
from berg_onnx.source.catalog import load_catalog
from berg_onnx.source.manifest import Manifest


@dataclass(frozen=True)
class PlannedFile:
    name: str
    size: int
    sha256: str


def plan_upload(export_dir: Path) -> tuple[Manifest, list[PlannedFile]]:
    """Files to upload (manifest last); raises if any differs from the manifest."""
    name = load_catalog().manifest_name
    manifest_path = export_dir / name
    if not manifest_path.is_file():
        raise InvalidParameterError(
            f"{export_dir} has no {name}: expected an export directory written by "
            "`python -m export convert`."
        )
    manifest = Manifest.load(manifest_path)
    if not manifest.models:
        raise InvalidParameterError(f"{manifest_path} lists no models; nothing to publish.")
    files, problems = [], []
    for entry in manifest.models.values():
        for f in entry.files:
            problem = f.problem(export_dir / f.name)
            if problem:
                problems.append(problem)
            files.append(PlannedFile(f.name, f.size, f.sha256))
    if problems:
        raise ModelLoadError(
            "The export does not match its manifest; re-run `python -m export convert` "
            "before publishing:\n  " + "\n  ".join(problems)
        )
    from berg_onnx.utils.fileio import sha256_file

    files.append(PlannedFile(name, manifest_path.stat().st_size, sha256_file(manifest_path)))
    return manifest, files


def model_card(manifest: Manifest, repo_id: str) -> str:
    entries = sorted(manifest.models.values(), key=lambda e: (e.subject, e.roi))
    subjects = sorted({e.subject for e in entries})
    worst = max(e.max_abs_diff for e in entries)
    rows = "\n".join(
        f"| {e.subject} | {e.roi} | {e.nv} | {len(e.splits)} | {e.max_abs_diff:.1e} |"
        for e in entries
    )
    versions = entries[0].versions
    return f"""---
library_name: onnxruntime
tags:
- fmri
- neuroscience
- encoding-model
- onnx
- berg
---

# fmri-nsd-fwrf encoding models in ONNX

The BERG (Brain Encoding Response Generator) `fmri-nsd-fwrf` models, exported to
ONNX by berg-onnx: for each Natural Scenes Dataset (NSD) subject and visual ROI, a
GNet-style CNN encoder with a feature-weighted receptive-field readout that maps
images to predicted fMRI voxel responses (z-scored units).

This repository holds {len(entries)} models for subject(s)
{", ".join(map(str, subjects))}: one `.onnx` graph (input `images`, float32
(batch, 3, 227, 227) in [0, 1]; output `responses`, float32 (batch, nv)) and
one `.npz` of metadata (noise ceilings, r2, ROI mask volume, affine) per
subject and ROI, plus `manifest.json` with each file's sha256 and size.

## Use

```python
from berg_onnx import BERG

berg = BERG(repo_id="{repo_id}", revision="<commit hash>")
model = berg.get_encoding_model("fmri-nsd-fwrf", subject=1, selection={{"roi": "V1"}})
responses = berg.encode(model, images)  # images: (N, 3, H, W) uint8
```

## Fidelity

Every graph was verified at export against the PyTorch reference on natural
photographs and uint8 noise at batch sizes 1-37; worst max absolute difference
over all models: **{worst:.1e}** (tolerance 1e-4). Exported with torch
{versions.get("torch")}, onnx {versions.get("onnx")}, onnxruntime
{versions.get("onnxruntime")}, opset {entries[0].opset}.

| subject | ROI | voxels | splits | max abs diff |
|---|---|---|---|---|
{rows}

## Citation

Gifford, A. T., Bersch, D., Roig, G., & Cichy, R. M. (2025). The Brain Encoding
Response Generator (BERG). https://github.com/gifale95/BERG

Allen, E. J., St-Yves, G., Wu, Y., et al. (2022). A massive 7T fMRI dataset to
bridge cognitive neuroscience and artificial intelligence. Nature Neuroscience,
25, 116-126.

St-Yves, G., & Naselaris, T. (2018). The feature-weighted receptive field: an
interpretable encoding model for complex feature spaces. NeuroImage, 180, 188-202.
"""


def publish(
    export_dir: Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
) -> str | list[PlannedFile]:
    """Upload the export in one commit; returns the commit hash (or the plan with dry_run)."""
    export_dir = Path(export_dir)
    manifest, files = plan_upload(export_dir)
    if dry_run:
        return files
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    card = model_card(manifest, repo_id).encode("utf-8")
    ops = [CommitOperationAdd(f.name, str(export_dir / f.name)) for f in files]
    ops.append(CommitOperationAdd("README.md", card))
    info = api.create_commit(
        repo_id,
        ops,
        commit_message=f"berg-onnx export: {len(manifest.models)} models",
        revision=revision,
    )
    return info.oid
