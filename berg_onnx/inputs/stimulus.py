"""Stimulus validation and preprocessing: what encode() accepts, as model input.

The original takes (N, 3, H, W) integer arrays in 0-255, resizes them with
torchvision to 227x227 and divides by 255. We accept the same, plus PIL images
and image files, validate everything up front (never rescaling silently), and
hand out preprocessed chunks so memory stays bounded however many images
there are.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from berg_onnx.constants import INPUT_SIZE
from berg_onnx.errors import InvalidParameterError, StimulusError
from berg_onnx.inputs.images import WHITE, ImageSource, check_background, is_pil_image, load_image
from berg_onnx.inputs.resize import resize_rounded

if TYPE_CHECKING:
    from berg_onnx.inputs.scan import ScanResult

EXPECTED = (
    "a numpy integer array of shape (N, 3, H, W) with values 0-255 (e.g. uint8), "
    "a PIL image, a list of PIL images, or image file paths"
)


def _shape_hint(shape: tuple[int, ...]) -> str:
    """The fix for a wrong shape, judged from the shape itself (never a guess that reshapes
    pixels into the wrong places)."""
    if len(shape) == 0:
        return " It holds a single value (a 0-d array), not images."
    if len(shape) == 1:
        return " A flat (1-D) array? Keep the (N, 3, H, W) shape when saving or building it."
    if len(shape) == 2:  # one grayscale image (H, W)
        return " One grayscale image? Use np.repeat(x[None, None], 3, axis=1)."
    if len(shape) == 3:
        if shape[0] == 3:
            return " One (3, H, W) image? Use x[None]."
        if shape[-1] == 3:
            return " One (H, W, 3) image? Use x.transpose(2, 0, 1)[None]."
        if shape[-1] == 4:
            return (
                " One (H, W, 4) RGBA image? Composite it onto white as files are: "
                "berg_onnx.load_image(PIL.Image.fromarray(x))[None]."
            )
        return " A batch of grayscale (N, H, W) images? Use np.repeat(x[:, None], 3, axis=1)."
    if len(shape) == 4:
        if shape[1] == 1:
            return " Grayscale (N, 1, H, W)? Use np.repeat(x, 3, axis=1)."
        if shape[-1] == 3:
            return " Channels-last (N, H, W, 3)? Use x.transpose(0, 3, 1, 2)."
        if shape[-1] == 1:
            return " Grayscale channels-last? Use np.repeat(x.transpose(0, 3, 1, 2), 3, axis=1)."
        if shape[-1] == 4 or shape[1] == 4:
            hwc = "im" if shape[-1] == 4 else "im.transpose(1, 2, 0)"
            return (
                " RGBA images? Composite them onto white as files are: np.stack("
                f"[berg_onnx.load_image(PIL.Image.fromarray({hwc})) for im in x])."
            )
    return ""


def _float_hint(x: np.ndarray) -> str:
    """How to turn float images into integers 0-255, from the values seen."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = "NaN" if np.isnan(x).any() else "infinite values"
        return f" It contains {bad}; fix those first."
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi <= 1:
        return (
            f" Values span {lo:g}-{hi:g}: if they are intensities in [0, 1], use "
            "(x * 255).round().astype(np.uint8)."
        )
    if lo >= 0 and hi <= 255:
        whole = bool((x == np.round(x)).all())
        note = "whole numbers" if whole else "not all whole numbers (rounding moves them <= 0.5)"
        return f" Values span {lo:g}-{hi:g}, {note}: use x.round().astype(np.uint8)."
    return (
        f" Values span {lo:g}-{hi:g}, outside both 0-1 and 0-255: rescale them to 0-255 "
        "yourself (a plain astype would wrap or clip)."
    )


