"""Image files of every format, bit depth and mode the page accepts, and a few it refuses.

PNGs are written by a small writer of our own (every colour type and bit depth,
tRNS, Adam7 interlacing, all five filter types, eXIf), since Pillow writes only
some of these; the other formats by Pillow. berg_onnx.load_image gives the
expected pixels of each file; the page (web/page/decode.js) and berg.js's
PNG decoder must give the same, value for value.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from export.samples import photo_paths

# Adam7 passes: x0, y0, dx, dy.
ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack_rows(samples: np.ndarray, depth: int) -> list[bytes]:
    """(H, W*C) integer samples -> one packed byte string per row."""
    rows = []
    for row in samples:
        if depth == 16:
            rows.append(row.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(row.astype(np.uint8).tobytes())
        else:
            per = 8 // depth
            padded = np.zeros(-(-len(row) // per) * per, dtype=np.uint8)
            padded[: len(row)] = row
            groups = padded.reshape(-1, per)
            shifts = np.array([8 - depth * (i + 1) for i in range(per)], dtype=np.uint8)
            rows.append((groups << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


def _filter(rows: list[bytes], bpp: int, first_filter: int) -> bytes:
    """Each row with a filter byte; the filter type cycles 0-4 so that all are exercised."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b""
    for y, row in enumerate(rows):
        f = (first_filter + y) % 5
        x = np.frombuffer(row, np.uint8).astype(np.int32)
        b = np.frombuffer(prev, np.uint8).astype(np.int32)
        a = (
            np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
            if len(x) > bpp
            else np.zeros_like(x)
        )
        c = (
            np.concatenate([np.zeros(bpp, np.int32), b[:-bpp]])
            if len(b) > bpp
            else np.zeros_like(b)
        )
        if f == 0:
            r = x
        elif f == 1:
            r = x - a
        elif f == 2:
            r = x - b
        elif f == 3:
            r = x - (a + b) // 2
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            r = x - pred
        out.append(f)
        out += (r & 0xFF).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


