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
        "memo_chain": memo_chain(),
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
    cases["storages_before_schema"] = torch_zip(  # valid storages under keys BERG never has
        tensors_pickle({"a": ("0", 4), "b": ("1", 4)}), {"0": b"\0" * 16, "1": b"\0" * 16}
    )
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


# -- second pass (hostile files across the runtime): ONNX graphs, images, NIfTI, stores -------
def memo_chain(depth: int = 3_000) -> bytes:
    """Lists memoized while empty and chained through memo references afterwards (GET,
    GET, APPEND), so that each looks shallow to a depth count; then the head is handed to
    a dtype's BUILD as its state, whose refusal message once took repr() of a 3,000-deep
    list (a RecursionError traceback)."""
    out = bytearray(b"\x80\x02(")
    for i in range(depth + 1):
        out += b"]r" + struct.pack("<I", i)  # EMPTY_LIST, LONG_BINPUT i
    for i in range(depth):
        out += b"j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i + 1) + b"a"
    out += b"cnumpy\ndtype\n" + _u("f8") + b"\x85R"  # numpy.dtype("f8")
    out += b"j" + struct.pack("<I", 0) + b"\x85b"  # BUILD it with the state (list 0,)
    return bytes(out + b"t.")


def tensors_pickle(tensors: dict[str, tuple[str, int]]) -> bytes:
    """A protocol-2 pickle {name: float tensor} over storages {key: numel} (one per tensor)."""
    out = bytearray(b"\x80\x02}(")
    for name, (key, numel) in tensors.items():
        out += (
            _u(name)
            + b"ctorch._utils\n_rebuild_tensor_v2\n(("
            + _u("storage")
            + b"ctorch\nFloatStorage\n"
            + _u(key)
            + _u("cpu")
            + b"J"
            + struct.pack("<i", numel)
            + b"tQK\x00(J"
            + struct.pack("<i", numel)
            + b"t(K\x01t\x89NtR"
        )
    return bytes(out + b"u.")


def write_big_checkpoint(path, storages: dict[str, int], pickle: bytes) -> None:
    """A torch.save-shaped zip with stored zero storages {key: bytes}, written in pieces (the
    test process never holds a storage in memory, so its peak RSS stays its own)."""
    block = b"\x00" * (1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle)
        z.writestr("archive/byteorder", "little")
        for key, size in storages.items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            with z.open(info, "w", force_zip64=size >= 1 << 31) as f:
                left = size
                while left:
                    f.write(block[: min(left, len(block))])
                    left -= min(left, len(block))


def write_zip_with_hole(path, data: bytes, hole: int) -> None:
    """``data`` (a zip, ZIP64 end records included) with ``hole`` zero bytes (sparse) between
    its members and its central directory: every member still checks out, but the file is
    ``hole`` bytes larger (1 TB takes no disk)."""
    eocd = data.rfind(b"PK\x05\x06")
    (cd_offset,) = struct.unpack("<I", data[eocd + 16 : eocd + 20])
    z64 = data.rfind(b"PK\x06\x06")
    if z64 >= 0:
        (cd_offset,) = struct.unpack("<Q", data[z64 + 48 : z64 + 56])
    tail = bytearray(data[cd_offset:])
    if z64 >= 0:
        at, loc = z64 - cd_offset, data.rfind(b"PK\x06\x07") - cd_offset
        tail[at + 48 : at + 56] = struct.pack("<Q", cd_offset + hole)
        tail[loc + 8 : loc + 16] = struct.pack("<Q", z64 + hole)
    at = eocd - cd_offset
    if cd_offset + hole < 1 << 32:
        tail[at + 16 : at + 20] = struct.pack("<I", cd_offset + hole)
    else:  # the ZIP64 record holds the offset; the end record says so
        assert z64 >= 0, "a hole beyond 4 GB needs ZIP64 end records"
        tail[at + 16 : at + 20] = b"\xff\xff\xff\xff"
    with open(path, "wb") as f:
        f.write(data[:cd_offset])
        f.seek(cd_offset + hole)
        f.write(bytes(tail))


def big_endian_metadata() -> tuple[bytes, np.ndarray]:
    """BERG metadata whose affine is stored big-endian, and the affine's true values."""
    affine = np.array([[1.8, 0, 0, -72], [0, 1.8, 0, -90], [0, 0, 1.8, -70], [0, 0, 0, 1]])
    return _metadata_npy(fmri_affine=affine.astype(">f8")), affine


