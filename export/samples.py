"""Natural photographs for verification and the demo.

scikit-image ships a dozen photographs inside its wheel; we read the files
straight from the package folder with Pillow (importing skimage itself would
pull in scipy for nothing). Verification needs natural images, not only
noise: their smooth regions and edges exercise the model the way real
stimuli do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOGRAPHS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "camera.png",
    "brick.png",
    "grass.png",
    "coins.png",
    "moon.png",
    "gravel.png",
)


def photo_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "natural sample photographs come from scikit-image's package data; "
            'install the export extra: pip install -e ".[export]"'
        )
    return Path(spec.origin).parent / "data"


def photo_paths() -> list[Path]:
    folder = photo_dir()
    return [folder / name for name in PHOTOGRAPHS if (folder / name).is_file()]


def photographs(size: int = 256, n: int | None = None) -> np.ndarray:
    """(n, 3, size, size) uint8 centre crops of the shipped photographs.

    With n larger than the number of photographs, further images are
    shifted/mirrored crops of the same photographs, so every row differs.
    """
    paths = photo_paths()
    n = len(paths) if n is None else n
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        path = paths[i % len(paths)]
        variant = i // len(paths)
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h) * (1.0 - 0.1 * (variant % 4))
            x0 = (w - side) * ((variant * 0.37) % 1)
            y0 = (h - side) * ((variant * 0.61) % 1)
            crop = im.crop((round(x0), round(y0), round(x0 + side), round(y0 + side)))
            if variant % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop = crop.resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(crop).transpose(2, 0, 1)
    return out
