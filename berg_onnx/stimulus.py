"""Stimulus validation and preprocessing: what encode() accepts, as model input.

The original takes (N, 3, H, W) integer arrays in 0-255, resizes them with
torchvision to 227x227 and divides by 255. We accept the same, plus PIL images
and image files, validate everything up front (never rescaling silently), and
hand out preprocessed chunks so memory stays bounded however many images
there are.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from .constants import INPUT_SIZE
from .errors import StimulusError
from .resize import resize_rounded

EXPECTED = (
    "a numpy integer array of shape (N, 3, H, W) with values 0-255 (e.g. uint8), "
    "a PIL image, a list of PIL images, or image file paths"
)

ImageSource = Union[str, os.PathLike, Any]  # Any: PIL.Image.Image (Pillow imported lazily)


def _is_pil(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "size")


def _check_array(x: np.ndarray) -> None:
    if x.dtype == object:
        raise StimulusError(f"Got an object array; expected {EXPECTED}.")
    if x.dtype == bool:
        raise StimulusError(f"Got a bool array; expected {EXPECTED}.")
    if x.dtype.kind == "f" or x.dtype.kind == "c":
        hint = " It contains NaN." if x.dtype.kind == "f" and np.isnan(x).any() else ""
        raise StimulusError(
            f"Got a {x.dtype} array; expected integers 0-255.{hint} Images in [0, 1] must be "
            "converted by the caller, e.g. (x * 255).round().astype(np.uint8); berg_onnx "
            "never rescales silently."
        )
    if x.dtype.kind not in "ui":
        raise StimulusError(f"Got an array of dtype {x.dtype}; expected {EXPECTED}.")
    if x.ndim != 4:
        hint = " For one image use x[None]." if x.ndim == 3 else ""
        raise StimulusError(f"Got an array of shape {x.shape}; expected (N, 3, H, W).{hint}")
    if x.shape[1] != 3:
        hint = " Channels-last? Use x.transpose(0, 3, 1, 2)." if x.shape[-1] == 3 else ""
        raise StimulusError(
            f"Got {x.shape[1]} channels in shape {x.shape}; expected 3 (RGB) at axis 1.{hint}"
        )
    if x.shape[0] == 0:
        raise StimulusError("Got an empty batch (N = 0); expected at least one image.")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise StimulusError(f"Got images of size {x.shape[2]}x{x.shape[3]}; expected H, W >= 1.")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        raise StimulusError(f"Got values from {lo} to {hi}; expected integers in 0-255.")


@contextlib.contextmanager
def _open_image(source: ImageSource) -> Iterator[Any]:
    """A PIL image opened from a path, with file errors turned into StimulusError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(source)
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise StimulusError(f"Image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise StimulusError(f"Cannot read {path} as an image: {e}") from None


def _probe_file(source: ImageSource) -> None:
    """Fail before a long run, not in the middle: check the file exists and has an image header."""
    with _open_image(source):  # reads the header only
        pass


def _load_image(source: ImageSource) -> np.ndarray:
    """(3, H, W) uint8 from a PIL image or a file path."""
    if _is_pil(source):
        return np.asarray(source.convert("RGB")).transpose(2, 0, 1)
    with _open_image(source) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1)


@dataclass(frozen=True)
class Stimulus:
    """A validated batch of images that yields model-ready chunks on demand."""

    array: np.ndarray | None  # (N, 3, H, W) integers, validated
    sources: tuple[ImageSource, ...] | None  # PIL images or paths, decoded per chunk

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.sources)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Images start..stop as float32 (n, 3, 227, 227) in [0, 1], exactly as the original."""
        if self.array is not None:
            rounded = resize_rounded(self.array[start:stop], (INPUT_SIZE, INPUT_SIZE))
        else:
            rounded = np.stack(
                [
                    resize_rounded(_load_image(s)[None], (INPUT_SIZE, INPUT_SIZE))[0]
                    for s in self.sources[start:stop]
                ]
            )
        rounded /= np.float32(255)
        return rounded


def as_stimulus(stimulus: Any) -> Stimulus:
    """Validate what the caller passed; raises StimulusError naming what was expected."""
    if isinstance(stimulus, Stimulus):
        return stimulus
    if isinstance(stimulus, np.ndarray):
        _check_array(stimulus)
        return Stimulus(array=stimulus, sources=None)
    if _is_pil(stimulus) or isinstance(stimulus, (str, os.PathLike)):
        stimulus = [stimulus]
    if isinstance(stimulus, Sequence) and not isinstance(stimulus, (bytes, bytearray)):
        items = tuple(stimulus)
        if not items:
            raise StimulusError(f"Got an empty list; expected {EXPECTED}.")
        for i, item in enumerate(items):
            if not (_is_pil(item) or isinstance(item, (str, os.PathLike))):
                raise StimulusError(
                    f"Item {i} of the list is a {type(item).__name__}; expected PIL images "
                    f"or image file paths (or pass one array: {EXPECTED})."
                )
            if not _is_pil(item):
                _probe_file(item)
        return Stimulus(array=None, sources=items)
    raise StimulusError(f"Got a {type(stimulus).__name__}; expected {EXPECTED}.")
