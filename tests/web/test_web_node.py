"""web/src in Node 20 against berg_onnx: resizeExact bit for bit, encode <= 1e-5.

Python writes the inputs and what berg_onnx makes of them; ``node --test``
(web/test/*.test.js) computes the same in JavaScript and compares.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from berg_onnx import BERG
from berg_onnx.inputs import resize
from berg_onnx.inputs.resize import resize_rounded
from berg_onnx.utils.fileio import sha256_file
from berg_onnx.web.server import make_server, start_in_thread, url_of
from tests._support.webref import run_node_test, write_image, write_json

pytest.importorskip("skimage", reason="natural photographs come from scikit-image (export extra)")
from PIL import Image  # noqa: E402

from export.samples import photo_paths  # noqa: E402

#: (height, width): square and not, down- and up-scaling, one axis unchanged,
#: 454 = 2 x 227 (many exact .5 values before rounding), extreme aspect ratios.
SIZES = [
    (256, 256), (425, 425), (454, 454), (600, 600), (1000, 1000),
    (64, 64), (100, 100), (200, 200), (227, 227),
    (375, 500), (500, 375), (240, 320), (227, 300), (300, 227), (180, 640),
    (768, 1024), (120, 90), (50, 150), (1000, 13), (9, 700),
]  # fmt: skip


def _photo(index: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: photograph ``index`` centre-cropped to the aspect ratio, resized by PIL."""
    paths = photo_paths()
    with Image.open(paths[index % len(paths)]) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w / h > width / height:
            cw, ch = round(h * width / height), h
        else:
            cw, ch = w, round(w * height / width)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        crop = im.crop((x0, y0, x0 + max(cw, 1), y0 + max(ch, 1)))
        return np.asarray(crop.resize((width, height), Image.Resampling.BICUBIC))


def _float_resize(chw: np.ndarray) -> np.ndarray:
    """berg_onnx's resize of one (3, H, W) uint8 image before rounding (float32)."""
    c, h, w = chw.shape
    if w != 227:
        xt = np.ascontiguousarray(chw.transpose(0, 2, 1), dtype=np.float32)
        x = np.ascontiguousarray(resize._resize_axis(xt, 227, 255).transpose(0, 2, 1))
    else:
        x = chw.astype(np.float32)
    if h != 227:
        x = resize._resize_axis(x, 227, 255 if w == 227 else None)
    return x


def test_resize_exact_matches_python(tmp_path: Path) -> None:
    cases = []
    ties = 0
    for k, (h, w) in enumerate(SIZES):
        for j in range(2):
            hwc = _photo(2 * k + j, h, w)
            chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
            rounded = resize_rounded(chw[None])[0]
            before = _float_resize(chw)
            np.testing.assert_array_equal(np.rint(before), rounded)  # the helper is the resize
            ties += int(np.count_nonzero(before - np.floor(before) == 0.5))
            case = write_image(tmp_path, f"photo{k}-{j}_{h}x{w}", hwc)
            (tmp_path / f"{case['name']}.expected.u8").write_bytes(
                rounded.astype(np.uint8).tobytes()
            )
            (tmp_path / f"{case['name']}.float.f32").write_bytes(before.astype("<f4").tobytes())
            cases.append(case)
    assert ties > 1000  # exact halves are there, so round-half-to-even is exercised
    # RGBA with opaque alpha must equal RGB.
    hwc = _photo(3, 333, 251)
    rgba = np.concatenate([hwc, np.full((*hwc.shape[:2], 1), 255, np.uint8)], axis=2)
    case = write_image(tmp_path, "photo-rgba-opaque", rgba)
    expected = resize_rounded(hwc.transpose(2, 0, 1)[None])[0].astype(np.uint8)
    (tmp_path / "photo-rgba-opaque.expected.u8").write_bytes(expected.tobytes())
    cases.append(case)
    # RGBA with real transparency: berg_onnx's own image conversion where it has one.
    rgba = rgba.copy()
    rgba[..., 3] = np.add.outer(np.arange(333) * 7 % 256, np.arange(251) * 3 % 256) % 256
    case = write_image(tmp_path, "photo-rgba-translucent", rgba)
    expected = resize_rounded(_rgb_on_white(rgba, tmp_path)[None])[0].astype(np.uint8)
    (tmp_path / "photo-rgba-translucent.expected.u8").write_bytes(expected.tobytes())
    cases.append(case)
    write_json(tmp_path / "resize.json", {"cases": cases, "fma": _fma_cases(), "alpha": _alpha()})
    assert run_node_test("resize.test.js", tmp_path) == 8


