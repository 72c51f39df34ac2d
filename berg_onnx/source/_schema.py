"""manifest.json's schema, checked before any field is used.

A manifest comes from a Hub repo or a folder someone else wrote, and names the
files the runtime then opens and downloads; so every field is checked for its
type, range and length, and every file name for being a plain name inside the
export (no folders, no ``..``). Required keys must be present; keys this
version does not know (later exports may add optional ones, e.g. int8 figures)
are allowed if they are small JSON values. Every problem is a
``ModelLoadError`` naming the manifest, the entry and the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from berg_onnx.errors import ModelLoadError
from berg_onnx.source.catalog import model_key

MAX_MANIFEST_BYTES = 16 << 20  # 184 models take ~400 KB
MAX_MODELS = 10_000
MAX_VOXELS = 1_000_000
MAX_FILE_BYTES = 1 << 40
#: What one model's files can weigh, so that a declared size is compared with the
#: file's before any hashing and hashing is bounded by what the model can need: a
#: graph holds one encoder per split (~5.6 MB each) and ~9.2 KB of readout per voxel
#: (fp32; int8 less); the metadata ~30 KB plus a few float arrays per voxel.
GRAPH_BYTES_PER_SPLIT = 64 << 20
GRAPH_BYTES_PER_VOXEL = 64 << 10
METADATA_BYTES = 64 << 20
METADATA_BYTES_PER_VOXEL = 1 << 10


def max_graph_bytes(nv: int, splits: int) -> int:
    return splits * GRAPH_BYTES_PER_SPLIT + nv * GRAPH_BYTES_PER_VOXEL


def max_metadata_bytes(nv: int) -> int:
    return METADATA_BYTES + nv * METADATA_BYTES_PER_VOXEL


MAX_SPLITS = 8
MAX_STR = 256
MAX_EXTRA_ITEMS = 256  # keys/items of one free-form value (versions, verification, unknown keys)
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Bad(Exception):
    """A schema violation; ``where`` is the dotted path to the field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def parse_json(text: str | bytes, source: str) -> Any:
    """json.loads with the size bounded and every decoder failure a ModelLoadError."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ModelLoadError(
            f"{source} has {len(text)} bytes; a manifest is at most {MAX_MANIFEST_BYTES}."
        )
    try:
        return json.loads(text)
    except RecursionError:
        raise ModelLoadError(f"{source} is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, int digit limit
        raise ModelLoadError(f"{source} is not valid JSON: {e}") from None


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _Bad(where, f"expected an integer in {lo}..{hi}, got {_show(v)}")
    return v


def _number(v: Any, where: str, optional: bool = False) -> None:
    if optional and v is None:
        return
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
        raise _Bad(where, f"expected a finite number >= 0, got {_show(v)}")


def _str(v: Any, where: str, pattern: re.Pattern[str] | None = None, limit: int = MAX_STR) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= limit:
        raise _Bad(where, f"expected a string of 1-{limit} characters, got {_show(v)}")
    if pattern is not None and not pattern.match(v):
        raise _Bad(where, f"{_show(v)} has characters outside [A-Za-z0-9._+-]")
    return v


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Bad(where, f"expected an object, got {type(v).__name__}")
    return v


def _small(v: Any, where: str, depth: int = 0) -> None:
    """A free-form value: JSON of bounded depth and item counts."""
    if depth > 6:
        raise _Bad(where, "nested too deeply")
    if isinstance(v, (dict, list)):
        if len(v) > MAX_EXTRA_ITEMS:
            raise _Bad(where, f"more than {MAX_EXTRA_ITEMS} items")
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, item in items:
            _small(item, f"{where}.{k}", depth + 1)
    elif isinstance(v, str) and len(v) > 4096:
        raise _Bad(where, "a string longer than 4096 characters")
    elif isinstance(v, float) and not math.isfinite(v):
        raise _Bad(where, "not a finite number")


def _file(v: Any, where: str, optional: bool = False, limit: int = MAX_FILE_BYTES) -> None:
    if optional and v is None:
        return
    entry = _dict(v, where)
    if set(entry) != {"name", "sha256", "size"}:
        raise _Bad(where, "expected exactly name, sha256, size")
    name = _str(entry["name"], f"{where}.name", _SAFE_FILE)
    if ".." in name:
        raise _Bad(f"{where}.name", f"{_show(name)} is not a plain file name")
    _str(entry["sha256"], f"{where}.sha256", _SHA256, 64)
    size = _int(entry["size"], f"{where}.size", 0, MAX_FILE_BYTES)
    if size > limit:
        raise _Bad(
            f"{where}.size", f"{size} bytes, more than this model's files can hold ({limit})"
        )


_REQUIRED = (
    "model_id",
    "subject",
    "roi",
    "nv",
    "splits",
    "onnx",
    "metadata",
    "metadata_source_sha256",
    "opset",
    "versions",
    "exporter",
    "max_abs_diff",
)


def _model(key: str, v: Any, where: str) -> None:
    entry = _dict(v, where)
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise _Bad(where, f"missing {', '.join(missing)}")
    model_id = _str(entry["model_id"], f"{where}.model_id", _SAFE_ID)
    subject = _int(entry["subject"], f"{where}.subject", 1, 999)
    roi = _str(entry["roi"], f"{where}.roi", _SAFE_ID)
    if key != model_key(model_id, subject, roi):
        raise _Bad(where, f"listed under {_show(key)} but describes {model_id}/{subject}/{roi}")
    nv = _int(entry["nv"], f"{where}.nv", 1, MAX_VOXELS)
    splits = entry["splits"]
    if not isinstance(splits, list) or not 1 <= len(splits) <= MAX_SPLITS:
        raise _Bad(f"{where}.splits", f"expected a list of 1-{MAX_SPLITS} splits")
    total = 0
    for i, s in enumerate(splits):
        sw = f"{where}.splits[{i}]"
        s = _dict(s, sw)
        if set(s) != {"split", "nv", "source", "source_sha256"}:
            raise _Bad(sw, "expected exactly split, nv, source, source_sha256")
        _int(s["split"], f"{sw}.split", 1, MAX_SPLITS)
        total += _int(s["nv"], f"{sw}.nv", 1, MAX_VOXELS)
        _str(s["source"], f"{sw}.source")
        _str(s["source_sha256"], f"{sw}.source_sha256", _SHA256, 64)
    if total != nv:
        raise _Bad(f"{where}.splits", f"split voxel counts sum to {total}, not nv = {nv}")
    graph = max_graph_bytes(nv, len(splits))
    _file(entry["onnx"], f"{where}.onnx", limit=graph)
    _file(entry["metadata"], f"{where}.metadata", limit=max_metadata_bytes(nv))
    _file(entry.get("onnx_int8"), f"{where}.onnx_int8", optional=True, limit=graph)
    _str(entry["metadata_source_sha256"], f"{where}.metadata_source_sha256", _SHA256, 64)
    _int(entry["opset"], f"{where}.opset", 1, 1000)
    versions = _dict(entry["versions"], f"{where}.versions")
    if len(versions) > 64:
        raise _Bad(f"{where}.versions", "more than 64 entries")
    for k, ver in versions.items():
        _str(ver, f"{where}.versions.{k}", limit=128)
    _str(entry["exporter"], f"{where}.exporter", limit=1024)
    _number(entry["max_abs_diff"], f"{where}.max_abs_diff")
    _number(entry.get("int8_max_abs_diff"), f"{where}.int8_max_abs_diff", optional=True)
    for k in ("int8_max_abs_vs_fp32", "int8_speedup"):
        _number(entry.get(k), f"{where}.{k}", optional=True)
    r = entry.get("int8_min_voxel_r")
    if r is not None and (type(r) not in (int, float) or not -1 <= r <= 1):
        raise _Bad(f"{where}.int8_min_voxel_r", f"expected a number in -1..1, got {_show(r)}")
    reason = entry.get("int8_absent_reason")
    if reason is not None:
        _str(reason, f"{where}.int8_absent_reason", limit=4096)
        if entry.get("onnx_int8") is not None:
            raise _Bad(where, "has both onnx_int8 and int8_absent_reason")
    verification = entry.get("verification", {})
    _dict(verification, f"{where}.verification")
    _small(verification, f"{where}.verification")
    for k in set(entry) - set(_REQUIRED) - {"onnx_int8", "int8_max_abs_diff", "verification"}:
        _small(entry[k], f"{where}.{k}")  # optional fields of later exports, checked leniently


def validate_manifest(raw: Any, source: str) -> None:
    """Raise ModelLoadError unless ``raw`` (parsed JSON) follows the manifest schema."""
    try:
        top = _dict(raw, "manifest")
        models = _dict(top.get("models"), "models")
        if len(models) > MAX_MODELS:
            raise _Bad("models", f"more than {MAX_MODELS} models")
        for key, entry in models.items():
            _model(key, entry, f"models[{_show(key)}]")
    except _Bad as e:
        raise ModelLoadError(f"{source} does not follow the manifest schema: {e}") from None
