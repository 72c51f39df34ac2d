"""Hostile runtime files: manifest.json, metadata .npz and .npy stimuli.

They come from a Hub repo, a cache or a user's folder. Each crafted file must
be refused with a clear BERGError naming it, in well under a second and
without the process growing by 100 MB; the real files must still load.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
import time
import zipfile

import numpy as np
import pytest

from berg_onnx import BERG
from berg_onnx.errors import ModelLoadError, StimulusError
from berg_onnx.inputs.stimulus import load_npy_stimulus
from berg_onnx.source.manifest import Manifest
from berg_onnx.source.metadata import load_npz
from berg_onnx.utils.fileio import open_npy_stimulus
from tests._support.cli import cli_process, encode_argv
from tests.fuzz import crafted

MODEL = "fmri-nsd-fwrf"


def _entry(manifest: dict) -> dict:
    return next(iter(manifest["models"].values()))


def _manifest_cases(good: dict) -> dict[str, bytes]:
    def edit(fn) -> bytes:
        m = json.loads(json.dumps(good))
        fn(_entry(m))
        return json.dumps(m).encode()

    def set_(key, value, sub=None):
        def fn(e):
            (e[sub] if sub else e)[key] = value

        return fn

    return {
        "not_json": b"{not json",
        "deep_nesting": b"[" * 200_000 + b"]" * 200_000,
        "huge_int": b'{"format": "berg-onnx-export", "schema_version": 1, "models": {}, "x": '
        + b"9" * 100_000
        + b"}",
        "too_large": b" " * (17 << 20) + b"{}",
        "not_utf8": b"\xff\xfe{}",
        "traversal_name": edit(set_("name", "../../../etc/passwd", "onnx")),
        "folder_name": edit(set_("name", "sub/model.onnx", "metadata")),
        "negative_size": edit(set_("size", -5, "onnx")),
        "bad_sha": edit(set_("sha256", "xyz", "onnx")),
        "nan_diff": edit(set_("max_abs_diff", float("nan"))),
        "bool_subject": edit(set_("subject", True)),
        "string_nv": edit(set_("nv", "60")),
        "huge_nv": edit(set_("nv", 10**12)),
        "splits_disagree": edit(set_("nv", 7)),
        "missing_key": edit(lambda e: e.pop("opset")),
        "key_mismatch": edit(set_("roi", "V2")),
        "int8_traversal": edit(set_("onnx_int8", {"name": "..", "sha256": "0" * 64, "size": 1})),
        "huge_extra": edit(set_("cpu_flags", list(range(100_000)))),
        "models_not_dict": b'{"format": "berg-onnx-export", "schema_version": 1, "models": []}',
    }


@pytest.fixture(scope="module")
def good_manifest(export_dir) -> dict:
    return json.loads((export_dir / "manifest.json").read_text())


def test_every_crafted_manifest_is_refused(tmp_path, good_manifest):
    for case, data in _manifest_cases(good_manifest).items():
        path = tmp_path / case / "manifest.json"
        path.parent.mkdir()
        path.write_bytes(data)
        crafted.assert_refused_fast(Manifest.load, path)


def test_manifest_refusal_names_the_field(tmp_path, good_manifest):
    path = tmp_path / "manifest.json"
    path.write_bytes(_manifest_cases(good_manifest)["traversal_name"])
    with pytest.raises(ModelLoadError, match=r"onnx\.name.*'\.\./\.\./\.\./etc/passwd'"):
        BERG(berg_dir=tmp_path).get_model_metadata(MODEL, 1, "V1")


def test_unknown_optional_fields_are_accepted(tmp_path, good_manifest):
    """Later exports (e.g. the int8 tier's figures) may add optional keys."""
    m = json.loads(json.dumps(good_manifest))
    for e in m["models"].values():
        e["int8_error_bound"] = 0.02
        e["cpu_flags"] = ["avx512f", "avx512_vnni"]
        e["verification"]["int8"] = {"images": 16, "bound": 0.02}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(m))
    assert len(Manifest.load(path).models) == len(good_manifest["models"])


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _npz_cases(good: dict[str, np.ndarray], nv: int) -> dict[str, bytes]:
    def with_(**changes) -> bytes:
        arrays = dict(good)
        for k, v in changes.items():
            key = k.replace("__", "/")
            if v is None:
                arrays.pop(key)
            else:
                arrays[key] = v
        return _npz(arrays)

    valid = _npz(good)
    raw = bytearray(valid)
    # declared size of the first member patched to 2 GB: a would-be decompression bomb
    at = raw.find(b"PK\x01\x02")
    bomb = bytes(raw[: at + 24]) + struct.pack("<I", 0x7FFFFFF0) + bytes(raw[at + 28 :])
    # the mask's header claims a larger shape than its bytes
    buf = io.BytesIO()
    np.savez(buf, **good)  # stored, so the header can be edited in place
    lying = buf.getvalue().replace(b"(81, 104, 83)", b"(81, 104, 99)")
    assert lying != buf.getvalue()
    return {
        "not_a_zip": b"PK\x03\x04 nothing else",
        "declared_bomb": bomb,
        "lying_header": lying,
        "wrong_nv": with_(fmri__ncsnr=np.zeros(nv + 1, np.float32)),
        "object_member": _npz_with_pickle(good),
        "missing_member": with_(encoding_models__r2=None),
        "float_mask": with_(fmri__roi_mask_volume=np.zeros((81, 104, 83), np.float32)),
        "huge_extra": with_(extra=np.zeros(8 << 20, np.uint8)),
        "structured_dtype": with_(extra=np.zeros(4, dtype=[("a", "f4"), ("b", "i4")])),
        "traversal_member": _zip_add(valid, "../evil.npy", crafted.valid_stimulus_npy()),
        "duplicate_member": _zip_add(valid, "fmri/ncsnr.npy", crafted.valid_stimulus_npy()),
        "stored_zip_truncated": valid[: len(valid) // 2],
        "mask_count_mismatch": with_(fmri__roi_mask_volume=np.ones((81, 104, 83), bool)),
    }


def _npz_with_pickle(good) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **good, extra=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _zip_add(data: bytes, name: str, payload: bytes) -> bytes:
    import warnings

    buf = io.BytesIO(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "a") as z:
            z.writestr(name, payload)
    return buf.getvalue()


def test_every_crafted_npz_is_refused(tmp_path, export_dir, good_manifest):
    entry = Manifest.load(export_dir / "manifest.json").get(MODEL, 1, "V1")
    good_path = export_dir / entry.metadata.name
    with np.load(good_path) as z:
        good = {k: z[k] for k in z.files}
    assert load_npz(good_path, nv=entry.nv)["fmri"]["ncsnr"].shape == (entry.nv,)
    for case, data in _npz_cases(good, entry.nv).items():
        path = tmp_path / f"{case}.npz"
        path.write_bytes(data)
        crafted.assert_refused_fast(lambda p: load_npz(p, nv=entry.nv), path)


def _npy(header: dict | bytes, body: bytes = b"") -> bytes:
    buf = io.BytesIO()
    if isinstance(header, dict):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        buf.write(header)
    return buf.getvalue() + body


def test_every_crafted_stimulus_npy_is_refused(tmp_path):
    c = {"fortran_order": False}
    cases = {
        "huge_shape": _npy({**c, "descr": "|u1", "shape": (10**9, 3, 227, 227)}, b"\0" * 64),
        "short_data": _npy({**c, "descr": "|u1", "shape": (2, 3, 8, 8)}, b"\0" * 100),
        "extra_data": _npy({**c, "descr": "|u1", "shape": (1, 3, 2, 2)}, b"\0" * 13),
        "object_pickle": crafted.npy_pickle(crafted.MEMO_BOMB),
        "float": _npy({**c, "descr": "<f4", "shape": (1, 3, 2, 2)}, b"\0" * 48),
        "three_dims": _npy({**c, "descr": "|u1", "shape": (3, 2, 2)}, b"\0" * 12),
        "structured": _npy({**c, "descr": [("a", "|u1")], "shape": (1, 3, 1, 1)}, b"\0" * 3),
        "bad_magic": b"\x93NUMPZ\x01\x00" + b"\0" * 64,
        "huge_header": b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{",
        "garbage_header": b"\x93NUMPY\x01\x00\x10\x00" + b"__import__('os')",
        "empty": b"",
    }
    for case, data in cases.items():
        path = tmp_path / f"{case}.npy"
        path.write_bytes(data)
        # the CLI's path: the header-checked map, then the validator (dtype and shape hints)
        crafted.assert_refused_fast(load_npy_stimulus, path, StimulusError)


def test_stimulus_npy_maps_the_real_array(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 9, 7), dtype=np.uint8)
    for order in ("C", "F"):
        path = tmp_path / f"s{order}.npy"
        np.save(path, np.asarray(images, order=order))
        got = open_npy_stimulus(path)
        np.testing.assert_array_equal(got, images)
        assert not got.flags.writeable


def test_cli_refuses_a_crafted_stimulus_with_one_line(tmp_path, export_dir):
    path = tmp_path / "bomb.npy"
    path.write_bytes(_npy({"fortran_order": False, "descr": "<i8", "shape": (10**9, 3, 9, 9)}))
    # a subprocess: if the header check failed, the allocation would not hit this process
    run = cli_process(*encode_argv(path, export_dir, tmp_path / "r.npy"), timeout=60)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "header promises" in lines[0] and str(path) in lines[0], run.stderr


def test_local_export_with_a_traversal_name_touches_nothing_outside(tmp_path, export_dir):
    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    m = json.loads((export / "manifest.json").read_text())
    for e in m["models"].values():
        e["metadata"]["name"] = "../outside.npz"
    (export / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "outside.npz").write_bytes(b"secret")
    with pytest.raises(ModelLoadError, match="not a plain file name|outside"):
        BERG(berg_dir=export).get_model_metadata(MODEL, 1, "V1")


# -- second pass: nothing outside the input touched, no wrong answer, bounded time/memory -----
def _tree_digest(folder) -> dict[str, str]:
    """sha256 of every file under ``folder`` (a sibling the code must never touch)."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _export_with(tmp_path, export_dir, roi: str = "V1", onnx: bytes | None = None):
    """A copy of the test export (only sub-01 ``roi``) whose graph is ``onnx`` (manifest
    sha256 and size updated, as a forger would)."""
    import hashlib

    out = tmp_path / "export"
    out.mkdir()
    m = json.loads((export_dir / "manifest.json").read_text())
    key = f"{MODEL}/sub-01/{roi}"
    m["models"] = {key: m["models"][key]}
    entry = m["models"][key]
    for f in (entry["onnx"], entry["metadata"]):
        shutil.copy(export_dir / f["name"], out / f["name"])
    entry["onnx_int8"] = None
    if onnx is not None:
        (out / entry["onnx"]["name"]).write_bytes(onnx)
        entry["onnx"]["sha256"] = hashlib.sha256(onnx).hexdigest()
        entry["onnx"]["size"] = len(onnx)
    (out / "manifest.json").write_text(json.dumps(m))
    return out, entry


def _hub_cache(cache, repo_id: str, export_dir, commit: str = "c0ffee" * 6 + "c0ff"):
    """A Hugging Face cache of the export as huggingface_hub lays it out: snapshot links
    into blobs/, refs/main naming the commit."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in export_dir.iterdir():
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap, commit


def test_hub_cache_repair_never_deletes_through_a_link(tmp_path, export_dir, monkeypatch):
    """A damaged cache entry that is a link out of the cache: the link goes, its target stays."""
    from huggingface_hub import constants

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.onnx").write_bytes(b"the user's own file, not a model")
    before = _tree_digest(outside)
    cache = tmp_path / "cache"
    snap, commit = _hub_cache(cache, "berg-test/links", export_dir)
    name = "fmri-nsd-fwrf_sub-01_roi-V1.onnx"
    (snap / name).unlink()
    (snap / name).symlink_to(outside / "precious.onnx")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    berg = BERG(repo_id="berg-test/links", revision=commit, cache_dir=cache)
    with pytest.raises(ModelLoadError) as info:
        berg.get_encoding_model(MODEL, 1, {"roi": "V1"})
    assert _tree_digest(outside) == before  # the target is untouched
    assert "link out of the cache" in str(info.value)
    assert not os.path.lexists(snap / name)  # the damaged entry (the link) is gone


def test_export_file_linked_out_of_the_export_is_refused(tmp_path, export_dir):
    """Even with bytes that match the manifest, a file outside the export is not read."""
    out, entry = _export_with(tmp_path, export_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    name = entry["onnx"]["name"]
    shutil.move(out / name, outside / name)
    (out / name).symlink_to(outside / name)
    before = _tree_digest(outside)
    with pytest.raises(ModelLoadError, match="outside the export directory"):
        BERG(berg_dir=out).get_encoding_model(MODEL, 1, {"roi": "V1"})
    assert _tree_digest(outside) == before


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("external_data", "external file"),
        ("column_declared", "expected one, 'responses' float32 (batch, 60)"),
        ("loop_forever_nv", "subgraph"),
        ("custom_domain", "operator 'Gelu' of domain 'com.microsoft'"),
        ("local_function", "model-local functions"),
        ("not_protobuf", "not a berg-onnx model graph"),
    ],
)
def test_crafted_graph_is_refused_before_a_session(tmp_path, export_dir, case, reason):
    out, entry = _export_with(tmp_path, export_dir, onnx=crafted.onnx_cases(60)[case])
    (out / "w.bin").write_bytes(np.arange(60, dtype=np.float32).tobytes())
    message = crafted.assert_refused_fast(
        lambda p: BERG(berg_dir=out).get_encoding_model(MODEL, 1, {"roi": "V1"}),
        out / entry["onnx"]["name"],
    )
    assert reason in message