def _rgb_on_white(rgba: np.ndarray, folder: Path) -> np.ndarray:
    """(3, H, W): berg_onnx.images' conversion of an RGBA PNG where it exists (#11),
    else round-half-even((c*a + 255*(255-a)) / 255) in exact integers."""
    try:
        from berg_onnx.inputs.images import load_image
    except ImportError:
        c = rgba[..., :3].astype(np.int64)
        a = rgba[..., 3:].astype(np.int64)
        num = c * a + 255 * (255 - a)
        q, r = np.divmod(num, 255)
        return (q + (r > 127)).astype(np.uint8).transpose(2, 0, 1)
    path = folder / "translucent.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return load_image(path)


def _exact_fma32(t: float, w: float, c: float) -> float:
    """Correctly rounded float32 of t*w + c (ties to even), in exact rational arithmetic."""
    exact = Fraction(t) * Fraction(w) + Fraction(c)
    guess = np.float32(float(exact))
    cands = [
        np.nextafter(guess, np.float32(-np.inf)),
        guess,
        np.nextafter(guess, np.float32(np.inf)),
    ]
    errs = [abs(Fraction(float(v)) - exact) for v in cands]
    ties = [v for v, e in zip(cands, errs, strict=True) if e == min(errs)]
    best = ties[0] if len(ties) == 1 else next(v for v in ties if int(v.view(np.int32)) % 2 == 0)
    return float(best)


