"""The export contract: manifest.json as classes, and the checks a file must pass.

The export stage writes manifests with these classes and the runtime reads
them; a file is trusted only when its size and sha256 match its entry. The
field-by-field validation of an untrusted manifest is ``_schema``'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from berg_onnx.errors import InvalidParameterError, ModelLoadError, ModelNotFoundError
from berg_onnx.source._schema import MAX_MANIFEST_BYTES, parse_json, validate_manifest
from berg_onnx.source.catalog import model_key
from berg_onnx.utils.fileio import atomic_write_bytes, sha256_file
from berg_onnx.utils.verified import check_file

SCHEMA_VERSION = 1
FORMAT = "berg-onnx-export"
#: Every exported graph has exactly this input (float32 (batch, 3, 227, 227) in
#: [0, 1]) and this output (float32 (batch, nv)).
INPUT_NAME = "images"
OUTPUT_NAME = "responses"


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative to the export dir (or Hub repo root)
    sha256: str
    size: int

    @classmethod
    def of(cls, directory: Path, name: str) -> FileEntry:
        path = directory / name
        return cls(name=name, sha256=sha256_file(path), size=path.stat().st_size)

    def problem(self, path: Path) -> str | None:
        """Why ``path`` does not match this entry, or None when it does (always hashed:
        the export's own checks never trust a remembered verification)."""
        return check_file(path, self.size, self.sha256, remember=False)


@dataclass(frozen=True)
class SplitEntry:
    split: int
    nv: int
    source: str  # checkpoint file name
    source_sha256: str


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    subject: int
    roi: str
    nv: int
    splits: tuple[SplitEntry, ...]
    onnx: FileEntry
    metadata: FileEntry
    metadata_source_sha256: str
    opset: int
    versions: dict[str, str]  # torch, onnx, onnxscript, onnxruntime, berg_onnx
    exporter: str
    max_abs_diff: float
    verification: dict[str, Any] = field(default_factory=dict)
    #: opt-in reduced-precision tier (readout GEMMs in int8), if exported
    onnx_int8: FileEntry | None = None
    int8_max_abs_diff: float | None = None
    #: Where the int8 figures hold (optional; absent in exports made before them):
    #: how it was quantised, the tolerance its max abs difference passed, the worst
    #: |u8 x s8 pair sum| its weights allow in AVX2's int16 stage (<= 32767: no
    #: kernel saturates), the CPU it was measured on ({"cpu", "class", "flags"}), and
    #: the berg_onnx.utils.cpu kernel classes its integer results are proven identical on.
    int8_scheme: dict[str, Any] | None = None
    int8_tolerance: float | None = None
    int8_pair_bound: int | None = None
    int8_verified_on: dict[str, Any] | None = None
    int8_verified_classes: tuple[str, ...] = ()
    #: How ``convert --int8`` chose the tier (optional; absent before per-model choice):
    #: the chosen scheme's max abs difference from the fp32 graph and its lowest
    #: per-voxel correlation with it on natural photographs, its speed-up over fp32
    #: where it was measured, the procedure with every candidate tried, and, when no
    #: scheme met the tolerance (no ``onnx_int8`` then), the reason in one line.
    int8_max_abs_vs_fp32: float | None = None
    int8_min_voxel_r: float | None = None
    int8_speedup: float | None = None
    int8_selection: dict[str, Any] | None = None
    int8_absent_reason: str | None = None

    @property
    def key(self) -> str:
        return model_key(self.model_id, self.subject, self.roi)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        extra = (self.onnx_int8,) if self.onnx_int8 else ()
        return (self.onnx, self.metadata, *extra)

    def onnx_file(self, precision: str) -> FileEntry:
        """The graph for ``precision`` ('fp32' or 'int8')."""
        if precision == "fp32":
            return self.onnx
        if precision == "int8" and self.onnx_int8 is not None:
            return self.onnx_int8
        if precision == "int8" and self.int8_absent_reason:
            raise ModelNotFoundError(
                f"{self.key} has no int8 tier: {self.int8_absent_reason}. "
                "Use precision='fp32' for this model."
            )
        if precision == "int8":
            raise ModelNotFoundError(
                f"{self.key} has no int8 variant in this export; re-export with "
                "`python -m export convert ... --int8`."
            )
        raise InvalidParameterError(f"precision must be 'fp32' or 'int8', got {precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelEntry:
        return cls(
            model_id=d["model_id"],
            subject=int(d["subject"]),
            roi=d["roi"],
            nv=int(d["nv"]),
            splits=tuple(SplitEntry(**s) for s in d["splits"]),
            onnx=FileEntry(**d["onnx"]),
            metadata=FileEntry(**d["metadata"]),
            metadata_source_sha256=d["metadata_source_sha256"],
            opset=int(d["opset"]),
            versions=dict(d["versions"]),
            exporter=d["exporter"],
            max_abs_diff=float(d["max_abs_diff"]),
            verification=dict(d.get("verification", {})),
            onnx_int8=FileEntry(**d["onnx_int8"]) if d.get("onnx_int8") else None,
            int8_max_abs_diff=d.get("int8_max_abs_diff"),
            int8_scheme=d.get("int8_scheme"),
            int8_tolerance=d.get("int8_tolerance"),
            int8_pair_bound=d.get("int8_pair_bound"),
            int8_verified_on=d.get("int8_verified_on"),
            int8_verified_classes=tuple(d.get("int8_verified_classes") or ()),
            int8_max_abs_vs_fp32=d.get("int8_max_abs_vs_fp32"),
            int8_min_voxel_r=d.get("int8_min_voxel_r"),
            int8_speedup=d.get("int8_speedup"),
            int8_selection=d.get("int8_selection"),
            int8_absent_reason=d.get("int8_absent_reason"),
        )


class OfModel:
    """Who an object that wraps one manifest entry (``self.entry``) is about.

    A loaded model and a grid's plan of one both answer ``subject``, ``roi``, ...
    from the entry they hold; this is that answer, written once.
    """

    entry: ModelEntry

    @property
    def model_id(self) -> str:
        return self.entry.model_id

    @property
    def subject(self) -> int:
        return self.entry.subject

    @property
    def roi(self) -> str:
        return self.entry.roi

    @property
    def n_voxels(self) -> int:
        return self.entry.nv


@dataclass
class Manifest:
    """All models of one export directory, keyed by ``model_key``."""

    models: dict[str, ModelEntry] = field(default_factory=dict)

    def get(self, model_id: str, subject: int, roi: str) -> ModelEntry:
        try:
            return self.models[model_key(model_id, subject, roi)]
        except KeyError:
            have = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFoundError(
                f"The export has no model {model_key(model_id, subject, roi)}; it has: {have}."
            ) from None

    def add(self, entry: ModelEntry) -> None:
        self.models[entry.key] = entry

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "models": {k: self.models[k].to_dict() for k in sorted(self.models)},
        }
        return json.dumps(body, indent=2, sort_keys=False) + "\n"

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, self.to_json().encode("utf-8"))

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        raw = parse_json(text, source)  # bounded size, every decoder failure a ModelLoadError
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelLoadError(f"{source} is not a berg-onnx export manifest.")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelLoadError(
                f"{source} has schema version {version}; this berg_onnx reads version "
                f"{SCHEMA_VERSION}. Upgrade berg-onnx or re-export."
            )
        validate_manifest(raw, source)  # types, ranges, plain file names: before any use
        try:
            models = {k: ModelEntry.from_dict(v) for k, v in raw["models"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{source} has a malformed model entry: {e!r}") from None
        return cls(models=models)

    @classmethod
    def load(cls, path: Path, source: str | None = None) -> Manifest:
        """Read a manifest (bounded, UTF-8 checked); a missing file gives an empty manifest."""
        if not path.is_file():
            return cls()
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ModelLoadError(
                f"{path} is larger than a manifest can be ({MAX_MANIFEST_BYTES} B)"
            )
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError as e:
            raise ModelLoadError(f"{path} is not UTF-8 text: {e}") from None
        return cls.from_json(text, source=source or str(path))
