"""What kvlab's processes say to each other on the wire: length-prefixed JSON frames.

Frame layout (big endian, like most network protocols)::

    +------------+---------------------------------+
    | length u32 | payload: one UTF-8 JSON object  |
    +------------+---------------------------------+

JSON only, never pickle: a frame is data, and a process that reads one from a socket never
constructs an arbitrary object from it. The few engine objects that must cross (client inputs,
read results, versions, typed errors) are named by class and rebuilt from a short allow-list of
kvlab's own dataclasses and exceptions.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
from typing import Any

from kvlab import errors, mvcc, node
from kvlab.errors import KvlabError, ProtocolError
from kvlab.messages import Message

MAX_FRAME = 64 << 20  # a frame announcing more than 64 MiB is not from kvlab: drop the link
_LEN = struct.Struct(">I")
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class FrameError(ConnectionError):
    """The peer sent something that is not a kvlab frame: close the connection."""


def frame(obj: Any) -> bytes:
    """One frame: the length, then the JSON payload (ASCII-escaped, so any str survives)."""
    payload = _dumps(obj).encode("ascii")
    return _LEN.pack(len(payload)) + payload


def parse(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise FrameError(f"a frame is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise FrameError("a frame is not a JSON object")
    return obj


def length(header: bytes) -> int:
    (n,) = _LEN.unpack(header)
    if n > MAX_FRAME:
        raise FrameError(f"a frame announces {n} bytes (more than {MAX_FRAME}): not kvlab")
    return n


async def read_frame(reader: Any) -> dict[str, Any] | None:
    """The next frame from an asyncio StreamReader, or None at a clean end of stream."""
    import asyncio

    try:
        header = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise FrameError("the connection closed in the middle of a frame header") from None
        return None
    try:
        payload = await reader.readexactly(length(header))
    except asyncio.IncompleteReadError:
        raise FrameError("the connection closed in the middle of a frame") from None
    return parse(payload)


def recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame from a blocking socket, or None at a clean end of stream."""
    header = _recv_exactly(sock, 4, allow_eof=True)
    if header is None:
        return None
    return parse(_recv_exactly(sock, length(header)) or b"")


def _recv_exactly(sock: socket.socket, n: int, allow_eof: bool = False) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if allow_eof and not buf:
                return None
            raise FrameError("the connection closed in the middle of a frame")
        buf += chunk
    return bytes(buf)


# -- engine objects ------------------------------------------------------------------------------
def message_to_wire(msg: Message) -> list[Any]:
    return [msg.src, msg.dst, msg.kind, msg.tx, msg.body]


def message_from_wire(raw: Any) -> Message:
    if not (isinstance(raw, list) and len(raw) == 5 and isinstance(raw[2], str)
            and isinstance(raw[4], dict)):
        raise FrameError(f"not a kvlab message: {raw!r:.200}")
    return Message(raw[0], raw[1], raw[2], raw[3], raw[4])


# Inputs a client may send: the node's own inputs, never the driver's (a client must not be able
# to deliver a forged PREPARE, fire a timer or trigger recovery).
_DRIVER_INPUTS = frozenset({"Deliver", "Fire", "PeerUp", "Abandon", "Recover", "Gc"})


def input_to_wire(inp: Any) -> dict[str, Any]:
    """A client input without its call id (the serving node assigns its own)."""
    fields = {f.name: getattr(inp, f.name) for f in dataclasses.fields(inp) if f.name != "call"}
    return {"type": type(inp).__name__, "fields": fields,
            "call": any(f.name == "call" for f in dataclasses.fields(inp))}


def input_from_wire(raw: Any, call: int) -> Any:
    """Rebuild a client input with the serving node's call id. Any input class that
    :mod:`kvlab.node` defines is accepted except the driver's own (so new client calls, a
    range scan say, need no change here)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("fields"), dict):
        raise FrameError("a call frame needs an input {'type': ..., 'fields': {...}}")
    name = raw.get("type")
    cls = getattr(node, name, None) if isinstance(name, str) else None
    if cls is None or name in _DRIVER_INPUTS or not dataclasses.is_dataclass(cls) \
            or not isinstance(cls, type):
        raise FrameError(f"{name!r} is not an input a client may send")
    kwargs = dict(raw["fields"])
    if any(f.name == "call" for f in dataclasses.fields(cls)):
        kwargs["call"] = call
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise FrameError(f"bad fields for {name}: {e}") from None


_RESULT_CLASSES = {c.__name__: c for c in (node.ReadResult, node.ScanResult, mvcc.Version)}


def value_to_wire(v: Any) -> Any:
    """A reply value, tagged so tuples and kvlab's dataclasses come back as they left.
    User values inside a dataclass are plain JSON already and travel untouched."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        if type(v).__name__ not in _RESULT_CLASSES:
            raise ProtocolError(f"kvlab cannot send a {type(v).__name__} to a client: add it "
                                f"to kvlab.proc.wire._RESULT_CLASSES")
        return {"dc": type(v).__name__,
                "f": {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}}
    if isinstance(v, tuple):
        return {"t": [value_to_wire(x) for x in v]}
    if isinstance(v, list):
        return {"l": [value_to_wire(x) for x in v]}
    if isinstance(v, dict):
        return {"d": {k: value_to_wire(x) for k, x in v.items()}}
    return {"v": v}


def value_from_wire(raw: Any) -> Any:
    """The inverse of :func:`value_to_wire` (only kvlab's own result classes are rebuilt)."""
    if not isinstance(raw, dict):
        raise FrameError(f"not a tagged value: {raw!r:.200}")
    if "dc" in raw:
        cls = _RESULT_CLASSES.get(raw["dc"])
        if cls is None or not isinstance(raw.get("f"), dict):
            raise FrameError(f"unknown result class {raw.get('dc')!r}")
        try:
            v = cls(**raw["f"])
            if cls is node.ScanResult:  # its rows are named tuples: JSON made them lists
                v.rows = [node.ScanRow(*r) for r in v.rows]
        except TypeError as e:
            raise FrameError(f"bad fields for {raw['dc']}: {e}") from None
        return v
    if len(raw) != 1:
        raise FrameError(f"not a tagged value: {raw!r:.200}")
    (tag, v), = raw.items()
    if tag == "v":
        return v
    if tag == "t":
        return tuple(value_from_wire(x) for x in v)
    if tag == "l":
        return [value_from_wire(x) for x in v]
    if tag == "d":
        return {k: value_from_wire(x) for k, x in v.items()}
    raise FrameError(f"unknown value tag {tag!r}")


def error_to_wire(err: BaseException) -> dict[str, str]:
    return {"cls": type(err).__name__, "msg": str(err)}


def error_from_wire(raw: Any) -> KvlabError:
    """The typed kvlab error a node raised, rebuilt on the client (any kvlab error class)."""
    name = raw.get("cls") if isinstance(raw, dict) else None
    msg = str(raw.get("msg", "")) if isinstance(raw, dict) else repr(raw)
    cls = getattr(errors, name, None) if isinstance(name, str) else None
    if cls is None:
        from kvlab import checker, history

        cls = getattr(history, name, None) or getattr(checker, name, None)
    if isinstance(cls, type) and issubclass(cls, KvlabError):
        return cls(msg)
    return ProtocolError(f"the node failed with {name}: {msg}")


__all__ = ["frame", "parse", "read_frame", "recv_frame", "FrameError", "MAX_FRAME",
           "message_to_wire", "message_from_wire", "input_to_wire", "input_from_wire",
           "value_to_wire", "value_from_wire", "error_to_wire", "error_from_wire"]