def sparse_file(path, size: int, head: bytes = b"") -> None:
    """``head`` followed by zeros up to ``size`` bytes, without writing them (sparse)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def png_rgba(width: int, height: int) -> bytes:
    """A valid RGBA PNG of transparent black pixels, compressed row by row (tiny on disk)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + 4 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def nifti_gz(shape: tuple[int, ...], affine: np.ndarray, dtype=np.float32) -> bytes:
    """A .nii.gz of zeros: the header member, then one gzip member per volume (gzip readers
    decompress concatenated members as one stream), so a file that expands to gigabytes
    takes milliseconds to build and a few MB on disk."""
    import gzip

    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(affine, code="scanner")
    hdr.set_sform(affine, code="aligned")
    head = io.BytesIO()
    hdr.write_to(head)
    head.write(b"\x00" * (int(hdr["vox_offset"]) - head.tell()))
    volume = int(np.prod(shape[:3])) * np.dtype(dtype).itemsize
    one = gzip.compress(b"\x00" * volume, compresslevel=9, mtime=0)
    count = shape[3] if len(shape) == 4 else 1
    return gzip.compress(head.getvalue(), mtime=0) + one * count


def nifti_extension_bomb(affine: np.ndarray, esize: int, volumes: int = 60) -> bytes:
    """A .nii.gz whose one header extension claims ``esize`` bytes (0: nibabel then reads to
    the end), followed by 16 MB gzip members of zeros (1 GB expanded, 1 MB on disk)."""
    import gzip

    good = gzip.decompress(nifti_gz((81, 104, 83, 1), affine))[:348]
    head = bytearray(good) + b"\x01\x00\x00\x00"  # the extension flag
    head[108:112] = struct.pack("<f", 352 + 16)  # vox_offset: one 16-byte extension
    head += struct.pack("<ii", esize, 4) + b"\x00" * 8
    return gzip.compress(bytes(head), mtime=0) + gzip.compress(b"\x00" * (16 << 20)) * volumes


