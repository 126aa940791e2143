"""Values and frames on the wire between the engine, its workers and the untrusted program.

Every value that leaves the untrusted process is *data*: tagged JSON of builtin types
(``encode``), rebuilt as plain builtins (``decode``). Nothing is unpickled and no object of the
program's classes reaches the trusted side: one whose ``__eq__`` always says yes arrives as an
opaque ``Handle`` that equals nothing. Frames are a 4-byte big-endian length and UTF-8 JSON, read
with exact-length ``os.read`` calls (nothing beyond a frame is buffered in a process that forks).
"""

from __future__ import annotations

import base64
import builtins
import json
import math
import os
import select
import struct
import time
from typing import Any

MAX_FRAME = 64 << 20
_BIG = 1 << 63  # bytes; a reply larger than this is a protocol violation
MAX_DEPTH = 200


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame (or closed the channel)."""


class FrameTimeout(Exception):
    """No complete frame before the deadline."""


class Handle:
    """An object that could not be serialised, left in the sandbox (``id``; it can be passed back). It
    never equals plain data and has no truth value on the trusted side."""

    __slots__ = ("id", "type_name", "channel")

    def __init__(self, id: int, type_name: str, channel: Any = None):
        self.id, self.type_name, self.channel = id, type_name, channel

    def __repr__(self) -> str:
        return f"<sandboxed {self.type_name} object #{self.id}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Handle):
            if self.channel is None:
                raise HandleComparison(self, other)
            return self.channel.eq(self, other)  # two program objects: the program's own ==
        return False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.channel is None:
            raise TypeError(f"{self!r} is not callable outside the sandbox")
        return self.channel.call(self.id, args, kwargs)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise TypeError(f"{self!r} has no truth value outside the sandbox")


class HandleComparison(Exception):
    """Two sandboxed objects compared: the trusted side asks the sandbox (test-defined semantics)."""

    def __init__(self, a: Handle, b: Handle):
        super().__init__(a, b)
        self.a, self.b = a, b


# -- values -------------------------------------------------------------------------------------

_TAGS = {tuple: "$t", set: "$s", frozenset: "$fs"}

def encode(value: Any, handles: dict[int, Any] | None = None, _depth: int = 0) -> Any:
    """Tagged JSON for ``value``; other objects become ``handles`` (trusted side: TypeError)."""
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:  # big ints as hex: linear to parse, and JSON's decimal form is capped at 4300 digits
        return value if -_BIG < value < _BIG else {"$i": format(value, "x")}
    if t is float:
        return value if math.isfinite(value) else {"$f": repr(value)}
    if _depth > MAX_DEPTH:
        return _opaque(value, handles)
    d = _depth + 1
    if t is list:
        return [encode(v, handles, d) for v in value]
    if t in _TAGS:
        return {_TAGS[t]: [encode(v, handles, d) for v in value]}
    if t is dict:
        return {"$d": [[encode(k, handles, d), encode(v, handles, d)] for k, v in value.items()]}
    if t is bytes:
        return {"$b": base64.b64encode(value).decode("ascii")}
    if t is complex:
        return {"$c": [encode(value.real, handles, d), encode(value.imag, handles, d)]}
    if t is Handle:
        return {"$h": value.id}
    if t is type and getattr(builtins, value.__name__, None) is value:
        return {"$bi": value.__name__}  # builtin types passed as arguments (MBPP does: int, str, ...)
    # subclasses of builtins: keep the builtin value, drop the class (and its __eq__)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return encode(int.__index__(value), handles, d)
    if isinstance(value, float):
        return encode(float.__float__(value), handles, d)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)) and handles is not None:
        base = next(b for b in (list, tuple, set, frozenset, dict) if isinstance(value, b))
        try:
            return encode(base(value), handles, d)
        except Exception:
            return _opaque(value, handles)
    if handles is not None and t.__module__ == "numpy" and hasattr(value, "tolist"):
        try:
            return encode(value.tolist(), handles, d)
        except Exception:
            return _opaque(value, handles)
    return _opaque(value, handles)


def _opaque(value: Any, handles: dict[int, Any] | None) -> Any:
    if handles is None:
        raise TypeError(f"cannot send a {type(value).__name__} into the sandbox")
    hid = len(handles) + 1
    handles[hid] = value
    try:
        name = type(value).__name__
        name = name if isinstance(name, str) else "object"
    except Exception:
        name = "object"
    return {"$h": hid, "type": str.__str__(name)[:100]}


def decode(obj: Any, handles: dict[int, Any] | None = None, _depth: int = 0, channel: Any = None) -> Any:
    """Plain builtins from tagged JSON; ``$h`` resolves to the object with ``handles`` (sandbox side),
    else to a ``Handle`` bound to ``channel``. Raises ProtocolError on bad input."""
    if _depth > MAX_DEPTH + 2:
        raise ProtocolError("value nested too deeply")
    t = type(obj)
    if obj is None or t in (bool, int, float, str):
        return obj
    d = _depth + 1
    if t is list:
        return [decode(v, handles, d, channel) for v in obj]
    if t is not dict or len(obj) not in (1, 2):
        raise ProtocolError(f"bad value encoding: {str(obj)[:80]}")
    try:
        if "$t" in obj:
            return tuple(decode(v, handles, d, channel) for v in obj["$t"])
        if "$d" in obj:
            return {decode(k, handles, d, channel): decode(v, handles, d, channel) for k, v in obj["$d"]}
        if "$s" in obj:
            return {decode(v, handles, d, channel) for v in obj["$s"]}
        if "$fs" in obj:
            return frozenset(decode(v, handles, d, channel) for v in obj["$fs"])
        if "$i" in obj:
            return int(obj["$i"], 16)
        if "$f" in obj:
            return float(obj["$f"])
        if "$b" in obj:
            return base64.b64decode(obj["$b"])
        if "$c" in obj:
            re_, im = obj["$c"]
            return complex(float(re_), float(im))
        if "$bi" in obj:
            value = getattr(builtins, obj["$bi"], None)
            if type(value) is not type:
                raise ProtocolError("bad builtin reference")
            return value
        if "$h" in obj:
            hid = obj["$h"]
            if type(hid) is not int:
                raise ProtocolError("bad handle id")
            if handles is not None:
                return handles[hid]
            name = obj.get("type", "object")
            return Handle(hid, name if isinstance(name, str) else "object", channel)
    except ProtocolError:
        raise
    except Exception as e:  # unhashable keys, bad base64, wrong arity, ...
        raise ProtocolError(f"bad value encoding ({type(e).__name__}: {e})"[:200]) from None
    raise ProtocolError(f"unknown value tag: {list(obj)[:2]}")


# -- frames -------------------------------------------------------------------------------------

def frame(message: Any) -> bytes:
    """One frame's bytes (length + UTF-8 JSON). Raises before anything is written when ``message``
    cannot be sent (UnicodeEncodeError for a lone surrogate, TypeError, ValueError)."""
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return struct.pack(">I", len(data)) + data


def send(fd: int, message: Any, deadline: float | None = None) -> None:
    """Write one frame; with a ``deadline`` a peer that stops reading raises FrameTimeout."""
    send_bytes(fd, frame(message), deadline)


def send_bytes(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write ``data`` (whole frames, already serialised: see ``frame``) as ``send`` does."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            left = deadline - time.monotonic() if deadline is not None else None
            if left is None or left <= 0 or not select.select([], [fd], [], left)[1]:
                raise FrameTimeout() from None
            continue
        view = view[n:]


def recv(fd: int, deadline: float | None = None, max_bytes: int = MAX_FRAME) -> Any:
    """Read one frame (``deadline``: time.monotonic(), ``fd`` non-blocking); FrameTimeout / ProtocolError."""
    (length,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_bytes}-byte limit")
    data = _read_exact(fd, length, deadline)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"frame is not JSON ({type(e).__name__})") from None


def set_nonblocking(fd: int) -> int:
    os.set_blocking(fd, False)
    return fd


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except BlockingIOError:  # only with a deadline: wait for data, at most until then
            left = deadline - time.monotonic() if deadline is not None else None
            if left is None or left <= 0 or not select.select([fd], [], [], left)[0]:
                raise FrameTimeout() from None
            continue
        if not chunk:
            raise ProtocolError("channel closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