def test_graph_output_must_be_exactly_n_by_nv(tmp_path, export_dir):
    """An (N, 1) column declared as (N, nv) is not broadcast into every voxel."""
    out, _ = _export_with(tmp_path, export_dir, onnx=crafted.onnx_cases(60)["column_undeclared"])
    model = BERG(berg_dir=out).get_encoding_model(MODEL, 1, {"roi": "V1"})
    images = np.full((3, 3, 227, 227), 7, dtype=np.uint8)
    with pytest.raises(
        ModelLoadError, match=r"returned float32 \([13], 1\), not float32 \([13], 60\)"
    ):
        model.encode(images)


def test_cli_refuses_a_graph_that_loops_forever(tmp_path, export_dir):
    """A Loop with 2^50 trips: one line within 5 s, not a hang (the process is killed at 60)."""
    out, entry = _export_with(tmp_path, export_dir, onnx=crafted.onnx_cases(60)["loop_forever"])
    stim = tmp_path / "s.npy"
    np.save(stim, np.zeros((1, 3, 8, 8), np.uint8))
    cmd = [sys.executable, "-m", "berg_onnx", "encode", str(stim), "--subject", "1"]
    cmd += ["--roi", "V1", "--berg-dir", str(out), "--out", str(tmp_path / "r.npy")]
    result = crafted.peak_run(cmd, timeout=30)
    crafted.assert_one_line_refusal(result, entry["onnx"]["name"])


