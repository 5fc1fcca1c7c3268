"""The one match path: bus bytes -> decoded message -> one subject per event -> filters ->
envelope.

The hub (many filter groups, reached through an equality index) and the event forwarder plugin
(one filter) both select through here, so a socket and a webhook given the same filter see the
same events in the same envelopes, and a filter that raises costs both the same: that event is
not a match, the rest of the message still is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from luna_sender import wire
from luna_sender.filters.base import CompiledFilter

log = logging.getLogger("luna_sender.hub")

Message = wire.FaceMessage | wire.GeneralMessage


class Filtered(Protocol):
    """Anything selected by a compiled filter: a hub group, the forwarder's one filter."""

    @property
    def filter(self) -> CompiledFilter: ...


F = TypeVar("F", bound=Filtered)


def decode(kind: str, data: bytes, reads: int = wire.READS_ALL) -> Message:
    """A bus message of ``kind`` ("face" | "general") for filters that read ``reads`` of a face
    event (:func:`reads_of`; only the hub's live read of an unrecorded channel may ask for less
    than all, see :func:`wire.decode_face`); :class:`wire.PoisonMessage` if it is not one."""
    if kind == "face":
        return wire.decode_face(data, reads)
    return wire.decode_general(data)


def select(
    msg: Message, candidates: Callable[[Any], Iterable[F]], reads: int = wire.READS_ALL
) -> Iterator[tuple[bytes, list[F]]]:
    """Each event of ``msg`` some candidate accepts: its envelope, and the candidates that did.

    A face message is a batch whose events are matched one by one, each as the subject
    ``(event, message)``, the event decoded only as far as ``reads`` says the candidates' filters
    read (:func:`reads_of`); a general message is one event and its own subject. An envelope is
    built only for an event something matched. Decoding may raise :class:`wire.PoisonMessage`
    mid-iteration.
    """
    if isinstance(msg, wire.FaceMessage):
        for i, event in enumerate(msg.subjects(reads)):
            subject = (event, msg)
            matched = []
            for c in candidates(subject):  # a loop: a comprehension is a call per event on 3.11
                try:  # safe_match inline: a call less per candidate and event
                    if c.filter.match(subject):
                        matched.append(c)
                except Exception:  # a filter bug on an odd event must not stop the fan-out
                    log.debug("filter raised on an event; treated as no match", exc_info=True)
            if matched:
                yield msg.envelope(i), matched
    else:
        matched = [c for c in candidates(msg) if safe_match(c.filter, msg)]  # one per message
        if matched:
            yield msg.envelope(), matched


def indexed(
    msg: Message, candidates: Callable[[Any], Iterable[F]]
) -> Iterator[tuple[int | None, bytes, list[F]]]:
    """:func:`select` with each event's index in its message (a recovery offset's ``part``),
    for the recorder and replays, which read every event whole (:func:`wire.decode_face`)."""
    if isinstance(msg, wire.FaceMessage):
        for part, event in enumerate(msg.subjects(wire.READS_ALL)):
            subject = (event, msg)
            matched = [c for c in candidates(subject) if safe_match(c.filter, subject)]
            if matched:
                yield part, msg.envelope(part), matched
    else:
        matched = [c for c in candidates(msg) if safe_match(c.filter, msg)]
        if matched:
            yield None, msg.envelope(), matched


def reads_of(compiled: CompiledFilter) -> int:
    """How much of a face event ``compiled`` reads: nothing, only :data:`wire.HEAD_KEYS`, or
    all of it (a filter that does not say what it reads is given everything)."""
    keys = compiled.event_keys
    if keys is None or not keys <= wire.HEAD_KEYS:
        return wire.READS_ALL
    # handler_id's index reads the message; the others read the event's head
    return wire.READS_HEAD if keys or compiled.index.keys() - {"handler_id"} else wire.READS_NOTHING


def only(compiled: CompiledFilter) -> Callable[[Any], Iterable[Filtered]]:
    """Candidates for one filter alone."""
    single = (_Only(compiled),)
    return lambda _subject: single


def envelopes(msg: Message, compiled: CompiledFilter) -> list[bytes]:
    """The envelopes of the events of ``msg`` that one filter accepts (the forwarder's: its
    messages are read whole, :func:`decode`'s default)."""
    only = (_Only(compiled),)
    return [envelope for envelope, _ in select(msg, lambda _subject: only)]


@dataclass(frozen=True, slots=True)
class _Only:
    filter: CompiledFilter


def safe_match(compiled: CompiledFilter, subject: Any) -> bool:
    try:
        return compiled.match(subject)
    except Exception:  # a filter bug on an odd event must not stop the fan-out
        log.debug("filter raised on an event; treated as no match", exc_info=True)
        return False
