"""A herd of ``since`` reads of one channel is one Redis read (bus/redis_history.py), and every
socket still gets exactly the replay it would get alone (history.judge)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from luna_sender.bus.history import MemoryHistory, Offset, Replay
from luna_sender.bus.redis_history import RedisHistory

from .helpers import RedisServer


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def evalsha_calls(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def reader(redis_server: RedisServer, prefix: str) -> RedisHistory:
    return RedisHistory(redis_server.url, prefix=prefix)


async def build(history: RedisHistory | MemoryHistory, channel: str) -> list[Offset]:
    """Offsets 1..3, a gap marker (seq 4), then 5..8."""
    offsets = [await history.append(channel, f"m{i}".encode()) for i in range(3)]
    assert await history.mark_nowait(channel, start=False)
    offsets += [await history.append(channel, f"n{i}".encode()) for i in range(4)]
    return offsets


def askers(offsets: list[Offset]) -> list[Offset]:
    o = offsets
    last = o[-1]
    return [
        o[0],  # before the gap marker: not recovered
        o[1].at(0),  # a part offset before the marker: not recovered
        o[3],  # first after the marker
        o[3].at(1),  # a part offset: from that message on
        o[5],
        o[5],  # the same offset twice
        last,  # nothing after it: recovered, empty
        last.at(0),
        Offset("0" * 12, last.ms, last.seq),  # another epoch
        Offset(last.epoch, last.ms + 1, last.seq),  # same seq, another message
        Offset(last.epoch, o[4].ms + 10**6, o[4].seq),  # an ms not ours
        Offset(last.epoch, last.ms, last.seq + 1),  # from the future
    ]


def shape(replay: Replay) -> tuple[bool, list[tuple[int, bytes]]]:
    return replay.recovered, [(e.offset.seq, e.data) for e in replay.entries]


async def test_herd_gets_what_each_would_alone(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    channel = f"luna:{uuid.uuid4()}"
    writer = RedisHistory(redis_server.url, prefix=prefix)
    offsets = await build(writer, channel)
    await writer.close()
    memory = MemoryHistory()
    mem_offsets = await build(memory, channel)
    history = reader(redis_server, prefix)
    try:
        asked = askers(offsets)
        alone = [shape(await history.since(channel, o)) for o in asked]
        await admin.config_resetstat()
        herd = [shape(r) for r in await asyncio.gather(*(history.since(channel, o) for o in asked))]
        assert await evalsha_calls(admin) == 1  # one read for all of them
        assert herd == alone
        # The exactness rules, spelled out (and the same as the memory history's).
        n = [(5, b"n0"), (6, b"n1"), (7, b"n2"), (8, b"n3")]
        expected = [
            (False, []),
            (False, []),
            (True, n[1:]),
            (True, n),
            (True, n[3:]),
            (True, n[3:]),
            (True, []),
            (True, n[3:]),
            (False, []),
            (False, []),
            (False, []),
            (False, []),
        ]
        assert herd == expected
        mem_asked = askers(mem_offsets)
        assert [shape(await memory.since(channel, o)) for o in mem_asked] == expected
    finally:
        await history.close()


async def test_a_since_after_an_append_sees_it(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    """The second caller joins the first one's read, which then moves behind the append queued
    between them: both see it (read-your-writes)."""
    history = reader(redis_server, f"t-{uuid.uuid4().hex[:8]}")
    channel = f"luna:{uuid.uuid4()}"
    try:
        start = await history.append(channel, b"a")

        async def after_append() -> Replay:
            history.append_nowait(channel, b"b")
            return await history.since(channel, start)

        await admin.config_resetstat()
        first, second = await asyncio.gather(history.since(channel, start), after_append())
        assert await evalsha_calls(admin) == 2  # the append and one read
        assert shape(second) == (True, [(2, b"b")])
        assert shape(first) == (True, [(2, b"b")])
    finally:
        await history.close()


async def test_a_cancelled_waiter_leaves_the_others_their_read(redis_server: RedisServer) -> None:
    history = reader(redis_server, f"t-{uuid.uuid4().hex[:8]}")
    channel = f"luna:{uuid.uuid4()}"
    try:
        start = await history.append(channel, b"a")
        await history.append(channel, b"b")
        gone = asyncio.ensure_future(history.since(channel, start))
        kept = asyncio.ensure_future(history.since(channel, start))
        await asyncio.sleep(0)  # both joined the read, not sent yet
        gone.cancel()
        assert shape(await kept) == (True, [(2, b"b")])
        assert gone.cancelled()
    finally:
        await history.close()


async def test_channels_and_later_reads_are_separate(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    history = reader(redis_server, f"t-{uuid.uuid4().hex[:8]}")
    a, b = f"luna:{uuid.uuid4()}", f"luna:{uuid.uuid4()}"
    try:
        oa = await history.append(a, b"a1")
        await history.append(a, b"a2")
        ob = await history.append(b, b"b1")
        await admin.config_resetstat()
        ra, rb = await asyncio.gather(history.since(a, oa), history.since(b, ob))
        assert await evalsha_calls(admin) == 2
        assert shape(ra) == (True, [(2, b"a2")])
        assert shape(rb) == (True, [])
        # A read already sent is not joined: the next since reads again and sees newer appends.
        await history.append(b, b"b2")
        assert shape(await history.since(b, ob)) == (True, [(2, b"b2")])
    finally:
        await history.close()


async def test_a_large_herd_is_woken_in_steps_and_all_answered(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    history = reader(redis_server, f"t-{uuid.uuid4().hex[:8]}")
    channel = f"luna:{uuid.uuid4()}"
    try:
        offsets = [await history.append(channel, f"m{i}".encode()) for i in range(5)]
        asked = [offsets[i % 5] for i in range(300)]  # more than WAKE
        await admin.config_resetstat()
        replies = await asyncio.gather(*(history.since(channel, o) for o in asked))
        assert await evalsha_calls(admin) == 1
        for offset, reply in zip(asked, replies, strict=True):
            assert reply.recovered
            assert [e.offset.seq for e in reply.entries] == list(range(offset.seq + 1, 6))
    finally:
        await history.close()