def test_manifest_sizes_are_bounded_before_hashing(tmp_path, export_dir):
    """A claimed 2^40-byte graph over a 2^40-byte sparse file: refused without hashing."""
    out, entry = _export_with(tmp_path, export_dir)
    crafted.sparse_file(out / entry["onnx"]["name"], 1 << 40)
    m = json.loads((out / "manifest.json").read_text())
    next(iter(m["models"].values()))["onnx"]["size"] = 1 << 40
    (out / "manifest.json").write_text(json.dumps(m))
    message = crafted.assert_refused_fast(Manifest.load, out / "manifest.json")
    assert "more than this model's files can hold" in message


def test_stimulus_npy_pixel_limit_and_huge_dims(tmp_path):
    big = tmp_path / "huge_image.npy"  # one 20000 x 20000 image: 1.2 GB, sparse on disk
    crafted.sparse_file(big, 128 + 3 * 20000 * 20000, crafted.npy_header((1, 3, 20000, 20000)))
    assert crafted.assert_refused_fast(load_npy_stimulus, big, StimulusError).count("pixel")
    zero = tmp_path / "zero_but_huge.npy"
    zero.write_bytes(crafted.npy_header((0, 10**18, 10**18)))
    crafted.assert_refused_fast(load_npy_stimulus, zero, StimulusError)


