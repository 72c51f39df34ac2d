"""File layout of an original BERG directory (spec: "Files of an original BERG directory")."""

from __future__ import annotations

from pathlib import Path

FWRF_DIR = Path("encoding_models/modality-fmri/train_dataset-nsd/model-fwrf")
WEIGHTS_DIR = FWRF_DIR / "encoding_models_weights"
METADATA_DIR = FWRF_DIR / "metadata"


def checkpoint_names(subject: int, roi: str, splits: int) -> list[str]:
    if splits == 1:
        return [f"weights_sub-{subject:02d}_roi-{roi}.pt"]
    return [f"weights_sub-{subject:02d}_roi-{roi}_split-{s}.pt" for s in range(1, splits + 1)]


def checkpoint_paths(berg_dir: Path, subject: int, roi: str, splits: int) -> list[Path]:
    return [berg_dir / WEIGHTS_DIR / n for n in checkpoint_names(subject, roi, splits)]


def metadata_path(berg_dir: Path, subject: int, roi: str) -> Path:
    return berg_dir / METADATA_DIR / f"metadata_sub-{subject:02d}_roi-{roi}.npy"


def is_berg_dir(path: Path) -> bool:
    return (path / WEIGHTS_DIR).is_dir()