# ONNX graphs, written with a few lines of protobuf wire format (no onnx package needed).
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(number: int, value) -> bytes:
    """One protobuf field: an int (varint), or bytes/str (length-delimited)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value & ((1 << 64) - 1))
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def onnx_tensor(name: str, dims, data_type: int, raw: bytes = b"", external=None) -> bytes:
    out = b"".join(_pb(1, d) for d in dims) + _pb(2, data_type) + _pb(8, name)
    if external is None:
        return out + _pb(9, raw)
    entries = b"".join(_pb(13, _pb(1, k) + _pb(2, str(v))) for k, v in external.items())
    return out + entries + _pb(14, 1)


def onnx_value(name: str, dims, elem: int = 1) -> bytes:
    shape = b"".join(_pb(1, _pb(2, d) if isinstance(d, str) else _pb(1, d)) for d in dims)
    return _pb(1, name) + _pb(2, _pb(1, _pb(1, elem) + _pb(2, shape)))


def onnx_node(op: str, inputs, outputs, attributes=(), domain: str = "") -> bytes:
    out = b"".join(_pb(1, i) for i in inputs) + b"".join(_pb(2, o) for o in outputs)
    out += _pb(4, op) + b"".join(_pb(5, a) for a in attributes)
    return out + (_pb(7, domain) if domain else b"")


def onnx_graph_attr(name: str, graph: bytes) -> bytes:
    return _pb(1, name) + _pb(6, graph) + _pb(20, 5)  # type GRAPH


def onnx_graph(nodes, initializers, inputs, outputs) -> bytes:
    return (
        b"".join(_pb(1, n) for n in nodes)
        + _pb(2, "crafted")
        + b"".join(_pb(5, t) for t in initializers)
        + b"".join(_pb(11, v) for v in inputs)
        + b"".join(_pb(12, v) for v in outputs)
    )


def onnx_model(nodes, initializers, inputs, outputs, extra: bytes = b"", opset: int = 20):
    graph = onnx_graph(nodes, initializers, inputs, outputs)
    return _pb(1, 10) + _pb(2, "crafted") + _pb(7, graph) + _pb(8, _pb(2, opset)) + extra


def _i64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def _column(nodes: list, inits: list) -> str:
    """Nodes computing images[:, :1, :1, :1] as an (N, 1) column "col" (allowed ops)."""
    inits += [
        onnx_tensor("starts", [4], 7, _i64(0, 0, 0, 0)),
        onnx_tensor("ends", [4], 7, _i64(1 << 62, 1, 1, 1)),
        onnx_tensor("shape", [2], 7, _i64(-1, 1)),
    ]
    nodes += [
        onnx_node("Slice", ["images", "starts", "ends"], ["corner"]),
        onnx_node("Reshape", ["corner", "shape"], ["col"]),
    ]
    return "col"


def onnx_cases(nv: int) -> dict[str, bytes]:
    """Graphs that look like an export (input "images", output "responses") but are not."""
    images = onnx_value("images", ["batch", 3, 227, 227])
    responses = onnx_value("responses", ["batch", nv])
    cases = {}

    nodes, inits = [], []
    col = _column(nodes, inits)
    inits.append(onnx_tensor("w", [1, nv], 1, external={"location": "w.bin", "length": 4 * nv}))
    nodes.append(onnx_node("Add", [col, "w"], ["responses"]))
    cases["external_data"] = onnx_model(nodes, inits, [images], [responses])

    nodes, inits = [], []
    col = _column(nodes, inits)
    nodes.append(onnx_node("Relu", [col], ["responses"]))
    cases["column_declared"] = onnx_model(
        nodes, inits, [images], [onnx_value("responses", ["batch", 1])]
    )
    cases["column_undeclared"] = onnx_model(nodes, inits, [images], [responses])

    body_in = [onnx_value("i", [], 7), onnx_value("c", [], 9), onnx_value("x", ["batch", 1])]
    body_out = [onnx_value("c_out", [], 9), onnx_value("x_out", ["batch", 1])]
    body_nodes = [onnx_node("Identity", ["c"], ["c_out"]), onnx_node("Relu", ["x"], ["x_out"])]
    body_graph = onnx_graph(body_nodes, [], body_in, body_out)
    nodes, inits = [], []
    col = _column(nodes, inits)
    inits += [onnx_tensor("trips", [], 7, _i64(1 << 50)), onnx_tensor("yes", [], 9, b"\x01")]
    nodes.append(
        onnx_node("Loop", ["trips", "yes", col], ["looped"], [onnx_graph_attr("body", body_graph)])
    )
    nodes.append(onnx_node("Relu", ["looped"], ["responses"]))
    cases["loop_forever"] = onnx_model(
        nodes, inits, [images], [onnx_value("responses", ["batch", 1])]
    )
    cases["loop_forever_nv"] = onnx_model(nodes, inits, [images], [responses])

    nodes, inits = [], []
    col = _column(nodes, inits)
    nodes.append(onnx_node("Gelu", [col], ["responses"], domain="com.microsoft"))
    cases["custom_domain"] = onnx_model(nodes, inits, [images], [responses])
    cases["local_function"] = onnx_model(
        nodes[:-1] + [onnx_node("Relu", [col], ["responses"])],
        inits,
        [images],
        [responses],
        extra=_pb(25, _pb(1, "f") + _pb(2, "local")),
    )
    cases["not_protobuf"] = b"\xff" * 64
    return cases


def peak_run(cmd: list[str], env: dict | None = None, timeout: float = 60) -> dict:
    """Run ``cmd`` in a fresh process; {rc, stderr, stdout, peak_mb, wall} (rc None: timed
    out). The peak RSS is the child's own (RUSAGE_CHILDREN of a fresh watcher)."""
    import json
    import subprocess
    import sys

    watcher = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    run = subprocess.run(\n"
        f"        sys.argv[1:], capture_output=True, text=True, timeout={timeout}\n"
        "    )\n"
        "    rc, out, err = run.returncode, run.stdout, run.stderr\n"
        "except subprocess.TimeoutExpired as e:\n"
        "    rc, out, err = None, '', str(e)\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "result = {'rc': rc, 'stdout': out, 'stderr': err, 'peak_mb': peak, 'wall': wall}\n"
        "print(json.dumps(result))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", watcher, *cmd],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout + 30,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def assert_one_line_refusal(result: dict, *needles: str, seconds: float = 5, mb: float = 500):
    """One error line naming ``needles``, a non-zero exit, within ``seconds`` and ``mb``."""
    assert result["rc"] is not None, f"timed out: {result['stderr'][-300:]}"
    lines = result["stderr"].strip().splitlines()
    assert result["rc"] not in (0, None), result
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"][-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result["wall"] < seconds, f"took {result['wall']:.1f} s: {lines[0]}"
    assert result["peak_mb"] < mb, f"peaked at {result['peak_mb']:.0f} MB: {lines[0]}"
    return lines[0]
