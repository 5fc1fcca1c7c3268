"""The replay/live seam (delivery/recovery.py): no gap, no duplicate, whatever the interleaving."""

from __future__ import annotations

import random
from collections.abc import Iterable

import orjson

from luna_sender.bus.history import Entry, MemoryHistory, Offset, Replay
from luna_sender.delivery.recovery import Recording, Seam, recovery_payload, with_offset

EPOCH = "abcdef012345"


def off(seq: int, part: int | None = None) -> Offset:
    return Offset(EPOCH, 1000 + seq, seq, part)


def env(name: str) -> bytes:
    return orjson.dumps({"event": name})


def render_all(entry: Entry) -> Iterable[tuple[int | None, bytes]]:
    return [(None, entry.data)]


def names(payloads: list[bytes]) -> list[object]:
    return [orjson.loads(p).get("event", orjson.loads(p).get("recovery")) for p in payloads]


def test_with_offset_adds_the_last_key() -> None:
    assert orjson.loads(with_offset(env("x"), "ab.1-2.0")) == {"event": "x", "offset": "ab.1-2.0"}
    assert recovery_payload(False, 0) == b'{"recovery":{"recovered":false,"replayed":0}}'


def test_held_live_events_after_the_replay_come_once_in_order() -> None:
    seam = Seam(str(off(2)))
    # live events 4..7 arrive while the history is read; the read saw up to 5
    for seq in (4, 5, 6, 7):
        assert seam.hold(off(seq), with_offset(env(f"m{seq}"), str(off(seq)))) is None
    replay = Replay(True, [Entry(off(s), env(f"m{s}")) for s in (3, 4, 5)])
    out = seam.finish(replay, render_all)
    assert names(out) == [{"recovered": True, "replayed": 3}, "m3", "m4", "m5", "m6", "m7"]
    assert orjson.loads(out[1])["offset"] == str(off(3))
    assert seam.outcome == "recovered" and seam.replayed == 3
    assert seam.hold(off(8), b"live") == b"live"  # live from now on


def test_replay_uses_the_sockets_filter_and_parts() -> None:
    seam = Seam(str(off(3, 0)))  # event 0 of message 3 was delivered, then the cut

    def render(entry: Entry) -> Iterable[tuple[int | None, bytes]]:
        # message 3 has events 0,1,2 of which 1 does not match; message 4 matches nothing
        if entry.offset.seq == 3:
            return [(0, env("3.0")), (2, env("3.2"))]
        return [] if entry.offset.seq == 4 else [(0, env(f"{entry.offset.seq}.0"))]

    seam.hold(off(5, 0), b'{"event":"5.0"}')  # covered by the replay: dropped
    replay = Replay(True, [Entry(off(s), b"") for s in (3, 4, 5)])
    out = seam.finish(replay, render)
    assert names(out) == [{"recovered": True, "replayed": 2}, "3.2", "5.0"]
    assert orjson.loads(out[1])["offset"] == str(off(3, 2))


def test_not_recovered_sends_everything_held() -> None:
    for since, replay in (("garbage", None), (str(off(1)), None), (str(off(1)), Replay(False, []))):
        seam = Seam(since)
        seam.hold(off(9), b'{"event":"a"}')
        seam.hold(None, b'{"event":"b"}')
        out = seam.finish(replay, render_all)
        assert names(out) == [{"recovered": False, "replayed": 0}, "a", "b"]
        assert seam.outcome == "not_recovered"


def test_events_the_history_could_not_name_are_kept() -> None:
    seam = Seam(str(off(1)))
    seam.hold(None, b'{"event":"no-offset"}')
    seam.hold(Offset("0" * 12, 1, 1), b'{"event":"new-epoch"}')
    seam.hold(off(1), b'{"event":"seen"}')
    out = seam.finish(Replay(True, []), render_all)
    assert names(out) == [{"recovered": True, "replayed": 0}, "no-offset", "new-epoch"]


