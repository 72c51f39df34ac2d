"""Image files and PIL images -> (3, H, W) uint8 (images.py), on real files Pillow wrote.

Findings of issue 11: 16-bit and float files (1), EXIF orientation (2), alpha (3),
shared and closed PIL images (5), decompression bombs and truncated files (10).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from berg_onnx import BERG, StimulusError
from berg_onnx.inputs.images import load_image

MODEL = "fmri-nsd-fwrf"


@pytest.fixture(scope="module")
def photo(artifacts_dir) -> np.ndarray:
    """One natural (3, 256, 256) uint8 photograph."""
    return np.load(artifacts_dir / "reference" / "photos_256_uint8.npy")[0]


def _round_div(v: np.ndarray, d: int) -> np.ndarray:
    """round(v / d) half to even, in float64 (the reference for the integer formula)."""
    return np.round(v.astype(np.float64) / d).astype(np.uint8)


# -- 16-bit and 32-bit single-channel images (finding 1) --------------------------------------
def test_16bit_png_is_scaled_not_clipped(tmp_path, berg, model):
    v = np.linspace(0, 65535, 90000).reshape(300, 300).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(v).save(path)
    assert Image.open(path).mode.startswith("I")
    got = load_image(path)
    expected = _round_div(v, 257)
    assert got.dtype == np.uint8 and got.shape == (3, 300, 300)
    assert np.array_equal(got, np.repeat(expected[None], 3, axis=0))
    assert 120 <= got.mean() <= 135  # a ramp: mid-gray on average, not white
    # encode the file == encode the 8-bit array the README's rule gives
    direct = berg.encode(model, np.repeat(expected[None, None], 3, axis=1), show_progress=False)
    np.testing.assert_array_equal(berg.encode(model, [path], show_progress=False), direct)


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16bit_pil_images_in_both_byte_orders(dtype):
    v = np.array([[0, 128, 129, 385], [386, 65535, 65407, 32896]], dtype=dtype)
    img = Image.fromarray(v)
    assert img.mode in ("I;16", "I;16B", "I;16L")
    got = load_image(img)[0]
    assert np.array_equal(got, _round_div(v, 257))
    assert got.tolist() == [[0, 0, 1, 1], [2, 255, 255, 128]]


def test_16bit_pgm_opened_as_mode_I_is_16bit(tmp_path):
    v = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5\n8 8\n65535\n" + v.astype(">u2").tobytes())
    img = Image.open(path)
    got = load_image(path)[0]
    assert np.array_equal(got, _round_div(v, 257)), img.mode


def test_float_tiff_and_32bit_integer_images_are_refused(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(path)
    with pytest.raises(StimulusError, match=r"(?s)mode 'F'.*np\.round\(255"):
        load_image(path)
    with pytest.raises(StimulusError, match="mode 'I'"):
        load_image(Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8)))


# -- EXIF orientation (finding 2) -------------------------------------------------------------
def test_exif_orientation_6_jpeg_is_encoded_upright(tmp_path, photo, berg, model):
    stored = photo[:, :, :200]  # not square: a sideways image has another shape
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(stored.transpose(1, 2, 0)).save(path, quality=95, exif=exif)
    got = load_image(path)
    with Image.open(path) as raw:
        decoded = np.asarray(raw.convert("RGB"))  # the same JPEG decode, without EXIF applied
    upright = np.rot90(decoded, k=-1).transpose(2, 0, 1)  # 90 degrees clockwise
    assert got.shape == (3, 200, 256) and np.array_equal(got, upright)
    encoded = berg.encode(model, [path], show_progress=False)
    np.testing.assert_array_equal(encoded, berg.encode(model, upright[None], show_progress=False))


# -- transparency (finding 3) ------------------------------------------------------------------
def _composite_reference(rgb: np.ndarray, alpha: np.ndarray, bg) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    out = np.round(rgb * a + np.asarray(bg, np.float64) * (1 - a))
    return out.astype(np.uint8).transpose(2, 0, 1)


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (10, 200, 77)])
def test_rgba_png_is_composited_exactly(tmp_path, background):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[:5, :, 3] = 0  # fully transparent rows with garbage colour
    rgba[5:10, :, 3] = 255
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    got = load_image(path, background=background)
    assert np.array_equal(got, _composite_reference(rgba[..., :3], rgba[..., 3], background))
    assert (got[:, :5] == np.array(background)[:, None, None]).all()


def test_la_palette_and_trns_images_are_composited(tmp_path):
    la = np.stack(
        [np.full((4, 4), 100, np.uint8), np.tile(np.array([0, 85, 170, 255], np.uint8), (4, 1))], -1
    )
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    got = load_image(tmp_path / "la.png")
    assert np.array_equal(
        got, _composite_reference(np.repeat(la[..., :1], 3, -1), la[..., 1], (255,) * 3)
    )

    pal = Image.new("P", (4, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1, 0, 1])
    pal.save(tmp_path / "p.png", transparency=1)  # index 1 (blue) transparent
    got = load_image(tmp_path / "p.png")
    assert got[:, 0, :].T.tolist() == [[255, 0, 0], [255, 255, 255]] * 2

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "t.png", transparency=(10, 20, 30))  # tRNS colour key
    got = load_image(tmp_path / "t.png", background=(1, 2, 3))
    assert got[:, 0, 0].tolist() == [1, 2, 3] and got[:, 1, 1].tolist() == [0, 0, 0]

    gray = np.array([[7, 50]], np.uint8)
    Image.fromarray(gray).save(tmp_path / "lt.png", transparency=7)
    assert load_image(tmp_path / "lt.png")[:, 0, :].T.tolist() == [[255] * 3, [50] * 3]


def test_grayscale_is_replicated(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(g).save(tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png"), np.repeat(g[None], 3, axis=0))


# -- PIL image objects (finding 5) -------------------------------------------------------------
def test_one_lazy_pil_image_shared_by_many_rows(tmp_path, photo, export_dir):
    path = tmp_path / "p.png"
    Image.fromarray(photo.transpose(1, 2, 0)).save(path)
    berg = BERG(berg_dir=export_dir, threads=4)  # several workers, even on fewer cores
    model = berg.get_encoding_model(MODEL, 1, {"roi": "V1"}, device="cpu")
    for _ in range(3):
        shared = Image.open(path)  # lazily decoded: the first workers race to load it
        got = berg.encode(model, [shared] * 20, show_progress=False)
        assert np.isfinite(got).all()
        assert (got == got[0]).all()
    np.testing.assert_array_equal(got[0], berg.encode(model, photo[None], show_progress=False)[0])


def test_closed_pil_image_is_a_stimulus_error(tmp_path, photo, berg, model):
    path = tmp_path / "p.png"
    Image.fromarray(photo.transpose(1, 2, 0)).save(path)
    with Image.open(path) as img:
        pass  # closed before it was ever decoded
    with pytest.raises(StimulusError, match="closed"):
        berg.encode(model, [img], show_progress=False)
    img = Image.open(path)
    img.load()
    img.close()  # close() (unlike leaving a with block) frees the pixels too
    with pytest.raises(StimulusError, match="closed"):
        berg.encode(model, img, show_progress=False)


# -- damaged and oversized files (findings 9, 10) ----------------------------------------------
def test_truncated_jpeg_names_the_file(tmp_path, photo, berg, model):
    path = tmp_path / "cut.jpg"
    Image.fromarray(photo.transpose(1, 2, 0)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(StimulusError, match=r"cut\.jpg"):
        berg.encode(model, [path], show_progress=False)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its data is a stub: only the header is read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [10_000, 13_500])  # Pillow warns above 89.5 MP, errors above 179
def test_decompression_bomb_is_one_stimulus_error(tmp_path, side, berg, model):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    with pytest.raises(StimulusError, match=r"(?s)bomb\.png.*MAX_IMAGE_PIXELS"):
        berg.encode(model, [path], show_progress=False)


def test_not_found_and_not_an_image(tmp_path, berg, model):
    with pytest.raises(StimulusError, match="not found"):
        berg.encode(model, [tmp_path / "nope.png"], show_progress=False)
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(StimulusError, match=r"Cannot read .*x\.png"):
        berg.encode(model, [Path(tmp_path / "x.png")], show_progress=False)


def test_damaged_file_behind_a_lazy_pil_image(tmp_path, photo, berg, model):
    path = tmp_path / "d.png"
    Image.fromarray(photo.transpose(1, 2, 0)).save(path)
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(60)  # garbage in the image data: found only when decoding
    path.write_bytes(bytes(data))
    img = Image.open(path)  # the header is fine
    with pytest.raises(StimulusError, match=r"d\.png"):
        berg.encode(model, [img], show_progress=False)