def test_image_pixel_limit_applies_before_compositing(tmp_path):
    """A 343 KB PNG of 9400 x 9400 transparent pixels: refused from its header."""
    from berg_onnx.inputs.images import load_image

    path = tmp_path / "bomb.png"
    path.write_bytes(crafted.png_rgba(9400, 9400))
    assert path.stat().st_size < 1 << 20
    message = crafted.assert_refused_fast(load_image, path, StimulusError)
    assert "9400x9400" in message


def test_transparent_image_in_strips_equals_the_whole_image(tmp_path, monkeypatch):
    """Converting in strips gives the bytes converting the whole image gives."""
    from PIL import Image

    from berg_onnx.inputs import images

    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 29, 4), dtype=np.uint8), "RGBA")
    whole = images.load_image(rgba)
    monkeypatch.setattr(images, "_STRIP_PIXELS", 29 * 3)  # 3 rows at a time
    np.testing.assert_array_equal(images.load_image(rgba), whole)
    c = np.asarray(rgba).astype(np.uint32)
    a = c[..., 3:]
    expect = ((c[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    np.testing.assert_array_equal(whole, expect.transpose(2, 0, 1))


def test_cli_refuses_a_huge_transparent_png_in_bounded_memory(tmp_path, export_dir):
    path = tmp_path / "bomb.png"
    path.write_bytes(crafted.png_rgba(9400, 9400))
    cmd = [sys.executable, "-m", "berg_onnx", "encode", str(path), "--subject", "1"]
    cmd += ["--roi", "V1", "--berg-dir", str(export_dir), "--out", str(tmp_path / "r.npy")]
    crafted.assert_one_line_refusal(crafted.peak_run(cmd), str(path), "pixel")


def test_output_beyond_the_memory_budget_is_refused_before_any_work(tmp_path, export_dir):
    """2^31 - 1 tiny images (6.4 GB sparse .npy): the (N, nv) output is refused at once."""
    path = tmp_path / "many.npy"
    n = (1 << 31) - 1
    crafted.sparse_file(path, 128 + 3 * n, crafted.npy_header((n, 3, 1, 1)))
    cmd = [sys.executable, "-m", "berg_onnx", "encode", str(path), "--subject", "1"]
    cmd += ["--roi", "V1", "--berg-dir", str(export_dir), "--out", str(tmp_path / "r.npy")]
    crafted.assert_one_line_refusal(crafted.peak_run(cmd), "GiB", "budget")
    assert not (tmp_path / "r.npy").exists()


def test_deeply_nested_image_folders_are_scanned(tmp_path):
    from PIL import Image

    from berg_onnx.inputs.scan import scan_images

    deep = leaf = tmp_path / "top"
    deep.mkdir()
    for _ in range(1100):  # deeper than Python's recursion limit (pathlib's mkdir recurses)
        leaf = leaf / "d"
        leaf.mkdir()
    try:
        Image.new("RGB", (4, 4)).save(leaf / "x.png")
        assert [p.name for p in scan_images([deep]).files] == ["x.png"]
    finally:  # removed bottom-up: shutil.rmtree (pytest's clean-up) recurses on 3.11
        (leaf / "x.png").unlink(missing_ok=True)
        while leaf != tmp_path:
            leaf.rmdir()
            leaf = leaf.parent


def test_listing_beside_responses_is_read_bounded(tmp_path):
    from berg_onnx.brain.runs import labels_beside

    listing = tmp_path / "r.paths.txt"
    listing.write_bytes(b"a\n" * 3)
    assert labels_beside(listing, (3, 5)) == ["a", "a", "a"]
    crafted.sparse_file(listing, 1 << 32, b"a\nb\nc\n")  # 4 GB: a fourth, endless line
    import tracemalloc

    tracemalloc.start()
    try:
        assert labels_beside(listing, (3, 5)) is None
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < 100, f"reading the listing allocated {peak:.0f} MB"


# -- run stores: checked before a resume or a read ------------------------------------------
@pytest.fixture
def run_store(tmp_path, export_dir):
    """A complete 8-image V1 run store (chunks of 4) and the images it was run on."""
    pytest.importorskip(
        "zarr", reason="run stores need the [zarr] extra (absent in the torch-free stage)"
    )
    from tests._support.runstore import write_run_store

    images = np.random.default_rng(5).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8)
    path = write_run_store(tmp_path / "grid.zarr", export_dir, images, ["V1"], chunk_size=4)
    return path, images


def _edit_json(path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _replace_array(store, name: str, shape, dtype, chunks) -> None:
    """``name`` rewritten with another dtype/shape, its attributes kept (a forger's edit)."""
    import zarr

    root = zarr.open_group(str(store), mode="r+")
    attrs = dict(root[name].attrs)
    root.create_array(
        name, shape=shape, dtype=dtype, chunks=chunks, attributes=attrs, overwrite=True
    )


def _resume(store, images, export_dir):
    return BERG(berg_dir=export_dir).run(
        images, [1], ["V1"], store=store, chunk_size=4, show_progress=False
    )


def test_resume_refuses_an_array_of_the_wrong_dtype(run_store, export_dir):
    from berg_onnx.errors import ExperimentError

    store, images = run_store
    _replace_array(store, "sub-01/V1", (8, 60), "int8", (4, 60))
    with pytest.raises(ExperimentError, match=r"sub-01/V1 is int8 \(8, 60\).*not float32"):
        _resume(store, images, export_dir)


def test_forged_completion_over_unwritten_rows_is_not_done(run_store, export_dir, tmp_path):
    """Records say "done", the rows were never written: not reported complete (no NaN
    volume with exit 0), and a resume computes exactly those rows."""
    store, images = run_store
    shutil.rmtree(store / "sub-01" / "V1" / "c" / "1")  # chunk 1's rows, record kept at 1
    cmd = [sys.executable, "-m", "berg_onnx", "volume", str(store), "--subject", "1"]
    cmd += ["--roi", "V1", "--berg-dir", str(export_dir), "--out", str(tmp_path / "v.nii")]
    crafted.assert_one_line_refusal(crafted.peak_run(cmd), "incomplete (1 of 2 chunks")
    report = _resume(store, images, export_dir)
    assert report.complete
    import zarr

    rows = zarr.open_group(str(store), mode="r")["sub-01/V1"][:]
    model = BERG(berg_dir=export_dir).get_encoding_model(MODEL, 1, {"roi": "V1"})
    np.testing.assert_allclose(rows, model.encode(images), atol=1e-6)


def test_completion_record_of_absurd_length_is_refused_at_once(run_store, tmp_path):
    from berg_onnx.brain.runs import RunStore

    store, _ = run_store
    _replace_array(store, "_done/sub-01/V1", (1 << 40,), "uint8", (1,))
    crafted.assert_refused_fast(lambda p: RunStore.open(p).responses(1, "V1"), store)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda a: a.update(chunk_size=0), "chunk_size is 0"),
        (lambda a: a.update(n_images="8"), "n_images is '8'"),
        (lambda a: a.update(n_images=1 << 50), "more than 1048576 chunks"),
    ],
)
def test_root_attributes_of_the_wrong_type_are_one_line(run_store, export_dir, edit, reason):
    store, images = run_store
    _edit_json(store / "zarr.json", lambda d: edit(d["attributes"]))
    npy = store.parent / "images.npy"
    np.save(npy, images)
    cmd = [sys.executable, "-m", "berg_onnx", "run", str(npy), "--subjects", "1"]
    cmd += ["--rois", "V1", "--berg-dir", str(export_dir), "--out", str(store), "--quiet"]
    crafted.assert_one_line_refusal(crafted.peak_run(cmd), str(store), reason)


