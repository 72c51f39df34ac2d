"""Crafted hostile files, one per class of attack the loaders must refuse.

Shared by the refusal tests (tests/export/test_untrusted.py,
tests/runtime/test_untrusted_runtime.py) and the fuzzers' seed corpora.
Each builder returns bytes; nothing here needs torch.
"""

from __future__ import annotations

import base64
import io
import resource
import struct
import time
import zipfile

import numpy as np

#: The 6-byte memo bomb: NEWTRUE, LONG_BINPUT 0x19727272 (C unpickler: ~6.4 GB).
MEMO_BOMB = base64.b64decode("iHJycnIZ")
NPY_OBJECT_HEADER_V1 = b"{'descr': '|O', 'fortran_order': False, 'shape': (), }"


def _u(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def torch_zip(payload: bytes, storages: dict[str, bytes] | None = None, **kw) -> bytes:
    """A torch.save-shaped zip around ``payload`` (stored members, folder 'archive/')."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=kw.get("compression", zipfile.ZIP_STORED)) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return buf.getvalue()


def npy_pickle(payload: bytes) -> bytes:
    """An np.save-shaped .npy whose body is ``payload`` (BERG's metadata format)."""
    header = NPY_OBJECT_HEADER_V1
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _array_pickle(shape: tuple[int, ...], code: str, data: bytes) -> bytes:
    """Protocol-2 pickle of an ndarray as numpy writes it, with a chosen (lying) state."""
    dims = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in shape) + b"t"
    return (
        b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + b"c_codecs\nencode\n"
        + _u("b")
        + _u("latin1")
        + b"\x86R\x87R(K\x01"
        + dims
        + b"cnumpy\ndtype\n"
        + _u(code)
        + b"\x89\x88\x87R(K\x03"
        + _u("<")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + b"c_codecs\nencode\n"
        + _u(data.decode("latin1"))
        + _u("latin1")
        + b"\x86RtbN."[:-2]
        + b"."
    )


def _tensor_pickle(numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """A protocol-2 pickle {'x': tensor} whose storage claims ``numel`` floats."""

    def tup(values: tuple[int, ...]) -> bytes:
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    return (
        b"\x80\x02}"
        + _u("x")
        + b"ctorch._utils\n_rebuild_tensor_v2\n("
        + b"("
        + _u("storage")
        + b"ctorch\nFloatStorage\n"
        + _u("0")
        + _u("cpu")
        + b"J"
        + struct.pack("<i", numel)
        + b"tQK\x00"
        + tup(size)
        + tup(stride)
        + b"\x89N"
        + b"tRs."
    )


def pickle_cases() -> dict[str, bytes]:
    """Pickle streams the pre-scan or the restricted unpickler must refuse."""
    return {
        "memo_bomb": MEMO_BOMB,
        "memo_get_unassigned": b"\x80\x02Nj\x00\x00\x00\x10.",
        "binbytes8_beyond": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"x.",
        "binunicode8_beyond": b"\x80\x04\x8d" + struct.pack("<Q", 1 << 40) + b"x.",
        "bytearray8_beyond": b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"x.",
        "binbytes_beyond": b"\x80\x03B" + struct.pack("<I", 0xFFFFFFF0) + b"x.",
        "frame_beyond": b"\x80\x04\x95" + struct.pack("<Q", 1 << 50) + b"N.",
        "deep_marks": b"\x80\x02" + b"(" * 100_000 + b"N.",
        "deep_tuples": b"\x80\x02N" + b"\x85" * 100_000 + b".",
        "deep_lists": b"\x80\x02" + b"]" * 5_000 + b"a" * 4_999 + b".",
        "wide_stack": b"\x80\x02" + b"N" * 200_000 + b".",
        "many_opcodes": b"\x80\x02]" + b"Na" * 30_000 + b".",
        "inst_opcode": b"(cos\nsystem\nS'true'\ni.",
        "ext_opcode": b"\x80\x02\x82\x01.",
        "no_stop": b"\x80\x02N",
        "after_stop": b"\x80\x02N.N.",
        "ndarray_huge_shape": _array_pickle((1 << 30, 1 << 10), "f8", b"\x00" * 8),
        "ndarray_lying_state": _array_pickle((1000,), "f4", b"\x00" * 8),
        "ndarray_called": b"\x80\x02cnumpy\nndarray\n(J\xff\xff\xff\x3fJ\xff\xff\xff\x3ftR.",
        "dtype_void_huge": b"\x80\x02cnumpy\ndtype\n" + _u("V2000000000") + b"\x85R.",
        "dtype_subarray": b"\x80\x02cnumpy\ndtype\n" + _u("(1000000000,)f8") + b"\x85R.",
        "ordered_dict_args": b"\x80\x02ccollections\nOrderedDict\n]\x85R.",
        "global_os_system": b"\x80\x02cos\nsystem\n" + _u("true") + b"\x85R.",
        "newobj_ndarray": b"\x80\x02cnumpy\nndarray\n(J\xff\xff\xff\x3ft\x81.",
    }


def checkpoint_cases() -> dict[str, bytes]:
    """Whole .pt files the checkpoint loader must refuse."""
    cases = {f"pickle_{k}": torch_zip(v) for k, v in pickle_cases().items()}
    honest = _tensor_pickle(4, (2, 2), (2, 1))
    cases["storage_short"] = torch_zip(honest, {"0": b"\x00" * 8})  # 4 floats claimed, 2 held
    cases["storage_huge_claim"] = torch_zip(_tensor_pickle(1 << 30, (2,), (1,)), {"0": b"\0" * 16})
    cases["tensor_beyond_storage"] = torch_zip(
        _tensor_pickle(4, (1 << 16, 1 << 16), (0, 0)), {"0": b"\x00" * 16}
    )
    cases["storage_missing"] = torch_zip(honest)
    cases["compressed_member"] = torch_zip(honest, {"0": b"\0" * 16}, compression=8)
    cases["size_beyond_file"] = _patch_sizes(torch_zip(honest, {"0": b"\x00" * 16}), 0x7FFFFFF0)
    cases["duplicate_names"] = _zip_members(
        [("archive/data.pkl", honest), ("archive/data.pkl", honest)]
    )
    cases["path_traversal"] = _zip_members([("archive/data.pkl", honest), ("../../evil", b"x")])
    cases["absolute_path"] = _zip_members([("archive/data.pkl", honest), ("/etc/evil", b"x")])
    cases["many_members"] = _zip_members(
        [("archive/data.pkl", honest)] + [(f"archive/x{i}", b"") for i in range(5000)]
    )
    cases["member_count_lies"] = _patch_count(torch_zip(honest), 0xFFFF)
    cases["overlapping_members"] = _overlap(honest)
    cases["not_a_zip"] = b"hello, not a zip" * 10
    cases["truncated_zip"] = torch_zip(honest, {"0": b"\x00" * 16})[:-30]
    return cases


def metadata_cases() -> dict[str, bytes]:
    """Whole metadata .npy files the metadata loader must refuse."""
    cases = {f"pickle_{k}": npy_pickle(v) for k, v in pickle_cases().items()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    )
    cases["not_object_header"] = header.getvalue()
    cases["voxels_disagree"] = _metadata_npy(ncsnr=np.ones(4, np.float32))
    cases["mask_not_the_volume"] = _metadata_npy(roi_mask_volume=np.ones((2, 2, 2), bool))
    cases["bad_magic"] = b"\x93NUMPX\x01\x00" + b"\x00" * 100
    cases["huge_header_len"] = b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{"
    cases["object_array_many_items"] = npy_pickle(
        b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        b"c_codecs\nencode\n" + _u("b") + _u("latin1") + b"\x86R\x87R(K\x01(J\x00\x00\x00\x10t"
        b"cnumpy\ndtype\n" + _u("O8") + b"\x89\x88\x87R(K\x03" + _u("|") + b"NNNJ\xff\xff\xff\xff"
        b"J\xff\xff\xff\xffK?tb\x89]tb."
    )
    return cases


def _metadata_npy(**fmri: np.ndarray) -> bytes:
    """BERG's metadata dict as np.save writes it (5 voxels), with ``fmri`` entries replaced."""
    mask = np.zeros((81, 104, 83), bool)
    mask.flat[:5] = True
    group = {"ncsnr": np.ones(5, np.float32), "roi_mask_volume": mask, "fmri_affine": np.eye(4)}
    other = ("r2", "noise_ceiling", "explained_variance")
    meta = {
        "fmri": {**group, **fmri},
        "encoding_models": {
            **{k: np.ones(5) for k in other},
            **{k: np.arange(3) for k in ("train_img_num", "val_img_num", "test_img_num")},
        },
    }
    buf = io.BytesIO()
    np.save(buf, np.array(meta, dtype=object), allow_pickle=True)  # written here, never loaded so
    return buf.getvalue()


def _zip_members(members: list[tuple[str, bytes]]) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in members:
                info = zipfile.ZipInfo(name)
                z.writestr(info, data)
    return buf.getvalue()


def _central_entries(data: bytes) -> list[int]:
    out, at = [], data.find(b"PK\x01\x02")
    while at >= 0:
        out.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return out


def _patch_sizes(data: bytes, size: int) -> bytes:
    """Make the first member's directory entry claim ``size`` bytes (compressed and not)."""
    raw = bytearray(data)
    at = _central_entries(data)[0]
    raw[at + 20 : at + 28] = struct.pack("<II", size, size)
    return bytes(raw)


def _patch_count(data: bytes, count: int) -> bytes:
    raw = bytearray(data)
    at = data.rfind(b"PK\x05\x06")
    raw[at + 8 : at + 12] = struct.pack("<HH", count, count)
    return bytes(raw)


def _overlap(payload: bytes) -> bytes:
    """Member archive/x's directory entry points at a copy of its header inside archive/a."""
    inner = _zip_members([("archive/x", b"\x00" * 16)])
    local = inner[: inner.find(b"PK\x01\x02")]  # archive/x's local header + data
    data = bytearray(
        _zip_members(
            [("archive/data.pkl", payload), ("archive/a", local), ("archive/x", b"\0" * 16)]
        )
    )
    a_data = data.find(local)
    entries = _central_entries(bytes(data))
    data[entries[-1] + 42 : entries[-1] + 46] = struct.pack("<I", a_data)
    return bytes(data)


def valid_stimulus_npy(shape=(2, 3, 8, 8), dtype=np.uint8) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, dtype=dtype))
    return buf.getvalue()


def assert_refused_fast(load, path, error=None) -> str:
    """``load(path)`` raises ``error`` naming ``path``, in < 1 s CPU, peak RSS + < 100 MB."""
    import pytest

    from berg_onnx.errors import ModelLoadError

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.process_time()
    with pytest.raises(error or ModelLoadError) as info:
        load(path)
    cpu = time.process_time() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert str(path) in str(info.value), info.value
    assert cpu < 1.0, f"{path}: {cpu:.2f} s of CPU to refuse"
    assert grown < 100, f"{path}: peak RSS grew by {grown:.0f} MB"
    return str(info.value)