def _check_array(x: np.ndarray) -> None:
    if x.dtype == object:
        raise StimulusError(f"Got an object array; expected {EXPECTED}.")
    if x.dtype == bool:
        raise StimulusError(
            f"Got a bool array; expected {EXPECTED}. For black/white images use "
            "x.astype(np.uint8) * 255."
        )
    if x.dtype.kind == "c":
        raise StimulusError(f"Got a {x.dtype} (complex) array; expected {EXPECTED}.")
    if x.dtype.kind not in "uif":
        raise StimulusError(f"Got an array of dtype {x.dtype}; expected {EXPECTED}.")
    if x.ndim != 4 or x.shape[1] != 3:
        what = f"{x.shape[1]} channels in shape {x.shape}" if x.ndim == 4 else f"shape {x.shape}"
        raise StimulusError(
            f"Got an array of {what}; expected (N, 3, H, W) (RGB at axis 1).{_shape_hint(x.shape)}"
        )
    if x.shape[0] == 0:
        raise StimulusError("Got an empty batch (N = 0); expected at least one image.")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise StimulusError(f"Got images of size {x.shape[2]}x{x.shape[3]}; expected H, W >= 1.")
    if x.dtype.kind == "f":
        raise StimulusError(
            f"Got a {x.dtype} array; expected integers 0-255; berg_onnx never rescales "
            f"silently.{_float_hint(x)}"
        )
    if x.dtype == np.uint8:
        return  # 0-255 by its type: no pass over (possibly memory-mapped, huge) data
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        hint = (
            " 16-bit images (0-65535)? Scale them as berg_onnx scales 16-bit files: "
            "((x.astype(np.uint32) + 128) // 257).astype(np.uint8)."
            if lo >= 0 and hi <= 65535 and x.dtype.itemsize >= 2
            else " Rescale them to 0-255 yourself (a plain astype would wrap)."
        )
        raise StimulusError(f"Got values from {lo} to {hi}; expected integers in 0-255.{hint}")


ON_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class Failure:
    """An image that could not be read: its row, what it was, and why."""

    index: int
    source: ImageSource
    reason: str