def test_deeply_nested_zarr_json_is_one_line(run_store, export_dir, tmp_path):
    store, images = run_store
    text = (store / "zarr.json").read_text()
    deep = '{"x": ' + "[" * 100_000 + "]" * 100_000 + ", "
    (store / "zarr.json").write_text(text.replace('"attributes": {', '"attributes": ' + deep, 1))
    npy = tmp_path / "images.npy"
    np.save(npy, images)
    cmd = [sys.executable, "-m", "berg_onnx", "run", str(npy), "--subjects", "1", "--rois", "V1"]
    cmd += ["--berg-dir", str(export_dir), "--out", str(store), "--quiet"]
    crafted.assert_one_line_refusal(crafted.peak_run(cmd), str(store))  # a resume
    for command in ("volume", "plot"):
        out = tmp_path / ("v.nii" if command == "volume" else "p.png")
        cmd = [sys.executable, "-m", "berg_onnx", command, str(store), "--subject", "1"]
        cmd += ["--roi", "V1", "--berg-dir", str(export_dir), "--out", str(out)]
        crafted.assert_one_line_refusal(crafted.peak_run(cmd), str(store))


# -- NIfTI: real numbers only, streamed, any number of images --------------------------------
def _v1_metadata(export_dir):
    return BERG(berg_dir=export_dir).get_model_metadata(MODEL, 1, "V1")


