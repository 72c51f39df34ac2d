"""Hostile runtime files: manifest.json, metadata .npz and .npy stimuli.

They come from a Hub repo, a cache or a user's folder. Each crafted file must
be refused with a clear BERGError naming it, in well under a second and
without the process growing by 100 MB; the real files must still load.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
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
