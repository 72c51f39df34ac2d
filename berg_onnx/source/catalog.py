"""The model catalogue (models.json): ids, subjects, ROIs, file names, Hub pin.

One source of truth shared by the runtime and the export stage. In a wheel
models.json sits inside the package; in a checkout it is the top-level file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from berg_onnx.errors import InvalidParameterError, ModelNotFoundError

_REPO_CATALOG = Path(__file__).resolve().parents[2] / "models.json"


def model_key(model_id: str, subject: int, roi: str) -> str:
    """The key of one model in a manifest and in every listing: ``model_id/sub-XX/ROI``."""
    return f"{model_id}/sub-{subject:02d}/{roi}"


@dataclass(frozen=True)
class ROI:
    name: str
    splits: int  # 1, or 2 for ROIs stored as two checkpoints (lateral, ventral)


@dataclass(frozen=True)
class ModelSpec:
    """One model family, e.g. fmri-nsd-fwrf."""

    model_id: str
    description: str
    modality: str
    train_dataset: str
    subjects: tuple[int, ...]
    rois: tuple[ROI, ...]
    voxels: dict[int, dict[str, int]]
    input_size: tuple[int, int]

    @property
    def roi_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rois)

    def roi(self, name: str) -> ROI:
        for r in self.rois:
            if r.name == name:
                return r
        raise ModelNotFoundError(
            f"Unknown ROI {name!r} for model {self.model_id!r}; "
            f"valid ROIs: {', '.join(self.roi_names)}."
        )

    def check_subject(self, subject: Any) -> int:
        """The subject as an int, or an InvalidParameterError naming the valid subjects.

        Accepts what the original accepts: Python or numpy integers and
        integral floats (``np.int64(1)``, ``1.0``; so ``for s in np.arange(1, 9)``
        works), and digit strings; never bools or fractions.
        """
        valid = ", ".join(map(str, self.subjects))
        if subject is None:  # BERG: "Required parameters missing: subject"
            raise InvalidParameterError(
                f"Required parameter missing: subject (pass subject=, one of {valid})."
            )
        value = _as_int(subject)
        if value is None:
            raise InvalidParameterError(
                f"subject must be an integer, one of {valid}; got {subject!r}."
            )
        if value not in self.subjects:
            raise InvalidParameterError(
                f"Unknown subject {subject!r} for model {self.model_id!r}; valid subjects: {valid}."
            )
        return value

    def check_roi(self, roi: Any) -> ROI:
        if not isinstance(roi, str):
            raise InvalidParameterError(
                f"roi must be a string, one of {', '.join(self.roi_names)}; got {roi!r}."
            )
        return self.roi(roi)


def _as_int(value: Any) -> int | None:
    """An integer-valued argument as int, or None (bools, fractions, NaN, other types)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        f = float(value)
        return int(f) if math.isfinite(f) and f.is_integer() else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class Catalog:
    schema_version: int
    hub_repo_id: str
    hub_revision: str
    file_patterns: dict[str, str]
    models: dict[str, ModelSpec]
    #: True while the default Hub repo holds no published export (models.json says so)
    hub_placeholder: bool = False

    def model(self, model_id: Any) -> ModelSpec:
        try:
            return self.models[model_id]
        except (KeyError, TypeError):
            raise ModelNotFoundError(
                f"Model {model_id!r} not found in registry; "
                f"valid model ids: {', '.join(self.models)}."
            ) from None

    def file_name(self, kind: str, model_id: str, subject: int, roi: str) -> str:
        """File name of an exported artifact ('onnx' or 'metadata') inside an export dir."""
        return self.file_patterns[kind].format(model_id=model_id, subject=subject, roi=roi)

    @property
    def manifest_name(self) -> str:
        return self.file_patterns["manifest"]


def _parse(raw: dict[str, Any]) -> Catalog:
    models = {}
    for model_id, m in raw["models"].items():
        models[model_id] = ModelSpec(
            model_id=model_id,
            description=m["description"],
            modality=m["modality"],
            train_dataset=m["train_dataset"],
            subjects=tuple(int(s) for s in m["subjects"]),
            rois=tuple(ROI(r["name"], int(r["splits"])) for r in m["rois"]),
            voxels={int(s): dict(v) for s, v in m.get("voxels", {}).items()},
            input_size=tuple(m["input"]["size"]),
        )
    return Catalog(
        schema_version=int(raw["schema_version"]),
        hub_repo_id=raw["hub"]["repo_id"],
        hub_revision=raw["hub"]["revision"],
        file_patterns=dict(raw["files"]),
        models=models,
        hub_placeholder=bool(raw["hub"].get("placeholder", False)),
    )


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The catalogue shipped with this installation."""
    # read straight from the package folder (importlib.resources costs ~4 ms of imports
    # at every start); only a zipped install needs the resources API
    for path in (Path(__file__).resolve().parents[1] / "models.json", _REPO_CATALOG):
        if path.is_file():
            return _parse(json.loads(path.read_text("utf-8")))
    from importlib import resources

    text = resources.files("berg_onnx").joinpath("models.json").read_text("utf-8")
    return _parse(json.loads(text))
