"""resize_rounded must equal torch's antialiased bilinear resize + round, pixel for pixel.

The runtime replaces torchvision ``Resize((227, 227))`` on integer tensors by a
numpy port; a single pixel off by one changes the network input, so every
comparison here demands zero differing pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from berg_onnx.inputs.resize import resize_rounded
from tests._support.golden import golden_root

torch = pytest.importorskip("torch")
F = torch.nn.functional

_CAPABILITY = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
# resize_rounded reproduces the summation order of torch's AVX2/AVX512 kernels
# (FMA-contracted); the scalar DEFAULT build sums differently.
pytestmark = pytest.mark.skipif(
    _CAPABILITY not in {"AVX2", "AVX512"},
    reason=f"torch CPU capability {_CAPABILITY}: reference order is AVX2/AVX512",
)

GOLDEN = golden_root()
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "camera.png",
    "brick.png",
)
SIZES = [(64, 64), (96, 96), (227, 227), (256, 256), (425, 425), (375, 500)]


def torch_ref(x_int: np.ndarray, size: tuple[int, int] = (227, 227)) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x_int)).float()
    y = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().numpy()


def assert_same(x: np.ndarray, size: tuple[int, int] = (227, 227)) -> None:
    ours = resize_rounded(x, size)
    ref = torch_ref(x, size)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    bad = np.argwhere(ours != ref)
    assert bad.size == 0, (
        f"{len(bad)} of {ref.size} pixels differ for input {x.shape} {x.dtype} -> {size}; "
        f"first at {bad[0].tolist()}: ours {ours[tuple(bad[0])]} torch {ref[tuple(bad[0])]}"
    )


def _photos() -> list:
    skimage = pytest.importorskip("skimage")
    image_mod = pytest.importorskip("PIL.Image")
    data_dir = Path(skimage.__file__).resolve().parent / "data"
    images = [
        image_mod.open(data_dir / name).convert("RGB")
        for name in PHOTOS
        if (data_dir / name).is_file()
    ]
    if len(images) < 2:
        pytest.skip(f"too few of the scikit-image sample photographs found in {data_dir}")
    return images


def _photo_batch(h: int, w: int) -> np.ndarray:
    """Natural photographs at (h, w): a native-resolution crop and a resized view of each."""
    from PIL import Image

    out = []
    for img in _photos():
        iw, ih = img.size
        if iw >= w and ih >= h:
            left, top = (iw - w) // 3, (ih - h) // 3
            out.append(np.asarray(img.crop((left, top, left + w, top + h))))
        # Largest centred crop with the target aspect ratio, resized by Pillow.
        cw, ch = min(iw, ih * w // h), min(ih, iw * h // w)
        box = ((iw - cw) // 2, (ih - ch) // 2, (iw - cw) // 2 + cw, (ih - ch) // 2 + ch)
        out.append(np.asarray(img.resize((w, h), Image.Resampling.BICUBIC, box=box)))
    return np.stack(out).transpose(0, 3, 1, 2).copy()


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
@pytest.mark.parametrize(("h", "w"), SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_photographs(h: int, w: int, dtype: type) -> None:
    x = _photo_batch(h, w).astype(dtype)
    assert x.shape[1:] == (3, h, w)
    assert_same(x)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
@pytest.mark.parametrize(("h", "w"), SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_noise(h: int, w: int, dtype: type) -> None:
    rng = np.random.default_rng(h * 1000 + w)
    assert_same(rng.integers(0, 256, size=(4, 3, h, w)).astype(dtype))


@pytest.mark.parametrize(("h", "w"), SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_colour_ramp(h: int, w: int) -> None:
    yy, xx = np.mgrid[0:h, 0:w]
    r = 255 * xx / max(w - 1, 1)
    g = 255 * yy / max(h - 1, 1)
    b = 255 * (xx + yy) / max(h + w - 2, 1)
    ramp = np.stack([r, g, b])
    x = np.stack([ramp, 255 - ramp, (ramp * 7) % 256]).round().astype(np.uint8)
    assert_same(x)


def test_passthrough_at_target_size() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(2, 3, 227, 227), dtype=np.uint8)
    out = resize_rounded(x)
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert_same(x)


def test_random_sizes() -> None:
    rng = np.random.default_rng(12345)
    photos = _photos()
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 700, size=2))
        # Output width >= 2: for width 1 torch's vertical pass repeats its first row.
        size = (227, 227) if rng.random() < 0.6 else tuple(int(v) for v in rng.integers(2, 500, 2))
        n = int(rng.integers(1, 4))
        noise = rng.integers(0, 256, size=(n, 3, h, w), dtype=np.uint8)
        img = photos[int(rng.integers(len(photos)))].resize((w, h))
        photo = np.asarray(img).transpose(2, 0, 1)[None]
        x = np.concatenate([noise, photo])
        assert_same(x.astype(np.int64) if rng.random() < 0.3 else x, size)


def test_golden_stimuli() -> None:
    path = GOLDEN / "stimuli_400_uint8.npy"
    assert path.is_file(), f"golden stimuli not found at {path} (tests/golden is committed)"
    stimuli = np.load(path)
    assert_same(stimuli)
    assert_same(stimuli.astype(np.int64))
