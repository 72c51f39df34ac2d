"""Image files and PIL images -> (3, H, W) uint8: the one documented conversion.

Every image that reaches a model goes through :func:`load_image`, so files,
PIL images, the CLI and the experiment runner all see the same pixels:

1. EXIF orientation is applied (``ImageOps.exif_transpose``), as every viewer
   does: a phone photo is encoded upright. An orientation given only in XMP
   metadata is not: browsers ignore it, and the page (web/) must see the same
   pixels.
2. Single-channel 16-bit images (modes ``I;16``, ``I;16B``, ``I;16L``,
   ``I;16N``, and mode ``I`` when Pillow decodes it from 16-bit samples, as
   older Pillow versions open 16-bit PNG/TIFF) are scaled to 8 bits as
   ``round(v / 257)``, which maps 0..65535 onto 0..255 exactly and is never a
   tie, so half-to-even and half-up agree. ``Image.convert("RGB")`` would clip
   them to nearly white. (16-bit RGB files are decoded by Pillow to 8 bits
   already and stay as Pillow gives them.)
3. Transparency (RGBA, LA, PA, premultiplied RGBa/La, palette or RGB/L images
   with a ``transparency`` entry, e.g. PNG tRNS) is composited onto a
   background, white by default, as viewers and browsers show such images:
   ``out = round((c * a + b * (255 - a)) / 255)``, computed exactly in
   integers (the quotient is never a tie, since 255 is odd).
4. Grayscale is replicated to three channels; other modes (CMYK, YCbCr, HSV,
   1-bit) go through Pillow's ``convert("RGB")``.
5. 32-bit integer (``I``) and float (``F``) images are refused with a
   ``StimulusError`` naming the mode: their value range is unknown, so any
   scaling would be a guess.

Files larger than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``,
where Pillow warns) are refused with a ``StimulusError``. Multi-frame files
(GIF, TIFF) give their first frame.

A PIL image object may appear several times in one stimulus list (or in
several lists encoded from different threads): Pillow decodes lazily and is
not safe to decode from two threads at once, so each object is converted
under a lock chosen by its identity.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np

from berg_onnx.errors import StimulusError

ImageSource = Union[str, os.PathLike, Any]  # Any: PIL.Image.Image (Pillow imported lazily)
#: What transparent pixels are composited onto, unless the caller picks another colour.
WHITE = (255, 255, 255)
#: Single-channel 16-bit modes, in every byte order Pillow names.
MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")
#: Raw decoder modes that make a mode-"I" image an unsigned 16-bit one (signed ones,
#: "I;16S" etc., can be negative: refused like other 32-bit integer images).
_RAW_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

# Striped locks: the same object always maps to the same lock, while it lives.
_LOCKS = tuple(threading.Lock() for _ in range(64))
# Warning filters are process-wide; opening under one lock keeps our own
# catch_warnings blocks from racing each other (opening reads headers only).
_OPEN_LOCK = threading.Lock()


def is_pil_image(obj: Any) -> bool:
    """Whether ``obj`` is a PIL image, without importing Pillow."""
    mod = type(obj).__module__ or ""
    return mod.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "size")


def check_background(background: Any) -> tuple[int, int, int]:
    """An (r, g, b) tuple of ints 0-255, or a StimulusError."""
    try:
        values = tuple(int(v) for v in background)
        ok = len(values) == 3 and all(
            not isinstance(c, bool) and c == v and 0 <= v <= 255
            for v, c in zip(values, background, strict=True)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise StimulusError(
            f"background must be an (r, g, b) tuple of integers 0-255, got {background!r}."
        )
    return values  # type: ignore[return-value]


def load_image(
    source: ImageSource, background: tuple[int, int, int] = WHITE, data: bytes | None = None
) -> np.ndarray:
    """(3, H, W) uint8 of an image file or PIL image, converted as the module docstring says.

    ``data``: the file's bytes, already read (the experiment runner hashes them
    on the way); errors still name the file ``source``.
    Errors (missing file, not an image, truncated data, decompression bomb,
    unsupported mode, closed PIL image) are ``StimulusError``s naming the file.
    """
    background = check_background(background)
    if is_pil_image(source):
        filename = getattr(source, "filename", "") or ""
        name = f"the PIL image of {filename}" if filename else "the PIL image"
        with _LOCKS[id(source) % len(_LOCKS)]:
            try:
                return _to_chw(source, background, name)
            except StimulusError:
                raise
            except (ValueError, AssertionError, AttributeError) as e:
                if not isinstance(e, AssertionError) and "closed" not in str(e):
                    raise StimulusError(f"Cannot convert {name}: {e}") from None
                # "Operation on closed image", or load()'s assert on a closed file
                raise StimulusError(
                    f"Cannot read {name}: it was closed (e.g. used after its "
                    "`with Image.open(...)` block or after img.close()); keep it open until "
                    "encode() returns, or pass the file path instead."
                ) from None
            except (OSError, SyntaxError, EOFError) as e:  # truncated or damaged data
                raise StimulusError(f"Cannot decode {name}: {e}") from None
    path = Path(source)
    img = open_image(path, data)
    try:
        return _to_chw(img, background, str(path))
    except StimulusError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or damaged data
        raise StimulusError(f"Cannot read {path} as an image: {e}") from None
    finally:
        img.close()


def open_image(path: Path, data: bytes | None = None) -> Any:
    """A lazily decoded PIL image of ``path`` (or of its bytes ``data``, already read); file,
    format and size problems as StimulusError naming ``path``."""
    from PIL import Image, UnidentifiedImageError

    if data is not None and not data:
        raise StimulusError(f"Cannot read {path} as an image: the file is empty (0 bytes).")
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path if data is None else io.BytesIO(data))
    except FileNotFoundError:
        if os.path.islink(path):
            raise StimulusError(f"Image file {path} is a broken symbolic link.") from None
        raise StimulusError(f"Image file not found: {path}") from None
    except IsADirectoryError:
        raise StimulusError(f"{path} is a folder, not an image file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise StimulusError(
            f"Refusing {path}: {e} Pillow's limit (PIL.Image.MAX_IMAGE_PIXELS) guards against "
            "decompression bombs; raise it yourself if you trust the file."
        ) from None
    except UnidentifiedImageError:
        if data is None and _is_empty(path):
            raise StimulusError(
                f"Cannot read {path} as an image: the file is empty (0 bytes)."
            ) from None
        raise StimulusError(
            f"Cannot read {path} as an image: Pillow does not recognise its format."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise StimulusError(f"Cannot read {path} as an image: {e}") from None


def _is_empty(path: Path) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _orientation(img: Any) -> int:
    """The EXIF Orientation tag: the file's EXIF block (JPEG APP1, PNG eXIf, WebP EXIF),
    or a TIFF's own directory. Not XMP's ``tiff:Orientation``, which Pillow's getexif()
    falls back to but browsers ignore: the page (web/) must see the same pixels."""
    from PIL import Image

    try:
        raw = img.info.get("exif")
        if isinstance(raw, bytes):
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        tags = getattr(img, "tag_v2", None)  # TIFF
        return int(tags.get(0x0112, 1)) if tags is not None else 1
    except Exception:  # noqa: BLE001 - a damaged EXIF block: no rotation, as viewers do
        return 1


def _raw_mode(img: Any) -> str | None:
    """The decoder's raw mode before load() (e.g. 'I;16B' for a 16-bit PNG), if known."""
    tile = getattr(img, "tile", None) or []
    if not tile:
        return None
    args = tile[0][3] if len(tile[0]) > 3 else None
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