def test_complex_nifti_is_refused(tmp_path, export_dir):
    nib = pytest.importorskip("nibabel")
    from berg_onnx.brain.volume import from_nifti
    from berg_onnx.errors import InvalidParameterError

    meta = _v1_metadata(export_dir)
    data = np.zeros((81, 104, 83, 2), np.complex64)
    data[meta["fmri"]["roi_mask_volume"]] = 1 + 2j
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(data, meta["fmri"]["fmri_affine"]), path)
    message = crafted.assert_refused_fast(
        lambda p: from_nifti(p, meta), path, InvalidParameterError
    )
    assert "complex" in message


def test_nifti_gz_bomb_is_read_in_bounded_memory(tmp_path, export_dir):
    """200 volumes of zeros in a 0.6 MB .nii.gz (560 MB expanded): streamed, not read whole."""
    pytest.importorskip("nibabel")
    from berg_onnx.brain.volume import from_nifti

    meta = _v1_metadata(export_dir)
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(crafted.nifti_gz((81, 104, 83, 200), meta["fmri"]["fmri_affine"]))
    assert path.stat().st_size < 2 << 20
    import tracemalloc  # numpy's buffers are traced: a peak whatever ran before

    start = time.process_time()
    tracemalloc.start()
    try:
        rows = from_nifti(path, meta)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert rows.shape == (200, 60) and not rows.any()
    assert peak < 100, f"from_nifti allocated {peak:.0f} MB at its peak"
    assert time.process_time() - start < 10


