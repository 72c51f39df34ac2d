"""Check a pickle's opcode stream before anything unpickles it.

An allow-list ``find_class`` stops code execution, not memory exhaustion: a
6-byte stream (NEWTRUE, LONG_BINPUT 0x19727272) makes CPython's C unpickler
grow its memo to ~6.4 GB before any global is looked up, and other opcodes
declare lengths (BINBYTES8, BINUNICODE8, FRAME) far beyond the data. This
scanner walks the stream once, in bounded memory (a stack of small ints and a
byte per memo slot, both capped), and refuses:

- any opcode BERG's files never contain (the set below was read off the
  golden checkpoints and metadata written by BERG's own code, both numpy 1 and
  2, and the synthetic ones of ``python -m export synth``; LONG1 is added for
  integers beyond 32 bits, which BERG's training arguments may hold);
- a declared length beyond the bytes that remain (frames included);
- a memo index that was never assigned (the pickler numbers memo slots 0, 1,
  2, ... so a PUT may only take the next number or reuse one, a GET only read one);
- an object changed through a memo reference (a GET, then APPEND, SETITEM or
  BUILD on it): the pickler never writes that, and it would nest objects
  deeper than the depth count saw (a memo slot's depth follows its object);
- a stack underflow, nesting deeper than ``MAX_DEPTH``, more than
  ``MAX_STACK`` items on the stack, more than ``MAX_OPS`` opcodes, a global
  whose name is too long, and anything after STOP.
"""

from __future__ import annotations

from array import array

from berg_onnx.errors import ModelLoadError

MAX_DEPTH = 64  # BERG's files nest 8 deep
MAX_STACK = 10_000
MAX_OPS = 25_000  # BERG checkpoints have ~2,500 opcodes (10x headroom), metadata ~400
MAX_MARKS = 64
MAX_GLOBAL_LINE = 128

# opcode byte -> (name, argument kind). Kinds: ("fixed", n), ("len", n) for an
# n-byte little-endian length followed by that many bytes, "line2" (GLOBAL).
_ARGS: dict[int, tuple[str, tuple[str, int] | str | None]] = {
    0x80: ("PROTO", ("fixed", 1)),
    0x95: ("FRAME", ("fixed", 8)),
    0x2E: ("STOP", None),
    0x28: ("MARK", None),
    0x7D: ("EMPTY_DICT", None),
    0x5D: ("EMPTY_LIST", None),
    0x29: ("EMPTY_TUPLE", None),
    0x4E: ("NONE", None),
    0x88: ("NEWTRUE", None),
    0x89: ("NEWFALSE", None),
    0x4A: ("BININT", ("fixed", 4)),
    0x4B: ("BININT1", ("fixed", 1)),
    0x4D: ("BININT2", ("fixed", 2)),
    0x8A: ("LONG1", ("len", 1)),
    0x47: ("BINFLOAT", ("fixed", 8)),
    0x58: ("BINUNICODE", ("len", 4)),
    0x8C: ("SHORT_BINUNICODE", ("len", 1)),
    0x42: ("BINBYTES", ("len", 4)),
    0x43: ("SHORT_BINBYTES", ("len", 1)),
    0x63: ("GLOBAL", "line2"),
    0x93: ("STACK_GLOBAL", None),
    0x71: ("BINPUT", ("fixed", 1)),
    0x72: ("LONG_BINPUT", ("fixed", 4)),
    0x94: ("MEMOIZE", None),
    0x68: ("BINGET", ("fixed", 1)),
    0x6A: ("LONG_BINGET", ("fixed", 4)),
    0x85: ("TUPLE1", None),
    0x86: ("TUPLE2", None),
    0x87: ("TUPLE3", None),
    0x74: ("TUPLE", None),
    0x61: ("APPEND", None),
    0x65: ("APPENDS", None),
    0x73: ("SETITEM", None),
    0x75: ("SETITEMS", None),
    0x62: ("BUILD", None),
    0x52: ("REDUCE", None),
    0x81: ("NEWOBJ", None),
    0x51: ("BINPERSID", None),
}
#: Opcodes that exist in the pickle protocol but never in BERG's files; named in the error.
_KNOWN_REFUSED = {
    0x8E: "BINBYTES8 (8-byte length)",
    0x8D: "BINUNICODE8 (8-byte length)",
    0x96: "BYTEARRAY8 (8-byte length)",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
    0x8B: "LONG4",
    0x69: "INST",
    0x6F: "OBJ",
    0x92: "NEWOBJ_EX",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    0x50: "PERSID",
    0x67: "GET",
    0x70: "PUT",
    0x30: "POP",
    0x31: "POP_MARK",
    0x32: "DUP",
    0x49: "INT",
    0x4C: "LONG",
    0x46: "FLOAT",
    0x53: "STRING",
    0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING",
    0x56: "UNICODE",
    0x6C: "LIST",
    0x64: "DICT",
    0x8F: "EMPTY_SET",
    0x90: "ADDITEMS",
    0x91: "FROZENSET",
}
ALLOWED_OPCODES = frozenset(name for name, _ in _ARGS.values())