def test_garbage_render_is_skipped() -> None:
    def render(entry: Entry) -> Iterable[tuple[int | None, bytes]]:
        raise ValueError("poison")

    seam = Seam(str(off(1)))
    assert names(seam.finish(Replay(True, [Entry(off(2), b"")]), render)) == [
        {"recovered": True, "replayed": 0}
    ]


async def test_every_interleaving_delivers_each_event_once() -> None:
    """A bus of 40 messages; the client had the first k; it registers at r and the history is
    read at h (k < r <= h): whatever the points, it gets k+1.. exactly once, in order."""
    rng = random.Random(18)
    for _ in range(300):
        history = MemoryHistory()
        channel = "c"
        offsets = [await history.append(channel, env(f"m{i}")) for i in range(40)]
        k = rng.randrange(0, 40)
        r = rng.randrange(k + 1, 41)
        h = rng.randrange(r, 41)
        seam = Seam(str(offsets[k]))
        got: list[bytes] = []
        # events r..h-1 reach the registered socket before the read; the read sees up to h-1
        for i in range(r, h):
            out = seam.hold(offsets[i], env(f"m{i}"))
            assert out is None
        replay = await history.since(channel, offsets[k])
        visible = Replay(replay.recovered, [e for e in replay.entries if e.offset.seq <= h])
        got.extend(seam.finish(visible, render_all)[1:])
        for i in range(h, 40):  # live after the seam
            passed = seam.hold(offsets[i], env(f"m{i}"))
            assert passed is not None
            got.append(passed)
        expected = [f"m{i}" for i in range(k + 1, 40)]
        assert names(got) == expected, (k, r, h)


def test_recording_lingers_for_the_window_after_the_last_recovering_socket() -> None:
    rec = Recording(linger=300)
    assert not rec.records("a", 0)
    rec.joined("a")
    rec.joined("a")
    rec.left("a", 10)
    assert rec.records("a", 10) and rec.expired(10_000) == []  # one socket still there
    rec.left("a", 20)
    assert rec.records("a", 319) and rec.wanted("a", 319)
    assert not rec.records("a", 320)
    rec.joined("b")
    rec.left("b", 0)
    rec.joined("b")  # came back within the window: no longer lingering
    assert rec.expired(10_000) == ["a"] and rec.expired(10_000) == []
    assert rec.records("b", 10_000)


def test_not_recovered_still_drops_what_the_client_had() -> None:
    """``false``, and this instance delivers late the very event the client resumed from (it
    was stalled while another served it): an outside pass saw it come first, 10 of 10. Events
    at or before ``since`` are dropped, held or live; the rest of its message and later ones
    are not."""
    seam = Seam(str(off(5, 1)))  # events 0 and 1 of message 5 were delivered
    seam.hold(off(4), b'{"event":"4"}')
    seam.hold(off(5, 1), b'{"event":"5.1"}')
    seam.hold(off(5, 2), b'{"event":"5.2"}')
    out = seam.finish(Replay(False, []), render_all)
    assert names(out) == [{"recovered": False, "replayed": 0}, "5.2"]
    assert seam.hold(off(5, 0), b"late") is None  # still before, live
    assert seam.hold(off(6), b"next") == b"next"
    assert seam.transparent  # past it: the seam lets everything through untouched
    other = Seam(str(off(5)))  # another epoch (history lost): nothing is the client's
    other.finish(None, render_all)
    assert other.hold(Offset("0" * 12, 1, 1), b"new") == b"new"


def test_an_offset_from_before_a_snapshot_restore_hides_nothing_new() -> None:
    """Redis restored from an older snapshot: the sequence runs again from an older value, at a
    later time. The client's offset (sequence 9) is not the history's; new events with lower
    sequences are new to the client and go out."""
    seam = Seam(str(Offset(EPOCH, 5000, 9)))
    seam.finish(Replay(False, []), render_all)
    assert seam.hold(Offset(EPOCH, 7000, 4), b"after the restore") == b"after the restore"
