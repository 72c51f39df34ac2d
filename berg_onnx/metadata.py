"""Model metadata as .npz: the original's nested dict under flattened keys.

The original ships metadata as pickled dicts; the export stores the same
arrays in an npz under keys such as ``fmri/ncsnr`` so that they load with
``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError

SEP = "/"


def flatten(meta: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """{'fmri': {'ncsnr': a}} -> {'fmri/ncsnr': a}; every leaf must be a non-object array."""
    flat: dict[str, np.ndarray] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or SEP in key:
            raise ValueError(f"metadata key {key!r} must be a string without {SEP!r}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + SEP))
        else:
            arr = np.asarray(value)
            if arr.dtype == object:
                raise ValueError(f"metadata entry {name} is an object array")
            flat[name] = arr
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, arr in flat.items():
        node = nested
        *parents, leaf = name.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    return nested


def load_npz(path: str | Path) -> dict[str, Any]:
    """The nested metadata dict from an exported npz (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return unflatten({k: data[k] for k in data.files})
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read metadata {path}: {e}") from None