# Stack effect of the opcodes without arguments that pop a fixed count and push one.
_POP_PUSH = {
    "STACK_GLOBAL": 2,
    "TUPLE1": 1,
    "TUPLE2": 2,
    "TUPLE3": 3,
    "REDUCE": 2,
    "NEWOBJ": 2,
    "BINPERSID": 1,
}
_LEAVES = {
    "EMPTY_DICT",
    "EMPTY_LIST",
    "EMPTY_TUPLE",
    "NONE",
    "NEWTRUE",
    "NEWFALSE",
    "BININT",
    "BININT1",
    "BININT2",
    "LONG1",
    "BINFLOAT",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINBYTES",
    "SHORT_BINBYTES",
    "GLOBAL",
}


class PickleScanError(ModelLoadError):
    """The opcode stream breaks a rule of the pre-scan; nothing was unpickled."""


def scan_pickle(data: bytes | memoryview, source: str) -> int:
    """Check ``data`` (one pickle, nothing after it); the number of opcodes it holds.

    Raises ``PickleScanError`` naming ``source``, the byte offset and the rule broken.
    """
    view = memoryview(data)
    n = len(view)
    pos = 0
    ops = 0
    stack = array("B")  # nesting depth of each stack item (capped at 255)
    #: per stack item: the memo slot it was stored in (PUT) or read from (GET), or -1
    slots = array("l")
    #: per stack item: 1 when it was pushed by a GET (a second reference to a memo object)
    got = array("B")
    marks: list[int] = []  # stack length at each MARK
    memo = array("B")  # nesting depth of each memo slot
    frame_end = -1
    stopped = False

    def fail(reason: str, at: int) -> PickleScanError:
        return PickleScanError(
            f"{source}: refusing this pickle before unpickling it: {reason} (at byte {at})"
        )

    def need(count: int, at: int, what: str) -> None:
        floor = marks[-1] if marks else 0
        if len(stack) - floor < count:
            raise fail(f"{what} needs {count} stack item(s)", at)

    def push(depth: int, at: int, slot: int = -1, from_get: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise fail(f"nesting deeper than {MAX_DEPTH}", at)
        if len(stack) >= MAX_STACK:
            raise fail(f"more than {MAX_STACK} items on the stack", at)
        stack.append(depth)
        slots.append(slot)
        got.append(from_get)

    def pop_to(length: int) -> None:
        del stack[length:]
        del slots[length:]
        del got[length:]

    def grow(depth: int, at: int, name: str) -> None:
        """The container on top of the stack now nests ``depth`` deep (APPEND, BUILD, ...).

        Its memo slot follows, so a later GET sees the depth it has now; a container
        reached through a GET is never changed (the pickler never does it, and it
        would nest objects the depth count has already passed)."""
        if got[-1]:
            raise fail(f"{name} changes an object read back from the memo", at)
        if depth > MAX_DEPTH:
            raise fail(f"nesting deeper than {MAX_DEPTH}", at)
        stack[-1] = depth
        if slots[-1] >= 0:
            memo[slots[-1]] = depth

    while pos < n:
        at = pos
        code = view[pos]
        pos += 1
        ops += 1
        if ops > MAX_OPS:
            raise fail(f"more than {MAX_OPS} opcodes", at)
        spec = _ARGS.get(code)
        if spec is None:
            name = _KNOWN_REFUSED.get(code)
            if code in (0x8D, 0x8E, 0x96) and pos + 8 <= n:  # the 8-byte-length opcodes
                declared = int.from_bytes(view[pos : pos + 8], "little")
                if declared > n - pos - 8:
                    left = n - pos - 8
                    raise fail(f"{name} declares {declared} bytes but only {left} remain", at)
            if name is None:
                raise fail(f"byte 0x{code:02x} is not a pickle opcode", at)
            raise fail(f"opcode {name} never appears in BERG files", at)
        name, kind = spec
        arg = 0
        if kind is not None and kind != "line2":
            form, width = kind
            if pos + width > n:
                raise fail(f"{name} needs {width} argument bytes, {n - pos} remain", at)
            raw = view[pos : pos + width]
            pos += width
            arg = int.from_bytes(raw, "little")
            if form == "len":
                if arg > n - pos:
                    raise fail(f"{name} declares {arg} bytes but only {n - pos} remain", at)
                pos += arg
        elif kind == "line2":
            for _ in range(2):
                end = bytes(view[pos : pos + MAX_GLOBAL_LINE + 1]).find(b"\n")
                if end < 0:
                    raise fail(f"GLOBAL name longer than {MAX_GLOBAL_LINE} bytes or unended", at)
                pos += end + 1
        if at < frame_end < pos:
            raise fail("an opcode crosses the end of its frame", at)
        if stopped:
            raise fail("data after STOP", at)

        if name == "PROTO":
            if arg > 5:
                raise fail(f"unknown pickle protocol {arg}", at)
        elif name == "FRAME":
            if at < frame_end:
                raise fail("a FRAME starts inside the previous frame", at)
            if arg > n - pos:
                raise fail(f"FRAME declares {arg} bytes but only {n - pos} remain", at)
            frame_end = pos + arg
        elif name in _LEAVES:
            push(0, at)
        elif name == "MARK":
            if len(marks) >= MAX_MARKS:
                raise fail(f"more than {MAX_MARKS} open MARKs", at)
            marks.append(len(stack))
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            need(1, at, name)
            index = len(memo) if name == "MEMOIZE" else arg
            if index > len(memo):
                raise fail(f"{name} to memo slot {index}, but only {len(memo)} were assigned", at)
            if index == len(memo):
                memo.append(stack[-1])
            else:
                memo[index] = stack[-1]
            if not got[-1]:
                slots[-1] = index
        elif name in ("BINGET", "LONG_BINGET"):
            if arg >= len(memo):
                raise fail(f"{name} of memo slot {arg}, but only {len(memo)} were assigned", at)
            push(memo[arg], at, arg, 1)
        elif name in _POP_PUSH:
            count = _POP_PUSH[name]
            need(count, at, name)
            depth = max(stack[-count:]) + 1
            pop_to(len(stack) - count)
            push(min(depth, 255), at)
        elif name == "TUPLE":
            if not marks:
                raise fail("TUPLE without MARK", at)
            floor = marks.pop()
            depth = max(stack[floor:], default=0) + 1
            pop_to(floor)
            push(min(depth, 255), at)
        elif name in ("APPEND", "SETITEM", "BUILD"):
            count = 2 if name == "SETITEM" else 1
            need(count + 1, at, name)
            depth = max(stack[-count - 1], max(stack[-count:]) + 1)
            pop_to(len(stack) - count)
            grow(depth, at, name)
        elif name in ("APPENDS", "SETITEMS"):
            if not marks:
                raise fail(f"{name} without MARK", at)
            floor = marks.pop()
            if floor < 1:
                raise fail(f"{name} with nothing to add to", at)
            items = len(stack) - floor
            if name == "SETITEMS" and items % 2:
                raise fail("SETITEMS with an odd number of items", at)
            depth = max(stack[floor - 1], max(stack[floor:], default=-1) + 1)
            pop_to(floor)
            grow(depth, at, name)
        elif name == "STOP":
            if len(stack) != 1 or marks:
                raise fail(f"STOP with {len(stack)} stack items and {len(marks)} open MARKs", at)
            stopped = True
    if not stopped:
        raise fail("the pickle ends without STOP", n)
    return ops
