"""An exported ONNX graph checked as data, before onnxruntime sees it.

A ``.onnx`` file is a program: onnxruntime runs whatever operators it lists
(``Loop`` with a 2^50 trip count runs forever), reads whatever external data
files its tensors name (weights the manifest's sha256 never covered), and
returns whatever shape its output has. So before a session is built the graph
is read with a small, bounded reader of protobuf's wire format (the wheel does
not depend on ``onnx``) and compared with what ``python -m export convert``
writes:

- one opset import, of the default domain; no model-local functions, no
  training info, no sparse initializers;
- every node an operator of :data:`ALLOWED_OPS` (the ones the exporter emits,
  fp32 and int8 tiers) in the default domain, with plain attributes only (no
  subgraphs: no control flow of any kind);
- no tensor anywhere with external data (the exporter keeps every weight
  inside the file, so the manifest's sha256 covers all of it);
- exactly one input ``images`` float32 (batch, 3, 227, 227) and one output
  ``responses`` float32 (batch, nv) with nv the manifest's.

Every refusal is a ``ModelLoadError`` naming the file and the reason.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from berg_onnx.errors import ModelLoadError

#: Operators of the graphs ``python -m export convert`` writes (fp32 and --int8).
ALLOWED_OPS = frozenset(
    {
        "Add",
        "BatchNormalization",
        "Cast",
        "Concat",
        "Conv",
        "DynamicQuantizeLinear",
        "Log",
        "MatMul",
        "MatMulInteger",
        "MaxPool",
        "Mul",
        "Relu",
        "Reshape",
        "Slice",
        "Sub",
        "Tanh",
    }
)
INPUT_NAME = "images"
OUTPUT_NAME = "responses"
INPUT_DIMS = (3, 227, 227)
_FLOAT = 1  # TensorProto.FLOAT
#: AttributeProto types a node of these graphs may carry: FLOAT, INT, STRING, FLOATS, INTS,
#: STRINGS (no TENSOR, GRAPH, SPARSE_TENSOR, TYPE_PROTO or their lists).
_PLAIN_ATTRIBUTES = frozenset({1, 2, 3, 6, 7, 8})
MAX_NODES = 4096  # the exporter's graphs have ~80 nodes per split
MAX_FIELDS = 1_000_000  # protobuf fields visited in all (the real graphs: ~10,000)
MAX_TENSOR_FIELDS = 256  # one TensorProto's fields (dims, type, name, raw_data)
MAX_NAME = 4096


class _Bad(Exception):
    pass


class _Reader:
    """Fields of protobuf messages in one buffer, counted against MAX_FIELDS."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.visited = 0

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Bad("a truncated or overlong varint")
            byte = self.buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field number, wire type, value or start, end) of the message buf[start:end]."""
        pos = start
        while pos < end:
            self.visited += 1
            if self.visited > MAX_FIELDS:
                raise _Bad(f"more than {MAX_FIELDS} protobuf fields")
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = self.varint(pos, end)
                yield number, wire, value, pos
            elif wire == 1 or wire == 5:
                width = 8 if wire == 1 else 4
                if pos + width > end:
                    raise _Bad("a fixed-width field beyond its message")
                yield number, wire, pos, pos + width
                pos += width
            elif wire == 2:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    raise _Bad(f"a field of {length} bytes beyond its message")
                yield number, wire, pos, pos + length
                pos += length
            else:
                raise _Bad(f"protobuf wire type {wire} (groups are not used by ONNX files)")

    def text(self, start: int, end: int) -> str:
        if end - start > MAX_NAME:
            raise _Bad(f"a name of {end - start} bytes")
        return bytes(self.buf[start:end]).decode("utf-8", "replace")


def check_graph(path: str | os.PathLike[str], nv: int) -> None:
    """Raise ModelLoadError unless ``path`` is a graph as the exporter writes it for ``nv``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelLoadError(f"{path} is empty, not an ONNX graph")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    _check_model(_Reader(view), size, nv)
                except _Bad as e:
                    raise ModelLoadError(
                        f"{path} is not a berg-onnx model graph: {e}; refusing to load it "
                        "(re-export it with `python -m export convert`)"
                    ) from None
                finally:
                    view.release()
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None


def _check_model(r: _Reader, size: int, nv: int) -> None:
    graphs, opsets = 0, 0
    for number, wire, a, b in r.fields(0, size):
        if number == 7 and wire == 2:  # graph
            graphs += 1
            _check_graph(r, a, b, nv)
        elif number == 8 and wire == 2:  # opset_import
            opsets += 1
            for n, w, x, y in r.fields(a, b):
                if n == 1 and w == 2 and r.text(x, y) not in ("", "ai.onnx"):
                    raise _Bad(f"it imports operator set domain {r.text(x, y)!r}")
        elif number in (20, 25):
            what = "training information" if number == 20 else "model-local functions"
            raise _Bad(f"it carries {what}")
    if graphs != 1:
        raise _Bad(f"{graphs} graphs instead of one")
    if opsets != 1:
        raise _Bad(f"{opsets} operator set imports instead of one (the default domain's)")