def _to_chw(img: Any, background: tuple[int, int, int], name: str) -> np.ndarray:
    is_16bit = img.mode in MODES_16BIT or (img.mode == "I" and (_raw_mode(img) or "") in _RAW_16BIT)
    if img.mode in ("I", "F") and not is_16bit or img.mode.startswith("I;32"):
        raise StimulusError(_refusal(img.mode, name))
    check_pixels(img.size, name)  # from the header, before anything is decoded
    img.load()
    if _orientation(img) != 1:
        from PIL import ImageOps  # only for rotated images: cold start

        img = ImageOps.exif_transpose(img)
    out = np.empty((3, img.size[1], img.size[0]), dtype=np.uint8)
    if is_16bit:
        for y0, y1, strip in _strips(img):
            out[:, y0:y1] = _from_16bit(strip, background)
        return out
    transparent = img.mode in _ALPHA_MODES or "transparency" in img.info
    for y0, y1, strip in _strips(img):
        if transparent:
            rgba = np.asarray(strip.convert("RGBA"))
            out[:, y0:y1] = _composite(rgba[..., :3], rgba[..., 3], background)
            continue
        try:
            rgb = strip.convert("RGB")
        except ValueError as e:
            raise StimulusError(f"Cannot convert {name} (mode {img.mode}) to RGB: {e}") from None
        out[:, y0:y1] = np.asarray(rgb).transpose(2, 0, 1)
    return out


