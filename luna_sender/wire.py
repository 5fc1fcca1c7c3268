"""Message formats: what producers put on the bus, and the envelopes pushed to clients.

Every incoming bus message is decoded once per process and every outgoing envelope is built
once, then framed once as a websocket text frame (delivery/frames.py); the same bytes are written
to every matching socket (see hub.py). Producers publish UTF-8 JSON (``ujson.dumps(...,
ensure_ascii=False)`` in luna-handlers); msgpack bodies are accepted too. A JSON face message is
validated whole in one strict pass, and its events are forwarded as the producer's bytes and
decoded only as far as a filter reads them (:class:`FaceMessage`): on the platform's load that
cuts what a message costs to decode, match and frame by about a quarter (docs/performance.md,
Round 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import msgpack
import msgspec
import orjson


class PoisonMessage(ValueError):
    """A bus message that cannot be delivered: counted, logged once, skipped."""


# orjson's own bounds, which every frame must fit: it parses at most 1024 nested levels and
# serialises at most 254, so a body or bus message deeper than 254 could be parsed but never sent.
MAX_DEPTH = 254
_JSON_STARTS = (b"{", b"[", b" ", b"\n", b"\r", b"\t")  # else msgpack


def loads(data: bytes | str) -> Any:
    """Parse a bus message: strict JSON (orjson), or msgpack for binary bodies.

    No lenient fallback: NaN/Infinity literals, lone surrogates and nesting beyond orjson's
    depth are poison here, because a lenient parser would accept values no frame can carry.
    Integers beyond 64 bits become the nearest double, as RFC 8259 section 6 allows.

    msgpack is brought to exactly what JSON can say, before any filter sees it: map keys must be
    strings (an int key ``1`` beside ``"1"`` would write a frame with a duplicate key), and a
    round trip through orjson turns NaN/Infinity into the null every frame carries, so filters
    judge the value subscribers receive. Bytes and ext types are poison.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data[:1] in _JSON_STARTS:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PoisonMessage(f"invalid JSON: {exc}") from None
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise PoisonMessage(f"neither JSON nor msgpack: {type(exc).__name__}") from None
    try:
        # str keys only (strict_map_key still allows bytes); the rest fails in dumps
        return orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError as exc:
        raise PoisonMessage(f"msgpack value JSON cannot carry: {exc}") from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, strict RFC 8259: orjson writes NaN/Infinity (msgpack floats) as null.

    There is deliberately no lenient fallback (the stdlib writes NaN and recurses without
    bound); what orjson cannot write is poison.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        raise PoisonMessage(f"not serialisable as JSON: {exc}") from None


def _envelope(value: dict[str, Any]) -> bytes:
    """:func:`dumps` for an envelope, without ``OPT_NON_STR_KEYS`` (~1 us of 3 on a 3 KB event).

    Every key in an envelope is a str: its own keys are literals and the event came from
    :func:`loads` (orjson keys are str; msgpack keys were checked by a round trip through it),
    so the option changes nothing in the bytes, and what still fails (depth) fails alike.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise PoisonMessage(f"not serialisable as JSON: {exc}") from None


# Top-level event keys read without decoding the rest of the event: the small values the
# sources/stream_ids/tags/user_data/location filters and the hub's index read. The rest
# (detections, attributes, matches, ``meta`` of any size) only for a filter that reads it.
HEAD_KEYS = frozenset({"source", "stream_id", "tags", "user_data", "location"})


class _Head(TypedDict, total=False):
    source: Any
    stream_id: Any
    tags: Any
    user_data: Any
    location: Any


class _FaceJson(msgspec.Struct):
    """The producer's face message with each event left as its bytes (validated JSON)."""

    events: list[msgspec.Raw]
    handler_id: Any = None
    request_id: Any = msgspec.field(default=None, name="Luna-Request-Id")
    create_time: Any = msgspec.field(default=None, name="event_create_time")
    end_time: Any = msgspec.field(default=None, name="event_end_time")


