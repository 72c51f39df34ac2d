"""Torch-free checks of berg_onnx.resize (the bit-exactness against torch is in tests/export)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from berg_onnx.inputs import resize
from berg_onnx.inputs.resize import resize_rounded


def _noise(shape: tuple[int, ...], seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(dtype)


def test_passthrough_at_227() -> None:
    x = _noise((2, 3, 227, 227))
    out = resize_rounded(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    out[0, 0, 0, 0] = -1.0  # a copy, not a view of the input
    assert x[0, 0, 0, 0] >= 0


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16])
@pytest.mark.parametrize(
    ("h", "w"), [(256, 256), (425, 425), (375, 500), (500, 375), (64, 64), (227, 300), (2, 3)]
)
def test_dtype_shape_and_integral_range(h: int, w: int, dtype: type) -> None:
    out = resize_rounded(_noise((3, 3, h, w), seed=h + w, dtype=dtype))
    assert out.dtype == np.float32
    assert out.shape == (3, 3, 227, 227)
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(out, np.round(out))


def test_dtypes_agree() -> None:
    x = _noise((2, 3, 300, 260), seed=5)
    ref = resize_rounded(x)
    for dtype in (np.int16, np.int32, np.int64, np.uint16, np.uint32):
        np.testing.assert_array_equal(resize_rounded(x.astype(dtype)), ref)


def test_other_output_size() -> None:
    out = resize_rounded(_noise((1, 3, 100, 120)), size=(50, 333))
    assert out.shape == (1, 3, 50, 333)
    assert out.dtype == np.float32


@pytest.mark.parametrize("value", [0, 1, 17, 128, 254, 255])
@pytest.mark.parametrize(("h", "w"), [(256, 256), (425, 425), (375, 500), (64, 96), (1000, 31)])
def test_constant_image_stays_constant(value: int, h: int, w: int) -> None:
    x = np.full((1, 3, h, w), value, dtype=np.uint8)
    np.testing.assert_array_equal(resize_rounded(x), np.full((1, 3, 227, 227), value))


@pytest.mark.parametrize(("h", "w"), [(256, 256), (425, 425), (375, 500), (64, 64)])
def test_ramp_stays_monotone(h: int, w: int) -> None:
    ramp = np.round(np.linspace(0, 255, w)).astype(np.uint8)
    x = np.broadcast_to(ramp, (1, 3, h, w))
    out = resize_rounded(x)
    assert np.all(np.diff(out, axis=-1) >= 0)
    # Rows need not be identical: the vertical weights do not sum to exactly 1 in
    # float32, so a value like 127.5 becomes 127.49998 in some rows (torch too).
    assert np.abs(out - out[:, :, :1, :]).max() <= 1
    assert out[..., 0].min() <= 2 and out[..., -1].max() >= 253


def test_checkerboard_halved() -> None:
    # 2x2 blocks, halved: an output pixel weights its own block by 0.75 and each
    # neighbour by 0.25 per axis (triangle filter of support 2, exact binary
    # fractions), so in 2D its own colour gets 0.625 and the other 0.375.
    blocks = (np.indices((227, 227)).sum(axis=0) % 2).astype(np.uint8) * 255
    x = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)[None, None].repeat(3, axis=1)
    out = resize_rounded(x)
    inner = out[0, :, 1:-1, 1:-1]
    own = blocks[1:-1, 1:-1]
    expected = np.where(own == 255, 159.0, 96.0)  # round(159.375), round(95.625)
    np.testing.assert_array_equal(inner, np.broadcast_to(expected, inner.shape))


def test_pixel_checkerboard_halved_is_grey() -> None:
    board = (np.indices((454, 454)).sum(axis=0) % 2).astype(np.uint8) * 200
    out = resize_rounded(board[None, None].repeat(3, axis=1))
    np.testing.assert_array_equal(out[0, :, 1:-1, 1:-1], 100.0)


def test_upscale_of_two_pixels_interpolates() -> None:
    x = np.array([0, 226], dtype=np.uint8).reshape(1, 1, 1, 2).repeat(3, axis=1)
    out = resize_rounded(np.repeat(x, 227, axis=2))
    row = out[0, 0, 0]
    assert row[0] == 0 and row[-1] == 226
    assert np.all(np.diff(row) >= 0)


def test_only_one_axis_resized() -> None:
    x = _noise((2, 3, 227, 300), seed=3)
    out = resize_rounded(x)
    assert out.shape == (2, 3, 227, 227)
    # Resizing only W must treat each row independently.
    np.testing.assert_array_equal(
        resize_rounded(x[:, :, :1].repeat(227, axis=2))[:, :, 0], out[:, :, 0]
    )


def test_batch_items_independent() -> None:
    x = _noise((5, 3, 301, 257), seed=9)
    out = resize_rounded(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(resize_rounded(x[i : i + 1]), out[i : i + 1])


def test_empty_batch_and_bad_input() -> None:
    assert resize_rounded(np.zeros((0, 3, 300, 300), np.uint8)).shape == (0, 3, 227, 227)
    with pytest.raises(TypeError):
        resize_rounded(np.zeros((1, 3, 300, 300), np.float32))
    with pytest.raises(ValueError):
        resize_rounded(np.zeros((3, 300, 300), np.uint8))


def test_weights_normalised_and_cached() -> None:
    xmin, xsize, weights = resize._aa_weights(425, 227)
    assert np.all(xsize >= 1) and np.all(xmin >= 0) and np.all(xmin + xsize <= 425)
    np.testing.assert_allclose(weights.sum(axis=1, dtype=np.float64), 1.0, atol=1e-6)
    assert resize._plan(425, 227) is resize._plan(425, 227)


def _exact_fma32(t: np.float32, w: np.float32, c: np.float32) -> np.float32:
    """Correctly rounded float32 of t*w + c, with exact rational arithmetic."""
    exact = Fraction(float(t)) * Fraction(float(w)) + Fraction(float(c))
    guess = np.float32(float(exact))
    cands = [
        np.nextafter(guess, np.float32(-np.inf)),
        guess,
        np.nextafter(guess, np.float32(np.inf)),
    ]
    errs = [abs(Fraction(float(v)) - exact) for v in cands]
    best = min(errs)
    ties = [v for v, e in zip(cands, errs, strict=True) if e == best]
    if len(ties) == 1:
        return ties[0]
    return next(v for v in ties if int(np.array(v).view(np.int32)) % 2 == 0)


def _fma(t: np.ndarray, w: np.ndarray, c: np.ndarray) -> np.ndarray:
    acc = c.astype(np.float32).reshape(1, -1, 1).copy()
    tt = t.astype(np.float32).reshape(1, -1, 1)
    resize._fma_into(acc, tt, w.astype(np.float32).astype(np.float64).reshape(-1, 1), True)
    return acc.ravel()


def test_fma_emulation_avoids_double_rounding() -> None:
    # t*w = 2**-24 - 2**-70: t*w + c lies just off a float32 midpoint, and the
    # float64 sum lands exactly on it, so float64-then-float32 rounds wrongly.
    t = np.float32(1 + 2.0**-23)
    w = np.float32(2.0**-24 * (1 - 2.0**-23))
    c = np.float32(1 + 2.0**-23)
    ts = np.array([t, -t, -t], np.float32)
    cs = np.array([c, c, -c], np.float32)
    ws = np.array([w, w, -w], np.float32)
    naive = (ts.astype(np.float64) * ws.astype(np.float64) + cs).astype(np.float32)
    exact = np.array([_exact_fma32(*v) for v in zip(ts, ws, cs, strict=True)], np.float32)
    assert np.any(naive != exact)  # the case really is a double-rounding trap
    np.testing.assert_array_equal(_fma(ts, ws, cs), exact)


def test_fma_emulation_random() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    t = (rng.random(n) * 256).astype(np.float32)
    w = rng.random(n).astype(np.float32) * np.float32(2.0) ** rng.integers(-30, 1, n)
    c = (rng.random(n) * 256).astype(np.float32)
    # Force many float32 midpoints: c + t*w ~ c + half an ulp of c.
    t[: n // 2] = np.float32(1.0)
    w[: n // 2] = (
        np.spacing(c[: n // 2]) / 2 * (1 + rng.choice([-1, 1], n // 2) * 2.0**-23)
    ).astype(np.float32)
    ours = _fma(t, w, c)
    exact = np.array([_exact_fma32(*v) for v in zip(t, w, c, strict=True)], np.float32)
    np.testing.assert_array_equal(ours, exact)