#: Pixels converted at a time: every conversion below is per pixel, so converting the
#: decoded image in strips of rows gives the same bytes in bounded extra memory.
_STRIP_PIXELS = 1 << 20


def _strips(img: Any) -> Any:
    """(first row, end row, the decoded image's rows as a PIL image) covering ``img``."""
    width, height = img.size
    step = max(1, _STRIP_PIXELS // max(1, width))
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        yield y0, y1, img.crop((0, y0, width, y1))


def check_pixels(size: tuple[int, int], name: str) -> None:
    """Refuse an image of more pixels than the image pixel limit (constants.py)."""
    from berg_onnx.constants import ENV_MAX_IMAGE_PIXELS, max_image_pixels

    width, height = size
    limit = max_image_pixels()
    if width * height > limit:
        raise StimulusError(
            f"Refusing {name}: {width}x{height} = {width * height} pixels, more than the "
            f"{limit}-pixel image limit (decoding it would need "
            f"{width * height * 7 / 2**30:.1f} GiB). Resize it first, or raise "
            f"{ENV_MAX_IMAGE_PIXELS} if you trust it and have the memory."
        )


def _from_16bit(img: Any, background: tuple[int, int, int]) -> np.ndarray:
    v = np.asarray(img).astype(np.uint32)
    if v.ndim != 2:
        raise StimulusError(f"Unexpected 16-bit image of shape {v.shape}; expected one channel.")
    gray = ((v + 128) // 257).astype(np.uint8)  # == round(v / 257), never a tie
    rgb = np.repeat(gray[..., None], 3, axis=2)
    trns = img.info.get("transparency")
    if isinstance(trns, int):  # a PNG tRNS gray value: those pixels are fully transparent
        alpha = np.where(v == trns, 0, 255).astype(np.uint8)
        return _composite(rgb, alpha, background)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """round((c * a + b * (255 - a)) / 255) per channel, exactly, as (3, H, W) uint8."""
    a = alpha.astype(np.uint32)[None]
    c = rgb.transpose(2, 0, 1).astype(np.uint32)
    b = np.asarray(background, dtype=np.uint32)[:, None, None]
    out = (c * a + b * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _refusal(mode: str, name: str) -> str:
    kind = "32-bit floating-point" if mode == "F" else "32-bit integer"
    return (
        f"{name} is a {kind} image (PIL mode {mode!r}); its value range is unknown, so "
        "berg_onnx does not guess a scaling. Convert it to 8 bits from the range you know, "
        "e.g. for values in [lo, hi]: x = np.asarray(img, dtype=np.float64); "
        "x = np.round(255 * (x.clip(lo, hi) - lo) / (hi - lo)).astype(np.uint8); "
        "then pass np.repeat(x[None, None], 3, axis=1)."
    )