@pytest.mark.parametrize("esize", [0, (1 << 31) - 16])
def test_nifti_header_extension_bomb_is_refused_from_the_header(tmp_path, export_dir, esize):
    """An extension claiming 2 GB (or 0: read to the end) of a 1 MB .nii.gz that expands
    to 1 GB: refused from the header's sizes, before nibabel reads the extension."""
    pytest.importorskip("nibabel")
    from berg_onnx.brain.volume import from_nifti
    from berg_onnx.errors import InvalidParameterError

    meta = _v1_metadata(export_dir)
    path = tmp_path / "ext.nii.gz"
    path.write_bytes(crafted.nifti_extension_bomb(meta["fmri"]["fmri_affine"], esize))
    message = crafted.assert_refused_fast(
        lambda p: from_nifti(p, meta), path, InvalidParameterError
    )
    assert "extension claims" in message


def test_truncated_nifti_gz_is_one_error(tmp_path, export_dir):
    pytest.importorskip("nibabel")
    from berg_onnx.brain.volume import from_nifti
    from berg_onnx.errors import InvalidParameterError

    meta = _v1_metadata(export_dir)
    path = tmp_path / "claims_more.nii.gz"
    data = crafted.nifti_gz((81, 104, 83, 40), meta["fmri"]["fmri_affine"])
    path.write_bytes(data[: len(data) // 3])
    crafted.assert_refused_fast(lambda p: from_nifti(p, meta), path, InvalidParameterError)


def test_more_images_than_nifti1_can_count_write_nifti2(tmp_path):
    """NIfTI-1 dims are int16: 40,000 images go to a NIfTI-2 file, read back exactly."""
    nib = pytest.importorskip("nibabel")
    from berg_onnx.brain.volume import from_nifti, save_nifti

    mask = np.zeros((2, 3, 2), bool)
    mask[0, 1, 1] = mask[1, 2, 0] = True
    meta = {"fmri": {"roi_mask_volume": mask, "fmri_affine": np.diag([2.0, 2.0, 2.0, 1.0])}}
    rows = np.random.default_rng(0).standard_normal((40_000, 2)).astype(np.float32)
    path = save_nifti(tmp_path / "many.nii.gz", rows, meta)
    img = nib.load(path)
    assert isinstance(img, nib.Nifti2Image) and img.shape == (2, 3, 2, 40_000)
    np.testing.assert_array_equal(from_nifti(path, meta), rows)
