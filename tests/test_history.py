"""Event history (bus/history.py, bus/redis_history.py): the same contract, memory and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from luna_sender.bus import presence
from luna_sender.bus.base import BusError
from luna_sender.bus.history import History, MemoryHistory, Offset, Window, parse
from luna_sender.bus.redis_history import RedisHistory

from .helpers import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def make(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Callable[..., History]]:
    made: list[History] = []
    prefix = f"t-{uuid.uuid4().hex[:8]}"

    def factory(**window: Any) -> History:
        win = Window(**window)
        history: History
        if request.param == "memory":
            history = MemoryHistory(win)
        else:
            history = RedisHistory(redis_server.url, win, prefix=prefix)
        made.append(history)
        return history

    yield factory
    for history in made:
        await history.close()


def ch() -> str:
    return f"luna:{uuid.uuid4()}"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x",
        "abc",
        "0a.1-0",
        "zz.1-1",
        "0a.1-1.1.1",
        "0a.-1-1",
        "0a.1-" + "9" * 30,
        # Not as the service writes them: another spelling of an offset names no event of ours
        # (an outside pass had ".00" and a leading zero answered recovered: true).
        "0a.1-1.00",
        "0a.01-1",
        "0a.1-01.0",
        "0A.1-1",
        "💥",
        None,
        7,
    ],
)
def test_parse_answers_unknown_for_garbage(token: Any) -> None:
    assert parse(token) is None


def test_parse_round_trips() -> None:
    for offset in (Offset("0a1b", 17, 3), Offset("ff", 0, 1, 0), Offset("ab" * 6, 10**12, 5, 12)):
        assert parse(str(offset)) == offset


async def test_offsets_increase_and_since_is_strictly_after(make: Callable[..., History]) -> None:
    history = make()
    c = ch()
    offsets = [await history.append(c, f"m{i}".encode()) for i in range(5)]
    assert [o.seq for o in offsets] == [1, 2, 3, 4, 5]
    assert len({o.epoch for o in offsets}) == 1 and offsets == sorted(offsets)
    replay = await history.since(c, offsets[1])
    assert replay.recovered
    assert [e.data for e in replay.entries] == [b"m2", b"m3", b"m4"]
    assert [e.offset for e in replay.entries] == offsets[2:]
    assert await history.since(c, offsets[-1]) == (True, [])
    # an offset inside a message (a face event's part) starts from that message
    inside = await history.since(c, offsets[3].at(0))
    assert [e.data for e in inside.entries] == [b"m3", b"m4"]
    assert await history.size() >= 5


async def test_unknown_offsets_are_not_recovered(make: Callable[..., History]) -> None:
    history = make()
    c, other = ch(), ch()
    first = await history.append(c, b"a")
    await history.append(other, b"b")
    assert not (await history.since(c, Offset("0" * 12, first.ms, 1))).recovered  # other epoch
    assert not (await history.since(c, Offset(first.epoch, first.ms, 9))).recovered  # future
    assert not (await history.since(c, Offset(first.epoch, first.ms + 1, 1))).recovered  # wrong id
    assert not (await history.since(ch(), first)).recovered  # channel never recorded
    assert not (await history.since(other, first)).recovered  # another channel's offset


async def test_trimmed_window_is_exact(make: Callable[..., History]) -> None:
    history = make(size=3)
    c = ch()
    offsets = [await history.append(c, f"m{i}".encode()) for i in range(6)]
    # held: m3 m4 m5 (seq 4..6). seq 3 still has everything after it; seq 2 lost m3's predecessor
    ok = await history.since(c, offsets[2])
    assert ok.recovered and [e.data for e in ok.entries] == [b"m3", b"m4", b"m5"]
    assert not (await history.since(c, offsets[1])).recovered
    # inside a trimmed message: its remaining parts are gone
    assert not (await history.since(c, offsets[2].at(0))).recovered
    assert (await history.since(c, offsets[3].at(1))).entries[0].data == b"m3"


async def test_byte_cap_trims_and_keeps_the_newest(make: Callable[..., History]) -> None:
    history = make(max_bytes=25)
    c = ch()
    offsets = [await history.append(c, bytes([65 + i]) * 10) for i in range(4)]
    replay = await history.since(c, offsets[1])
    assert replay.recovered and [len(e.data) for e in replay.entries] == [10, 10]
    assert not (await history.since(c, offsets[0])).recovered
    big = await history.append(c, b"z" * 100)  # larger than the cap alone: still named, held
    assert (await history.since(c, offsets[3])).entries == [(big, b"z" * 100)]


async def test_ttl_trims(make: Callable[..., History], request: pytest.FixtureRequest) -> None:
    history = make(ttl=0.3)
    c = ch()
    old = await history.append(c, b"old")
    await asyncio.sleep(0.4)
    new = await history.append(c, b"new")
    assert not (await history.since(c, Offset(old.epoch, old.ms, old.seq, 0))).recovered
    replay = await history.since(c, old)  # seq 1 -> the next (seq 2) is still held
    assert replay.entries == [(new, b"new")]
    await asyncio.sleep(0.4)  # everything expired, the counter survives: nothing was missed
    assert await history.since(c, new) == (True, [])
    assert not (await history.since(c, old)).recovered
    await asyncio.sleep(0.3)  # idle past 2 x ttl: the Redis stream key itself is gone
    assert await history.since(c, new) == (True, [])
    later = await history.append(c, b"later")
    assert (later.epoch, later.seq) == (new.epoch, new.seq + 1)
    assert (await history.since(c, new)).entries == [(later, b"later")]


async def test_dedupe_window(redis_server: RedisServer) -> None:
    history = RedisHistory(redis_server.url, Window(dedupe=0.3), prefix="t")
    try:
        c = ch()
        a = await history.append(c, b"same")
        assert await history.append(c, b"same") == a  # byte-identical inside the window: once
        await asyncio.sleep(0.4)
        b = await history.append(c, b"same")
        assert b.seq == a.seq + 1
    finally:
        await history.close()
    memory = MemoryHistory()  # one process receives each message once: nothing to dedupe
    assert (await memory.append(c, b"same")).seq + 1 == (await memory.append(c, b"same")).seq


async def test_redis_down_is_a_bus_error() -> None:
    server = RedisServer()
    server.start()
    history = RedisHistory(server.url, prefix="t")
    try:
        c = ch()
        offset = await history.append(c, b"a")
        server.kill()
        with pytest.raises(BusError) as caught:
            await history.append(c, b"b")
        assert caught.value.public == "history unavailable"
        with pytest.raises(BusError):
            await history.since(c, offset)
        with pytest.raises(BusError):
            await history.size()
    finally:
        await history.close()
        server.close()


async def test_redis_several_instances_record_once_in_bus_order(redis_server: RedisServer) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    instances = [RedisHistory(redis_server.url, prefix=prefix) for _ in range(3)]
    c = ch()
    messages = [f"event-{i}".encode() for i in range(300)]

    async def receive(history: RedisHistory, delay: float) -> list[Offset]:
        got = []
        for i, data in enumerate(messages):
            if i % 50 == 0:
                await asyncio.sleep(delay)  # instances run at different paces
            got.append(history.append(c, data))
        return list(await asyncio.gather(*got))

    try:
        results = await asyncio.gather(
            *(receive(h, d) for h, d in zip(instances, (0, 0.003, 0.007), strict=True))
        )
        assert results[0] == results[1] == results[2]  # every instance: the same offsets
        assert [o.seq for o in results[0]] == list(range(1, 301))  # once each, in bus order
        first = Offset(results[0][0].epoch, results[0][0].ms, 1)
        replay = await instances[2].since(c, first)
        assert [e.data for e in replay.entries] == messages[1:]
        stream = f"{prefix}:{{{c}}}:s"
        assert redis_server.client().xlen(stream) == 300
    finally:
        for history in instances:
            await history.close()


async def test_redis_data_loss_changes_the_epoch(redis_server: RedisServer) -> None:
    server = RedisServer()
    server.start()
    history = RedisHistory(server.url, prefix="t")
    try:
        c = ch()
        before = [await history.append(c, f"m{i}".encode()) for i in range(3)]
        server.restart()  # no persistence: history and scripts are gone
        after = await history.append(c, b"m3")
        assert after.epoch != before[0].epoch and after.seq == 1
        assert not (await history.since(c, before[0])).recovered
        assert not (await history.since(c, before[2])).recovered
        assert (await history.since(c, after)).recovered
    finally:
        await history.close()
        server.close()


async def test_a_gap_marker_is_never_crossed_and_never_replayed(
    make: Callable[..., History],
) -> None:
    history = make()
    ch = f"c-{uuid.uuid4().hex[:6]}"
    first = await history.append(ch, b"1")
    assert await history.mark_nowait(ch, True)  # nobody recorded before: marked
    assert not await history.mark_nowait(ch, True)  # already recording: nothing to mark
    second = await history.append(ch, b"2")
    assert not (await history.since(ch, first)).recovered
    assert not (await history.since(ch, first.at(0))).recovered
    assert await history.since(ch, second) == (True, [])
    assert await history.mark_nowait(ch, False)  # a known hole: always marked
    third = await history.append(ch, b"3")
    assert not (await history.since(ch, second)).recovered
    replay = await history.since(ch, third.at(0))
    assert replay.recovered and [e.data for e in replay.entries] == [b"3"]
    assert await history.size() == 5  # markers are counted
    await history.release(ch)
    assert await history.mark_nowait(ch, True)  # recording again after a pause: marked


async def test_a_new_channel_needs_no_marker(make: Callable[..., History]) -> None:
    history = make()
    ch = f"c-{uuid.uuid4().hex[:6]}"
    assert not await history.mark_nowait(ch, True)
    offset = await history.append(ch, b"1")
    assert await history.since(ch, offset) == (True, [])


async def test_start_marks_only_when_no_other_recorder_is_live(private_redis: RedisServer) -> None:
    """Each history stands for an instance, recording under its bus connection's presence name
    (bus/presence.py), here a pub/sub connection of its own. A plain listener of the channel (an
    instance with only ordinary sockets of the account) is no recorder, and a recorder killed
    without a stop is seen dead at once (its presence is gone) though registered for 3 s more."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(private_redis.url)
    ch = f"c-{uuid.uuid4().hex[:6]}"
    names = [f"{presence.PREFIX}{uuid.uuid4().hex}" for _ in range(3)]
    one, two, three = (
        RedisHistory(private_redis.url, prefix=prefix, presence=lambda n=n: n) for n in names
    )
    held = [client.pubsub() for _ in names]
    plain = client.pubsub()
    try:
        for pubsub, name in zip(held, names, strict=True):
            await pubsub.subscribe(name)
        await plain.subscribe(ch)
        await one.append(ch, b"0")
        assert await one.mark_nowait(ch, True)
        offset = await one.append(ch, b"1")
        assert not await two.mark_nowait(ch, True)  # one records: nothing was missed
        await one.release(ch)
        assert not await three.mark_nowait(ch, True)  # two still records
        await two.append(ch, b"2")
        replay = await three.since(ch, offset)
        assert replay.recovered and [e.data for e in replay.entries] == [b"2"]
        await two.release(ch)
        await three.release(ch)
        assert await one.mark_nowait(ch, True)  # nobody was recording; the listener is none
        assert not (await one.since(ch, offset)).recovered
        # killed without a stop: registered for up to 3 s more, its connections gone at once
        offset = await one.append(ch, b"3")
        await held[0].aclose()
        assert await two.mark_nowait(ch, True)  # the registration alone is not believed
        assert not (await two.since(ch, offset)).recovered
        offset = await two.append(ch, b"4")
        assert not await three.mark_nowait(ch, True)  # two lives: believed
        assert (await three.since(ch, offset)).recovered
    finally:
        for history in (one, two, three):
            await history.close()
        for pubsub in [*held, plain]:
            await pubsub.aclose()
        await client.aclose()


