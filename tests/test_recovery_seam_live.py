"""The seam after it went live (#18 phase 2): late live copies of replayed events are dropped."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from luna_sender.bus.history import Entry, Offset, Replay
from luna_sender.delivery.recovery import Seam

EPOCH = "abcdef012345"


def off(seq: int) -> Offset:
    return Offset(EPOCH, 1000 + seq, seq)


def render_all(entry: Entry) -> Iterable[tuple[int | None, bytes]]:
    return [(None, entry.data)]


def data(n: int) -> bytes:
    return orjson.dumps({"event": n})


def test_late_copies_are_dropped_until_the_first_event_past_the_replay() -> None:
    seam = Seam(str(off(1)))
    replay = Replay(True, [Entry(off(n), data(n)) for n in (2, 3)])
    written = seam.finish(replay, render_all)
    assert len(written) == 3 and seam.replayed == 2 and not seam.transparent
    assert seam.hold(off(2), b"2") is None  # its append answered after the read
    assert seam.hold(None, b"3", hash(data(3))) is None  # no offset, same message
    assert seam.hold(off(4), b"4") == b"4"
    assert seam.transparent
    assert seam.hold(off(3), b"3") == b"3"  # past the seam nothing is judged any more


def test_held_event_without_offset_is_dropped_when_the_replay_had_it() -> None:
    seam = Seam(str(off(1)))
    assert seam.hold(None, b"dup", hash(data(2))) is None
    assert seam.hold(None, b"new", hash(data(9))) is None
    written = seam.finish(Replay(True, [Entry(off(2), data(2))]), render_all)
    assert len(written) == 3 and written[2] == b"new"
    assert orjson.loads(written[1]) == {"event": 2, "offset": str(off(2))}


def test_not_recovered_is_transparent_at_once() -> None:
    seam = Seam("garbage")
    assert seam.hold(off(1), b"1") is None
    assert seam.finish(None, render_all)[1:] == [b"1"]
    assert seam.transparent and seam.hold(off(1), b"1") == b"1"