_FACE_DECODER = msgspec.json.Decoder(_FaceJson)
_HEAD_DECODER = msgspec.json.Decoder(_Head)
_EVENT_OPEN = b'{"event":'
# What a subject's event is when no filter reads any field of it (no decoding at all).
_NOTHING: dict[str, Any] = {}


@dataclass(slots=True)
class FaceMessage:
    """One producer message on ``{prefix}:{account_id}``: a batch of events of one request.

    A JSON message keeps each event as the producer's bytes (``raw``), which the envelope
    carries unchanged (spec Part 2: the Sender forwards the event, it does not re-serialise
    it); a filter gets the event decoded only as far as it reads (:meth:`subjects`).
    msgpack messages hold decoded dicts and are serialised as before.
    """

    handler_id: Any
    request_id: Any
    events: list[Any]
    create_time: Any
    end_time: Any
    raw: bool = False
    _tail: bytes | None = None

    def subjects(self, reads: int) -> list[dict[str, Any]]:
        """The events as filters see them: decoded as far as ``reads`` says (:data:`READS_NOTHING`,
        :data:`READS_HEAD`: only :data:`HEAD_KEYS`, :data:`READS_ALL`)."""
        events = self.events
        if not self.raw:
            return events
        if reads == READS_NOTHING:
            return [_NOTHING] * len(events)
        try:  # after the strict parse only a number beyond a double (1e999) fails here, poison
            if reads == READS_HEAD:  # as in 0.1 (unread, it goes out as written), or a head
                return [_HEAD_DECODER.decode(event) for event in events]  # type: ignore[misc]
            return [orjson.loads(bytes(event)) for event in events]  # nested to msgspec's bound
        except (msgspec.MsgspecError, orjson.JSONDecodeError, RecursionError) as exc:
            raise PoisonMessage(f"invalid JSON: {exc}") from None

    def envelope(self, i: int) -> bytes:
        if self._tail is not None:  # raw, and an earlier event of the message built the rest
            return b"".join((_EVENT_OPEN, self.events[i], self._tail))
        envelope = {
            "event": self.events[i],
            "handler_id": self.handler_id,
            "event-create-time": self.create_time,
            "event-end-time": self.end_time,
            "Luna-Request-id": self.request_id,
        }
        if not self.raw:  # decoded events: one serialisation of the whole envelope, as in 0.1
            return _envelope(envelope)
        del envelope["event"]  # the keys after the event: the same for every event of the message
        self._tail = b"," + _envelope(envelope)[1:]
        return b"".join((_EVENT_OPEN, self.events[i], self._tail))


READS_NOTHING, READS_HEAD, READS_ALL = 0, 1, 2


@dataclass(slots=True)
class GeneralMessage:
    """One general event on ``{prefix}-general-events``."""

    event: dict[str, Any]
    event_type: Any
    account_id: Any
    create_time: Any
    end_time: Any

    def envelope(self) -> bytes:
        return _envelope(
            {
                "event": self.event,
                "event_type": self.event_type,
                "account_id": self.account_id,
                "event-create-time": self.create_time,
                "event-end-time": self.end_time,
            }
        )


def _text(msg: dict[str, Any], key: str, kind: str) -> str | None:
    """An envelope field: a string, null or absent (None); any other type is poison.

    The producers write strings (account_id may be null) and a missing optional key is
    tolerated (spec Part 1); a number or an object there would reach every subscriber as-is.
    """
    value = msg.get(key)
    if value is None or type(value) is str:
        return value
    raise PoisonMessage(f"{kind} message '{key}' is {type(value).__name__}, not a string")