def write_png(
    path: Path,
    samples: np.ndarray,
    color_type: int,
    depth: int,
    *,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    exif: bytes | None = None,
    extra: bytes = b"",
) -> Path:
    """samples: (H, W, C) integers in the file's own scale (e.g. 0-3 at depth 2)."""
    h, w, c = samples.shape
    assert c == CHANNELS[color_type]
    bpp = max(1, c * depth // 8)
    raw = b""
    if not interlace:
        raw = _filter(_pack_rows(samples.reshape(h, w * c), depth), bpp, 0)
    else:
        for k, (x0, y0, dx, dy) in enumerate(ADAM7):
            sub = samples[y0::dy, x0::dx]
            if sub.size:
                raw += _filter(_pack_rows(sub.reshape(sub.shape[0], -1), depth), bpp, k)
    data = b"\x89PNG\r\n\x1a\n"
    data += _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    data += extra
    if exif is not None:
        data += _chunk(b"eXIf", exif)
    if palette is not None:
        data += _chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        data += _chunk(b"tRNS", trns)
    z = zlib.compress(raw, 6)
    data += _chunk(b"IDAT", z[: len(z) // 2]) + _chunk(b"IDAT", z[len(z) // 2 :])  # two IDATs
    data += _chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def exif_orientation(value: int) -> bytes:
    """A little-endian TIFF-structured EXIF block with just the Orientation tag."""
    return (
        b"II*\x00"
        + struct.pack("<IH", 8, 1)
        + struct.pack("<HHII", 0x0112, 3, 1, value)
        + b"\0\0\0\0"
    )


def xmp_orientation(value: int) -> bytes:
    """An XMP packet with just ``tiff:Orientation`` (Pillow's getexif() reads it)."""
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="%d"/></rdf:RDF>'
        b"</x:xmpmeta>" % value
    )


def photo(width: int, height: int, index: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 from a natural photograph."""
    with Image.open(photo_paths()[index % len(photo_paths())]) as im:
        return np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def write_corpus(folder: Path) -> list[Path]:
    """Every case, as files in ``folder``; returns their paths."""
    rng = np.random.default_rng(23)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    rgb = photo(53, 41, 0)
    gray8 = np.asarray(Image.fromarray(rgb).convert("L"))
    alpha = rng.integers(0, 256, gray8.shape, dtype=np.uint16)
    alpha[::3] = 255
    alpha[1::7] = 0
    g16 = gray8.astype(np.uint32) * 257 + rng.integers(-128, 129, gray8.shape)
    g16 = g16.clip(0, 65535).astype(np.uint16)
    g16[0, :6] = [0, 128, 129, 385, 65407, 65535]  # around the rounding boundaries
    rgb16 = (rgb.astype(np.uint32) * 257 + rng.integers(0, 257, rgb.shape)).astype(np.uint16)

    def png(name, samples, ct, depth, **kw):
        out.append(write_png(folder / f"{name}.png", samples, ct, depth, **kw))

    for depth in (1, 2, 4):
        png(f"gray{depth}", (gray8 >> (8 - depth))[..., None], 0, depth)
    png("gray8", gray8[..., None], 0, 8)
    png("gray16", g16[..., None], 0, 16)
    png("gray16-interlaced", g16[..., None], 0, 16, interlace=True)
    png("gray8-trns", gray8[..., None], 0, 8, trns=struct.pack(">H", int(gray8[5, 5])))
    png("gray16-trns", g16[..., None], 0, 16, trns=struct.pack(">H", int(g16[7, 3])))
    png("gray2-trns", (gray8 >> 6)[..., None], 0, 2, trns=struct.pack(">H", 1))
    png("rgb8", rgb, 2, 8)
    png("rgb8-interlaced", rgb, 2, 8, interlace=True)
    png("rgb16", rgb16, 2, 16)
    png("rgb8-trns", rgb, 2, 8, trns=struct.pack(">HHH", *map(int, rgb[10, 10])))
    png("rgba8", np.dstack([rgb, alpha]), 6, 8)
    png("rgba16", np.dstack([rgb16, alpha * 257 + 3]), 6, 16)
    png("gray-alpha8", np.dstack([gray8, alpha]), 4, 8)
    png("gray-alpha16", np.dstack([g16, alpha * 257 + 100]), 4, 16, interlace=True)
    for depth in (1, 2, 4, 8):
        colors = 1 << depth
        pal = rng.integers(0, 256, (colors, 3))
        idx = (gray8.astype(np.uint32) * colors // 256)[..., None]
        png(f"palette{depth}", idx, 3, depth, palette=pal)
        trns = bytes(rng.integers(0, 256, max(1, colors // 2 + 1)).astype(np.uint8))
        png(f"palette{depth}-trns", idx, 3, depth, palette=pal, trns=trns, interlace=depth == 4)
    for o in (2, 3, 5, 6, 7, 8):
        png(f"rgb8-exif{o}", rgb, 2, 8, exif=exif_orientation(o))
    # An orientation in XMP only is ignored, by browsers and berg_onnx alike; with EXIF
    # beside it, EXIF's counts.
    itxt = _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp_orientation(6))
    png("rgb8-xmp6", rgb, 2, 8, extra=itxt)
    png("rgb8-exif3-xmp6", rgb, 2, 8, extra=itxt, exif=exif_orientation(3))
    gama = _chunk(b"gAMA", struct.pack(">I", 100000))  # a gamma a browser would apply
    png("rgb8-gama", rgb, 2, 8, extra=gama)

    # Pillow-written formats the browser decodes.
    big = photo(160, 120, 1)
    im = Image.fromarray(big)

    def save(name, image, **kw):
        path = folder / name
        image.save(path, **kw)
        out.append(path)

    save("photo.jpg", im, quality=90)
    save("photo-444.jpg", im, quality=95, subsampling=0)
    save("photo-progressive.jpg", im, quality=85, progressive=True)
    save("gray.jpg", im.convert("L"), quality=90)
    ex = Image.Exif()
    ex[0x0112] = 6
    save("photo-exif6.jpg", im, quality=90, exif=ex.tobytes())
    ex[0x0112] = 3
    save("photo-exif3.jpg", im, quality=90, exif=ex.tobytes())
    save("photo-xmp6.jpg", im, quality=90, xmp=xmp_orientation(6))
    ex[0x0112] = 3
    save("photo-exif3-xmp6.jpg", im, quality=90, exif=ex.tobytes(), xmp=xmp_orientation(6))
    save("photo-lossy.webp", im, quality=80)
    save("photo-lossless.webp", im, lossless=True)
    rgba = Image.fromarray(np.dstack([big, rng.integers(0, 256, big.shape[:2], dtype=np.uint8)]))
    save("photo-alpha-lossless.webp", rgba, lossless=True)
    save("photo-alpha-lossy.webp", rgba, quality=80)
    ex[0x0112] = 6
    save("photo-exif6.webp", rgba, lossless=True, exif=ex.tobytes())
    ex[0x0112] = 8
    save("photo-exif8-lossy.webp", im, quality=80, exif=ex.tobytes())
    save("photo-xmp6.webp", im, lossless=True, xmp=xmp_orientation(6))
    save("photo.gif", im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))
    pal = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    save("photo-transparent.gif", pal, transparency=3)
    save("photo.bmp", im)
    save("photo-palette.bmp", im.convert("P", palette=Image.Palette.ADAPTIVE, colors=200))
    save("gray.bmp", im.convert("L"))
    return out


def refused(folder: Path) -> dict[Path, str]:
    """Files the page must refuse, with a word its message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(photo(40, 30, 2))
    cases = {}
    tif = folder / "scan.tif"
    im.save(tif)
    cases[tif] = "cannot decode TIFF"
    cmyk = folder / "print.jpg"
    im.convert("CMYK").save(cmyk, quality=90)
    cases[cmyk] = "CMYK"
    txt = folder / "notes.txt"
    txt.write_text("not an image\n")
    cases[txt] = "not an image file"
    png = io.BytesIO()
    im.save(png, format="PNG")
    cut = folder / "truncated.png"
    cut.write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    cases[cut] = "truncated"
    return cases