async def test_a_recorder_registers_under_its_current_name(private_redis: RedisServer) -> None:
    """After a reconnect the bus's presence name changes; the recorder's next mark (a gap
    marker) registers the new one and drops the old, so only the new one vouches for it."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(private_redis.url, socket_timeout=5)
    ch = f"c-{uuid.uuid4().hex[:6]}"
    current = [f"{presence.PREFIX}{uuid.uuid4().hex}"]
    one = RedisHistory(private_redis.url, prefix=prefix, presence=lambda: current[0])
    two = RedisHistory(private_redis.url, prefix=prefix, presence=lambda: None)  # bus down
    held = client.pubsub()
    try:
        async with asyncio.timeout(30):  # a full run once hung here for 300 s, not seen since
            await held.subscribe(current[0])
            await one.append(ch, b"0")
            assert await one.mark_nowait(ch, True)
            recorders = f"{prefix}:{{{ch}}}:r"
            assert await client.zrange(recorders, 0, -1) == [current[0].encode()]
            await held.unsubscribe(current[0])  # the connection was cut...
            current[0] = f"{presence.PREFIX}{uuid.uuid4().hex}"
            await held.subscribe(current[0])  # ...and is back under a new name
            assert await one.mark_nowait(ch, False)  # its gap marker
            assert await client.zrange(recorders, 0, -1) == [current[0].encode()]
            offset = await one.append(ch, b"1")
            assert not await two.mark_nowait(ch, True)  # believed under the new name
            assert (await two.since(ch, offset)).recovered
            (down,) = [m for m in await client.zrange(recorders, 0, -1) if m != current[0].encode()]
            assert down.startswith(f"{presence.PREFIX}none:".encode())  # never anybody's channel
    finally:
        for history in (one, two):
            await history.close()
        await held.aclose()
        await client.aclose()