def decode_face(data: bytes, reads: int = READS_ALL) -> FaceMessage:
    """A face message for filters that read ``reads`` of each event: where one reads all of it,
    orjson's one pass over the whole message is cheaper than finding the events' bytes first,
    and the events are serialised again (as in 0.1); otherwise they are forwarded as written.

    Only the hub's live read of a channel nobody records asks for less than all: msgspec
    bounds nesting by the recursion budget left where it runs, so two reads of one message at
    different stack depths can disagree on an event nested ~980 levels deep. The recorder, a
    replay and the forwarder read a message again elsewhere, so they, and the live read of a
    recorded channel, take orjson's bounds, which do not move (an outside pass saw such events
    reach plain sockets and silently miss a recovering socket and its replay)."""
    if reads != READS_ALL and data[:1] in _JSON_STARTS:
        try:
            return _decode_face_json(data)
        except RecursionError:  # past msgspec's bound (which moves with the stack), orjson's:
            pass  # a key no frame carries may nest deeper than an event may (an outside pass)
    msg = loads(data)
    if not isinstance(msg, dict):
        raise PoisonMessage("face message is not an object")
    events = msg.get("events")
    if not isinstance(events, list):
        raise PoisonMessage("face message 'events' is not a list of objects")
    for event in events:  # a loop, not all(genexpr): this runs once per bus message
        if not isinstance(event, dict):
            raise PoisonMessage("face message 'events' is not a list of objects")
    return _checked(
        FaceMessage(
            msg.get("handler_id"),
            msg.get("Luna-Request-Id"),
            events,
            msg.get("event_create_time"),
            msg.get("event_end_time"),
        )
    )


def _decode_face_json(data: bytes) -> FaceMessage:
    """One pass that validates the whole message as strict JSON and finds each event's bytes;
    the events themselves are decoded later, and only as far as a filter reads them."""
    try:
        if not data.isascii():  # msgspec does not check the UTF-8 of what it skips: a text
            data.decode()  # frame must be UTF-8, or a client closes on it (1007)
        msg = _FACE_DECODER.decode(data)
    except UnicodeDecodeError:
        raise PoisonMessage("invalid JSON: not UTF-8") from None
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "`$.events" in text or "field `events`" in text:
            raise PoisonMessage("face message 'events' is not a list of objects") from None
        if text.startswith("Expected `object`") and " - at `" not in text:
            raise PoisonMessage("face message is not an object") from None
        raise PoisonMessage(f"face message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PoisonMessage(f"invalid JSON: {exc}") from None
    events = msg.events  # msgspec.Raw: views of ``data``, not copies (a copy cost as much as
    for event in events:  # the decode): the envelope joins them, orjson gets bytes
        if memoryview(event)[0] != 0x7B:  # "{"
            raise PoisonMessage("face message 'events' is not a list of objects")
    return _checked(
        FaceMessage(msg.handler_id, msg.request_id, events, msg.create_time, msg.end_time, True)
    )


def _checked(msg: FaceMessage) -> FaceMessage:
    """The envelope fields are strings or null (absent); _text names the first bad one, in
    the order it always did."""
    if not (
        (msg.handler_id is None or type(msg.handler_id) is str)
        and (msg.request_id is None or type(msg.request_id) is str)
        and (msg.create_time is None or type(msg.create_time) is str)
        and (msg.end_time is None or type(msg.end_time) is str)
    ):
        keys = ("handler_id", "Luna-Request-Id", "event_create_time", "event_end_time")
        values = (msg.handler_id, msg.request_id, msg.create_time, msg.end_time)
        for key in keys:
            _text(dict(zip(keys, values, strict=True)), key, "face")
    return msg


def decode_general(data: bytes) -> GeneralMessage:
    msg = loads(data)
    if not isinstance(msg, dict):
        raise PoisonMessage("general message is not an object")
    event = msg.get("event")
    if not isinstance(event, dict):
        raise PoisonMessage("general message 'event' is not an object")
    return GeneralMessage(
        event=event,
        event_type=_text(msg, "event_type", "general"),
        account_id=_text(msg, "account_id", "general"),
        create_time=_text(msg, "event_create_time", "general"),
        end_time=_text(msg, "event_end_time", "general"),
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
