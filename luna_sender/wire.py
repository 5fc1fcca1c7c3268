"""Message formats: what producers put on the bus, and the frames pushed to clients.

Every incoming bus message is decoded exactly once per process and every outgoing envelope is
serialised exactly once, then framed once as a websocket text frame; the same bytes are written to
every matching socket (see hub.py). Producers publish UTF-8 JSON (``ujson.dumps(...,
ensure_ascii=False)`` in luna-handlers); msgpack bodies are accepted too.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson


class PoisonMessage(ValueError):
    """A bus message that cannot be delivered: counted, logged once, skipped."""


class BadJson(ValueError):
    """An HTTP body that is not strict JSON (RFC 8259); ``path`` names the value when known."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


# orjson's own bounds, which every frame must fit: it parses at most 1024 nested levels and
# serialises at most 254, so a body or bus message deeper than 254 could be parsed but never sent.
MAX_DEPTH = 254
# A refused body is parsed again leniently to name the offending value; above this size it is
# simply "not JSON" (12002), so a large hostile body costs no more than one orjson attempt.
EXPLAIN_MAX_BYTES = 1024 * 1024


def loads(data: bytes | str) -> Any:
    """Parse a bus message: strict JSON (orjson), or msgpack for binary bodies.

    No lenient fallback: NaN/Infinity literals, lone surrogates and nesting beyond orjson's
    depth are poison here, because a lenient parser would accept values no frame can carry.
    Integers beyond 64 bits become the nearest double, as RFC 8259 section 6 allows.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    head = data[:1]
    if head in (b"{", b"[", b" ", b"\n", b"\r", b"\t"):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PoisonMessage(f"invalid JSON: {exc}") from None
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise PoisonMessage(f"neither JSON nor msgpack: {type(exc).__name__}") from None


def loads_json(data: bytes) -> Any:
    """Strict JSON for HTTP bodies (no msgpack); :class:`BadJson` when orjson refuses it.

    On refusal only, the lenient stdlib parser looks for the reason a client can act on
    (NaN/Infinity, a lone surrogate, too deep) and where it is; the fast path pays nothing.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise BadJson(f"nesting deeper than {MAX_DEPTH} levels", "") from None
        raise _explain(data) or BadJson(str(exc)) from None


def _explain(data: bytes) -> BadJson | None:
    if len(data) > EXPLAIN_MAX_BYTES:  # the lenient parse and walk must not stall the loop
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:  # iterative: the value may be nested close to the recursion limit
        node, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return BadJson("NaN and Infinity are not JSON numbers", _dotted(path))
        if isinstance(node, str) and not _is_utf8(node):
            return BadJson("string holds a lone UTF-16 surrogate", _dotted(path))
        if isinstance(node, dict):
            for key, item in node.items():
                if not _is_utf8(key):
                    return BadJson("key holds a lone UTF-16 surrogate", _dotted(path))
                stack.append((item, (*path, key)))
        elif isinstance(node, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(node))
    return None


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, strict RFC 8259: orjson writes NaN/Infinity (msgpack floats) as null.

    There is deliberately no lenient fallback (the stdlib writes NaN and recurses without
    bound); what orjson cannot write is poison.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        raise PoisonMessage(f"not serialisable as JSON: {exc}") from None


@dataclass(slots=True)
class FaceMessage:
    """One producer message on ``{prefix}:{account_id}``: a batch of events of one request."""

    handler_id: Any
    request_id: Any
    events: list[dict[str, Any]]
    create_time: Any
    end_time: Any

    def envelope(self, event: dict[str, Any]) -> bytes:
        return dumps(
            {
                "event": event,
                "handler_id": self.handler_id,
                "event-create-time": self.create_time,
                "event-end-time": self.end_time,
                "Luna-Request-id": self.request_id,
            }
        )


@dataclass(slots=True)
class GeneralMessage:
    """One general event on ``{prefix}-general-events``."""

    event: dict[str, Any]
    event_type: Any
    account_id: Any
    create_time: Any
    end_time: Any

    def envelope(self) -> bytes:
        return dumps(
            {
                "event": self.event,
                "event_type": self.event_type,
                "account_id": self.account_id,
                "event-create-time": self.create_time,
                "event-end-time": self.end_time,
            }
        )


def decode_face(data: bytes) -> FaceMessage:
    msg = loads(data)
    if not isinstance(msg, dict):
        raise PoisonMessage("face message is not an object")
    events = msg.get("events")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise PoisonMessage("face message 'events' is not a list of objects")
    return FaceMessage(
        handler_id=msg.get("handler_id"),
        request_id=msg.get("Luna-Request-Id"),
        events=events,
        create_time=msg.get("event_create_time"),
        end_time=msg.get("event_end_time"),
    )


def decode_general(data: bytes) -> GeneralMessage:
    msg = loads(data)
    if not isinstance(msg, dict):
        raise PoisonMessage("general message is not an object")
    event = msg.get("event")
    if not isinstance(event, dict):
        raise PoisonMessage("general message 'event' is not an object")
    return GeneralMessage(
        event=event,
        event_type=msg.get("event_type"),
        account_id=msg.get("account_id"),
        create_time=msg.get("event_create_time"),
        end_time=msg.get("event_end_time"),
    )


def encode_face(
    events: list[dict[str, Any]],
    handler_id: Any,
    request_id: str,
    create_time: Any,
    end_time: Any,
) -> bytes:
    """The luna-handlers ``msg_to_luna_sender`` format (spec Part 2 §4.2)."""
    return dumps(
        {
            "handler_id": handler_id,
            "Luna-Request-Id": request_id,
            "events": events,
            "event_create_time": create_time,
            "event_end_time": end_time,
        }
    )


def encode_general(
    event: dict[str, Any], event_type: str, account_id: Any, create_time: Any, end_time: Any
) -> bytes:
    return dumps(
        {
            "event": event,
            "event_type": event_type,
            "account_id": account_id,
            "event_create_time": create_time,
            "event_end_time": end_time,
        }
    )


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed RFC 6455 text frame: servers never mask, so one frame fits all."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return bytes((0x88, len(body))) + body
