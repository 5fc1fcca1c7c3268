"""A recorded message rendered for recovering sockets: live with its offset, or replayed.

Both read the message with orjson's fixed bounds (wire.decode_face), so a replay renders
exactly what the live path sent (docs/compatibility.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from luna_sender import wire
from luna_sender.bus.history import Entry, Offset
from luna_sender.delivery import matching
from luna_sender.delivery.frames import text_frame
from luna_sender.delivery.recovery import with_offset

if TYPE_CHECKING:
    from luna_sender.delivery.connection import Connection
    from luna_sender.delivery.groups import GroupSet


def render_for(
    conn: Connection, kind: str
) -> Callable[[Entry], Iterator[tuple[int | None, bytes]]]:
    """The seam's renderer for one socket: a recorded message -> its matching events."""
    candidates = matching.only(conn.filter)

    def render(entry: Entry) -> Iterator[tuple[int | None, bytes]]:
        try:
            msg = matching.decode(kind, entry.data)  # orjson's fixed bounds (wire.decode_face)
            for part, envelope, _ in matching.indexed(msg, candidates):
                yield part, envelope
        except wire.PoisonMessage:  # as live: the events before the bad one went out
            return

    return render


def write_recorded(
    groups: GroupSet, kind: str, data: bytes, offset: Offset | None, stale: bool = False
) -> tuple[int, object]:
    """One recorded message to its recovering sockets: each envelope carries its offset, and a
    resuming socket's seam holds (or drops) what its replay will cover. A ``stale`` offset (at
    or before one the channel's sockets already got: Recorder.forward) goes out unnamed, yet
    still tells the seam what is covered: a late copy of an event a socket had before its
    resume must not come again. Returns the frames written and the producer's create time;
    raises wire.PoisonMessage."""
    sent = 0
    key = hash(data)
    msg = matching.decode(kind, data)  # orjson's fixed bounds, as a replay's (wire.decode_face)
    for part, envelope, matched in matching.indexed(msg, groups.index.candidates):
        named = None if offset is None else (offset if part is None else offset.at(part))
        payload = envelope if named is None or stale else with_offset(envelope, str(named))
        frame = text_frame(payload)
        for group in matched:
            for conn in group.conns:
                seam = conn.seam
                if seam is None or seam.transparent:
                    sent += conn.send(frame)
                    continue
                passed = seam.hold(named, payload, key)
                if passed is not None:
                    sent += conn.send(text_frame(passed))
    return sent, msg.create_time