def _fma_cases() -> list[list[float]]:
    """[t, w, c, fma(t, w, c)]: the double-rounding trap (the exact-halfway repair) and
    random values with many sums forced next to a float32 midpoint."""
    t = np.float32(1 + 2.0**-23)
    w = np.float32(2.0**-24 * (1 - 2.0**-23))
    c = np.float32(1 + 2.0**-23)
    trap = [(t, w, c), (-t, w, c), (-t, -w, -c)]
    naive = np.float32(np.float64(t) * np.float64(w) + np.float64(c))
    assert float(naive) != _exact_fma32(float(t), float(w), float(c))  # really a trap
    rng = np.random.default_rng(17)
    n = 400
    ts = (rng.random(n) * 256).astype(np.float32)
    ws = rng.random(n).astype(np.float32) * np.float32(2.0) ** rng.integers(-30, 1, n)
    cs = (rng.random(n) * 256).astype(np.float32)
    ts[: n // 2] = 1.0
    ws[: n // 2] = (
        np.spacing(cs[: n // 2]) / 2 * (1 + rng.choice([-1, 1], n // 2) * 2.0**-23)
    ).astype(np.float32)
    triples = trap + list(zip(ts, ws, cs, strict=True))
    return [
        [float(a), float(b), float(d), _exact_fma32(float(a), float(b), float(d))]
        for a, b, d in triples
    ]


def _alpha() -> list[int]:
    """compositeOnWhite(v, a) for every v, a: round-half-even of (v*a + 255*(255-a)) / 255."""
    table = []
    for a in range(256):
        for v in range(256):
            q = Fraction(v * a + 255 * (255 - a), 255)
            table.append(round(q))  # Python's round of a Fraction is half to even
    return table


@pytest.fixture(scope="module")
def served_export(export_dir: Path, tmp_path_factory):
    """The test export on loopback HTTP (berg_onnx.web), and a copy with a tampered V1 graph."""
    servers = []
    tampered = tmp_path_factory.mktemp("tampered")
    for f in export_dir.iterdir():
        if f.is_file():
            (tampered / f.name).write_bytes(f.read_bytes())
    from berg_onnx.source.manifest import Manifest

    v1 = Manifest.load(tampered / "manifest.json").get("fmri-nsd-fwrf", 1, "V1").onnx.name
    data = bytearray((tampered / v1).read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit changed
    (tampered / v1).write_bytes(bytes(data))
    assert sha256_file(tampered / v1) != sha256_file(export_dir / v1)
    urls = []
    for folder in (export_dir, tampered):
        server = make_server(folder, port=0, quiet=True)
        start_in_thread(server)
        servers.append(server)
        urls.append(url_of(server) + "export/")
    yield urls
    for server in servers:
        server.shutdown()
        server.server_close()


def test_encode_matches_berg_onnx(served_export, export_dir: Path, tmp_path: Path) -> None:
    url, tampered_url = served_export
    images = [
        _photo(i, *size) for i, size in enumerate([(256, 256), (375, 500), (640, 480), (90, 120)])
    ]
    chw = [np.ascontiguousarray(im.transpose(2, 0, 1)) for im in images]
    cases = [write_image(tmp_path, f"enc{i}", im) for i, im in enumerate(images)]
    berg = BERG(berg_dir=export_dir)
    models = []
    for subject, roi, precision in [
        (1, "V1", "fp32"),
        (1, "lateral", "fp32"),
        (2, "V1", "fp32"),
        (1, "FFA-1", "int8"),
    ]:
        model = berg.get_encoding_model("fmri-nsd-fwrf", subject, {"roi": roi}, "cpu", precision)
        expected = np.concatenate([berg.encode(model, x[None]) for x in chw]).astype("<f4")
        name = f"sub{subject}_{roi}_{precision}"
        (tmp_path / f"{name}.f32").write_bytes(expected.tobytes())
        entry = {"subject": subject, "roi": roi, "precision": precision, "nv": expected.shape[1]}
        models.append({**entry, "expected": f"{name}.f32"})
    write_json(
        tmp_path / "encode.json",
        {"base": url, "tampered": tampered_url, "images": cases, "models": models},
    )
    assert run_node_test("encode.test.js", tmp_path) == len(models) + 3


def test_png_decoder_matches_load_image(tmp_path: Path) -> None:
    """berg.js decodes PNG itself: every colour type / depth / tRNS / interlace / EXIF case."""
    from berg_onnx.inputs.images import load_image
    from tests._support.corpus import refused, write_corpus

    cases = []
    for path in write_corpus(tmp_path / "corpus"):
        if path.suffix != ".png":
            continue
        chw = load_image(path)
        expected = path.with_suffix(".expected.u8")
        expected.write_bytes(chw.tobytes())
        rel = path.relative_to(tmp_path)
        cases.append(
            {
                "file": str(rel),
                "expected": str(expected.relative_to(tmp_path)),
                "height": int(chw.shape[1]),
                "width": int(chw.shape[2]),
            }
        )
    bad = [
        {"file": str(p.relative_to(tmp_path)), "word": w}
        for p, w in refused(tmp_path / "refused").items()
        if p.suffix in (".txt", ".tif", ".png")
    ]
    bad = [{**b, "word": {"cannot decode TIFF": "TIFF", "not an image file": "a decoder"}.get(
        b["word"], b["word"])} for b in bad]  # fmt: skip
    write_json(tmp_path / "png.json", {"cases": cases, "refused": bad})
    assert run_node_test("png.test.js", tmp_path) == 2


@pytest.fixture(scope="module")
def api_reference(export_dir: Path, tmp_path_factory) -> Path:
    """api.json: the export folder (no server), images as raw pixels and as PNG files, and
    berg_onnx's sub-01 V1 responses to them."""
    folder = tmp_path_factory.mktemp("api")
    berg = BERG(berg_dir=export_dir)
    model = berg.get_encoding_model("fmri-nsd-fwrf", 1, {"roi": "V1"}, "cpu")
    images = [_photo(i, *size) for i, size in enumerate([(200, 300), (227, 227), (480, 360)])]
    pngs = []
    for i, im in enumerate(images):
        pngs.append(folder / f"img {i}, \u00e9.png")  # a space, a comma, non-ASCII
        Image.fromarray(im).save(pngs[-1])
    expected = berg.encode(model, pngs).astype("<f4")
    (folder / "expected.f32").write_bytes(expected.tobytes())
    gray16 = folder / "gray16.png"
    Image.fromarray((np.arange(300 * 200).reshape(200, 300) * 3 % 65536).astype(np.uint16)).save(
        gray16
    )
    (folder / "gray16.f32").write_bytes(berg.encode(model, [gray16])[0].astype("<f4").tobytes())
    Image.fromarray(images[0]).save(folder / "photo.jpg")
    write_json(
        folder / "api.json",
        {
            "folder": str(export_dir),
            "nv": int(expected.shape[1]),
            "images": [write_image(folder, f"api{i}", im) for i, im in enumerate(images)],
            "expected": "expected.f32",
            "names": [p.name for p in pngs],
            "png": {"file": "gray16.png", "expected": "gray16.f32"},
            "jpeg": "photo.jpg",
        },
    )
    return folder


def test_node_api(api_reference: Path, export_dir: Path) -> None:
    from berg_onnx.cli import main
    from berg_onnx.utils.outputs import read_listing

    assert run_node_test("api.test.js", api_reference) == 5
    # What Node wrote is what `berg-onnx encode --out` writes for the same images.
    names = json.loads((api_reference / "api.json").read_text())["names"]
    out = api_reference / "cli.npy"
    pngs = [str(api_reference / n) for n in names]
    argv = ["encode", *pngs, "--subject", "1", "--roi", "V1", "--berg-dir", str(export_dir)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    cli, node = np.load(out), np.load(api_reference / "node.npy")
    assert node.dtype == cli.dtype == np.float32 and node.shape == cli.shape
    assert np.abs(node - cli).max() <= 1e-5
    assert [Path(p).name for p in read_listing(api_reference / "cli.paths.txt")] == names
    assert read_listing(api_reference / "node.paths.txt") == names
    csv = (api_reference / "node.csv").read_text(encoding="utf-8").splitlines()
    assert csv[0].split(",")[:3] == ["image", "v0", "v1"] and len(csv) == 1 + len(names)
    first = csv[1].rsplit(",", node.shape[1])
    assert first[0] == f'"{names[0]}"'  # quoted: the name has a comma
    np.testing.assert_array_equal(np.array(first[1:], dtype=np.float32), node[0])


def test_node_threads_once_per_process(api_reference: Path) -> None:
    assert run_node_test("threads.test.js", api_reference) == 1