def _check_graph(r: _Reader, start: int, end: int, nv: int) -> None:
    nodes, inputs, outputs = 0, [], []
    for number, wire, a, b in r.fields(start, end):
        if wire != 2:
            continue
        if number == 1:  # node
            nodes += 1
            if nodes > MAX_NODES:
                raise _Bad(f"more than {MAX_NODES} nodes")
            _check_node(r, a, b)
        elif number == 5:  # initializer
            _check_tensor(r, a, b, "an initializer")
        elif number == 15:
            raise _Bad("it has sparse initializers")
        elif number == 11:
            inputs.append(_value_info(r, a, b))
        elif number == 12:
            outputs.append(_value_info(r, a, b))
    want_in = (INPUT_NAME, _FLOAT, INPUT_DIMS)
    if len(inputs) != 1 or (inputs[0][0], inputs[0][1], inputs[0][2][1:]) != want_in:
        raise _Bad(
            f"its inputs are {_show(inputs)}; expected one, {INPUT_NAME!r} float32 "
            f"(batch, {', '.join(map(str, INPUT_DIMS))})"
        )
    if len(outputs) != 1 or (outputs[0][0], outputs[0][1], outputs[0][2][1:]) != (
        OUTPUT_NAME,
        _FLOAT,
        (nv,),
    ):
        raise _Bad(
            f"its outputs are {_show(outputs)}; expected one, {OUTPUT_NAME!r} float32 "
            f"(batch, {nv}) for the manifest's {nv} voxels"
        )


def _show(infos: list[tuple[str, int, tuple]]) -> str:
    shown = [f"{name!r:.40} type {t} dims {dims}" for name, t, dims in infos[:3]]
    return "[" + ", ".join(shown) + (", ..." if len(infos) > 3 else "") + "]"


def _check_node(r: _Reader, start: int, end: int) -> None:
    op, domain = "", ""
    for number, wire, a, b in r.fields(start, end):
        if wire != 2:
            continue
        if number == 4:
            op = r.text(a, b)
        elif number == 7:
            domain = r.text(a, b)
        elif number == 5:
            _check_attribute(r, a, b, op)
    if domain not in ("", "ai.onnx") or op not in ALLOWED_OPS:
        where = f" of domain {domain!r:.40}" if domain else ""
        raise _Bad(
            f"it runs operator {op!r:.40}{where}, which berg-onnx exports never contain "
            f"(allowed: {', '.join(sorted(ALLOWED_OPS))})"
        )


def _check_attribute(r: _Reader, start: int, end: int, op: str) -> None:
    kind = None
    for number, wire, a, _b in r.fields(start, end):
        if number == 20 and wire == 0:
            kind = a
        elif number in (6, 11) and wire == 2:
            raise _Bad(f"a node ({op!r:.40}) holds a subgraph (control flow)")
        elif number in (5, 10, 22, 23, 14, 15) and wire == 2:
            raise _Bad(f"a node ({op!r:.40}) has a tensor or type attribute")
    if kind is not None and kind not in _PLAIN_ATTRIBUTES:
        raise _Bad(f"a node ({op!r:.40}) has an attribute of type {kind}")


def _check_tensor(r: _Reader, start: int, end: int, what: str) -> None:
    count = 0
    for number, wire, a, _b in r.fields(start, end):
        count += 1
        if count > MAX_TENSOR_FIELDS:
            raise _Bad(f"{what} has more than {MAX_TENSOR_FIELDS} fields (unpacked data)")
        if number == 13 or (number == 14 and wire == 0 and a != 0):
            raise _Bad(
                f"{what} loads its data from an external file, which no berg-onnx export "
                "does (the manifest's sha256 must cover every byte a model reads)"
            )


def _value_info(r: _Reader, start: int, end: int) -> tuple[str, int, tuple]:
    """(name, element type, dims: int, or None for a symbolic one) of a ValueInfoProto."""
    name, elem, dims = "", -1, []
    for number, wire, a, b in r.fields(start, end):
        if number == 1 and wire == 2:
            name = r.text(a, b)
        elif number == 2 and wire == 2:  # TypeProto
            for n2, w2, a2, b2 in r.fields(a, b):
                if n2 != 1 or w2 != 2:  # only tensor_type
                    raise _Bad(f"{name!r:.40} is not a tensor")
                for n3, w3, a3, b3 in r.fields(a2, b2):
                    if n3 == 1 and w3 == 0:
                        elem = a3
                    elif n3 == 2 and w3 == 2:  # TensorShapeProto
                        for n4, w4, a4, b4 in r.fields(a3, b3):
                            if n4 == 1 and w4 == 2:
                                if len(dims) >= 8:
                                    raise _Bad(f"{name!r:.40} has more than 8 dimensions")
                                dims.append(_dim(r, a4, b4))
    return name, elem, tuple(dims)


def _dim(r: _Reader, start: int, end: int) -> int | None:
    value = None
    for number, wire, a, _b in r.fields(start, end):
        if number == 1 and wire == 0:
            value = a
    return value