@dataclass(frozen=True)
class Stimulus:
    """A validated batch of images that yields model-ready chunks on demand.

    Files and PIL images are decoded in ``chunk``, i.e. in the encode worker
    that preprocesses them, so a folder is read once. With ``on_error="skip"``
    an image that cannot be read does not stop the run: ``chunk`` feeds a
    black placeholder, the model writes NaN into its row, and ``failures``
    names it (thread-safe; rows are reported once however often they fail).
    """

    array: np.ndarray | None  # (N, 3, H, W) integers, validated
    sources: tuple[ImageSource, ...] | None  # PIL images or paths, decoded per chunk
    on_error: str = "fail"
    background: tuple[int, int, int] = WHITE
    _failed: dict[int, Failure] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.sources)

    @property
    def failures(self) -> tuple[Failure, ...]:
        """Images skipped so far (``on_error="skip"``), in row order."""
        with self._lock:
            return tuple(self._failed[i] for i in sorted(self._failed))

    def ok_rows(self) -> np.ndarray:
        """Indices of the rows whose image was read (all rows unless some were skipped)."""
        keep = np.ones(len(self), dtype=bool)
        keep[[f.index for f in self.failures]] = False
        return np.flatnonzero(keep)

    def _fail(self, index: int, error: StimulusError) -> None:
        if self.on_error == "fail":
            raise error
        with self._lock:
            self._failed.setdefault(index, Failure(index, self.sources[index], str(error)))

    def image(self, index: int) -> np.ndarray | None:
        """(3, H, W) uint8 of source ``index``, or None where it was skipped."""
        try:
            return load_image(self.sources[index], self.background)
        except StimulusError as e:
            self._fail(index, e)
            return None

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Images start..stop as float32 (n, 3, 227, 227) in [0, 1], exactly as the original."""
        if self.array is not None:
            rounded = preprocess_array(self.array[start:stop])
        else:
            rounded = np.zeros((stop - start, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
            for i in range(start, stop):
                img = self.image(i)
                if img is not None:
                    rounded[i - start] = preprocess_array(img[None])[0]
        rounded /= np.float32(255)
        return rounded


def preprocess_array(images: np.ndarray) -> np.ndarray:
    """(n, 3, 227, 227) float32 of whole values 0-255 from validated (n, 3, H, W) integer
    images: the exact resize. With ``preprocess_image``, the one path from pixels to model
    input (before the division by 255), for ``encode`` and for experiments."""
    return resize_rounded(images, (INPUT_SIZE, INPUT_SIZE))


def preprocess_image(
    source: ImageSource, background: tuple[int, int, int] = WHITE, data: bytes | None = None
) -> np.ndarray:
    """(3, 227, 227) float32 of whole values 0-255 of one image file or PIL image: decoded
    by ``load_image`` (``data``: the file's bytes, already read), then resized exactly."""
    return preprocess_array(load_image(source, background, data)[None])[0]


def as_stimulus(
    stimulus: Any, on_error: str = "fail", background: tuple[int, int, int] = WHITE
) -> Stimulus:
    """Validate what the caller passed; raises StimulusError naming what was expected.

    ``on_error`` ("fail" or "skip") and ``background`` (what transparent
    pixels are composited onto) apply to image files and PIL images.
    File paths are checked to exist here; they are decoded while encoding.
    """
    if isinstance(stimulus, Stimulus):
        return stimulus
    if on_error not in ON_ERROR:
        raise InvalidParameterError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    background = check_background(background)
    if isinstance(stimulus, np.ndarray):
        _check_array(stimulus)
        return Stimulus(array=stimulus, sources=None)
    if is_pil_image(stimulus) or isinstance(stimulus, (str, os.PathLike)):
        stimulus = [stimulus]
    if not isinstance(stimulus, (list, tuple)) and _array_like(stimulus):
        raise StimulusError(
            f"Got a {type(stimulus).__name__}; expected {EXPECTED}. It converts to numpy: "
            "pass np.asarray(x) (a torch tensor: x.cpu().numpy())."
        )
    if isinstance(stimulus, Sequence) and not isinstance(stimulus, (bytes, bytearray)):
        items = tuple(stimulus)
        if not items:
            raise StimulusError(f"Got an empty list; expected {EXPECTED}.")
        for i, item in enumerate(items):
            if not (is_pil_image(item) or isinstance(item, (str, os.PathLike))):
                hint = (
                    " For a list of (3, H, W) arrays of one size, pass np.stack(images)."
                    if isinstance(item, np.ndarray)
                    else ""
                )
                raise StimulusError(
                    f"Item {i} of the list is a {type(item).__name__}; expected PIL images "
                    f"or image file paths (or pass one array: {EXPECTED}).{hint}"
                )
        stim = Stimulus(array=None, sources=items, on_error=on_error, background=background)
        for i, item in enumerate(items):  # a typo fails now, not after hours of encoding
            if not is_pil_image(item) and not os.path.isfile(item):
                where = Path(item)
                why = "is a broken symbolic link" if os.path.islink(where) else "not found"
                what = (
                    "is a folder, not an image file (for its images, pass "
                    "berg_onnx.scan_images([folder]).files)"
                    if where.is_dir()
                    else why
                )
                stim._fail(i, StimulusError(f"Image file {where} {what}."))
        return stim
    raise StimulusError(f"Got a {type(stimulus).__name__}; expected {EXPECTED}.")


def load_npy_stimulus(path: str | os.PathLike[str]) -> Stimulus:
    """A ``.npy`` stimulus file, header-checked and memory-mapped, then validated.

    The one path for stimulus files (CLI, experiments): ``open_npy_stimulus``
    refuses crafted headers before mapping, ``as_stimulus`` judges dtype, shape
    and values with its hints; either error names the file.
    """
    from berg_onnx.utils.fileio import open_npy_stimulus

    array = open_npy_stimulus(path)
    try:
        return as_stimulus(array)
    except StimulusError as e:
        raise StimulusError(f"{path}: {e}") from None


def read_inputs(
    items: Sequence[str | os.PathLike[str]],
) -> tuple[Stimulus | None, ScanResult | None]:
    """What a command names as its images, by the one rule ``encode`` and ``run`` share:
    one ``.npy`` stimulus array (``load_npy_stimulus``: header-checked, memory-mapped,
    validated) or image files and folders (``scan_images``), never both.

    Returns (the array's Stimulus, None) or (None, the scan).
    """
    npys = [i for i in items if os.fspath(i).lower().endswith(".npy")]
    if npys:
        if len(items) != 1:
            raise StimulusError(
                "give either one .npy stimulus array or image files/folders, not both"
            )
        path = Path(npys[0])
        if not path.is_file():
            raise StimulusError(f"no such file: {path}")
        return load_npy_stimulus(path), None
    from berg_onnx.inputs.scan import scan_images  # the folder rules load on first use

    return None, scan_images(items)


def _array_like(obj: Any) -> bool:
    """Whether np.asarray(obj) would give an array (tensors, memoryviews, array wrappers)."""
    if isinstance(obj, (str, bytes, bytearray)):
        return False
    if hasattr(obj, "__array__") or hasattr(obj, "__array_interface__"):
        return True
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True
