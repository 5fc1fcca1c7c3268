"""A resume on an instance that received the missed events but did not record them (#18's race
between instances, docs/recovery.md), two real service processes over one private redis-server.

Instance ``first`` records the account (a ``recover=true`` socket) and is frozen (SIGSTOP) for
less than the 1.5 s its registration is still believed; ``other`` serves the account's plain
sockets (or ``/ws/general``, always subscribed), so the events published meanwhile reach it but
not the history. A client that moves to ``other`` with ``since`` was answered ``recovered:
true, replayed: 0`` over them (an outside pass: 10 of 105 resumes at 300 events/s without a
freeze). ``other`` now appends what it received of the channel just before it starts recording
it, ahead of its read; the history records each message once, so ``first``'s own appends once
it wakes add nothing twice. And its read waits for ``first``'s answer to a fence
(bus/fences.py): a recorder frozen past the fence's wait leaves a gap marker (``false``), as its
socket may hold events older than any tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from luna_sender.bus.fences import WAIT as FENCE_WAIT
from luna_sender.bus.redis_history import DEFAULT_PREFIX, FRESH
from luna_sender.delivery.recovery import (
    SETTLE,
    TAIL_AGE,
    TAIL_BYTES,
    TAIL_MESSAGE,
    TAIL_SLOTS,
    Tail,
)

from .helpers import (
    RedisServer,
    Service,
    account,
    assert_silent,
    face_event,
    metric,
    publish_face,
    recv_json,
)


async def _frames(ws: Any, n: int) -> list[Any]:
    return [await recv_json(ws) for _ in range(n)]


GENERAL = "luna-sender-general-events"


def _tag(frame: Any) -> str:
    event = frame["event"]
    return str(event.get("user_data") or event.get("tag"))


async def _resume_on_the_listener(
    redis: RedisServer,
    path: str,
    headers: dict[str, str],
    publish_via: Callable[[aiohttp.ClientSession, Service, str], Awaitable[None]],
    watch_plain: bool,
    env: dict[str, str] | None = None,
    missed: int = 2,
    move_after: float = 0.0,
    wake_after: float = 0.3,
    noise: int = 0,
) -> tuple[Any, list[Any]]:
    """Returns the resume's recovery frame and what followed it: the replay of the ``missed``
    events published during the freeze (tagged 2, 3, ...), of one published after the resume's
    101 while the recorder is still frozen, then one more live. The recorder wakes
    ``wake_after`` the 101, within the fence the resume waits on (bus/fences.py); the event
    after the 101 must be recorded after the recorder's late appends (the instance resumed on
    appended it first: out of bus order in 6 of 6 general resumes of an outside pass)."""
    tags = [str(n) for n in range(2, 2 + missed)]
    first = Service("--redis-url", redis.url, env=env)
    other = Service("--redis-url", redis.url, env=env)
    try:
        async with aiohttp.ClientSession(headers=headers) as session:

            async def publish(tag: str) -> None:
                await publish_via(session, other, tag)

            ws = await session.ws_connect(first.ws_url + path, params={"recover": "true"})
            plain = await session.ws_connect(other.ws_url + path)
            await publish("1")
            offset = (await recv_json(ws))["offset"]
            assert _tag(await recv_json(plain)) == "1"
            if move_after:  # freeze just after a refresh: the registration is believed 1.5 s
                await asyncio.to_thread(_next_beat, redis)
            frozen = loop_time()
            os.kill(first.proc.pid, signal.SIGSTOP)
            try:
                for tag in tags:
                    await publish(tag)
                if watch_plain:  # ``other`` has them: they went out to its plain socket
                    assert [_tag(f) for f in await _frames(plain, missed)] == tags
                else:
                    await asyncio.sleep(0.2)
                if noise:  # general events every instance receives, past any tail's slots
                    pipe = redis.client().pipeline(transaction=False)
                    for n in range(noise):
                        pipe.publish(GENERAL, orjson.dumps({"event": {"n": n}, "event_type": "t"}))
                    await asyncio.to_thread(pipe.execute)
                await asyncio.sleep(max(0.0, frozen + move_after - loop_time()))
                resumed = await session.ws_connect(other.ws_url + path, params={"since": offset})
                await publish(str(2 + missed))
                await asyncio.sleep(wake_after)
                os.kill(first.proc.pid, signal.SIGCONT)
                answer = await recv_json(resumed)
                replay = await _frames(resumed, answer["recovery"]["replayed"])
            finally:
                os.kill(first.proc.pid, signal.SIGCONT)
            # ``first`` wakes and appends them itself: recorded once, not sent again
            await asyncio.sleep(0.5)
            await publish(str(3 + missed))
            while _tag(replay[-1]) != str(3 + missed):
                replay.append(await recv_json(resumed))
            await assert_silent(resumed)
            # The history holds each event once, in bus order, under the offsets replayed
            again = await session.ws_connect(first.ws_url + path, params={"since": offset})
            assert await recv_json(again) == {
                "recovery": {"recovered": True, "replayed": missed + 2}
            }
            history = await _frames(again, missed + 2)
            assert [(_tag(f), f["offset"]) for f in history] == [
                (_tag(f), f["offset"]) for f in replay
            ]
            for sock in (again, resumed, plain, ws):
                await sock.close()
            return answer, replay
    finally:
        for svc in (first, other):
            svc.close()


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def _next_beat(redis: RedisServer, acc: str = "*") -> None:
    """Wait for the recorder's next registration refresh (the score of its name moves)."""
    client = redis.client()
    (key,) = [k for k in client.scan_iter(match=f"{DEFAULT_PREFIX}:*{acc}*:r")]
    before = client.zrange(key, 0, -1, withscores=True)
    deadline = time.monotonic() + 5
    while client.zrange(key, 0, -1, withscores=True) == before:
        assert time.monotonic() < deadline, "no refresh in 5 s"
        time.sleep(0.005)


async def _face(session: aiohttp.ClientSession, svc: Service, tag: str) -> None:
    acc = session.headers["Luna-Account-Id"]
    await publish_face(session, svc.url, acc, [face_event(user_data=tag)])


async def _general(session: aiohttp.ClientSession, svc: Service, tag: str) -> None:
    body = {"event": {"tag": tag}, "event_type": "t"}
    async with session.post(svc.url + "/publish/general", json=body) as r:
        assert r.status == 204, await r.text()


@pytest.mark.slow
async def test_a_resume_where_the_account_had_plain_sockets_replays_what_they_got(
    private_redis: RedisServer,
) -> None:
    answer, frames = await _resume_on_the_listener(
        private_redis, "/ws", {"Luna-Account-Id": account()}, _face, watch_plain=True
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 3}}
    assert [_tag(f) for f in frames] == ["2", "3", "4", "5"]


@pytest.mark.slow
async def test_a_resume_covers_a_hundred_events_the_frozen_recorder_did_not_append(
    private_redis: RedisServer,
) -> None:
    """A ring of the last 32 messages lost the older ones behind ``true`` when the recorder
    stalled at a few hundred events/s (an outside pass: 16-256 events in 12 of 12 resumes at
    300/s, ~59 with a resume 0.3 s into the freeze), and left the history out of order once
    the recorder woke: its late appends came first. The re-appended tail now goes first."""
    answer, frames = await _resume_on_the_listener(
        private_redis, "/ws", {"Luna-Account-Id": account()}, _face, True, missed=100
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 101}}
    assert [_tag(f) for f in frames] == [str(n) for n in range(2, 104)]


@pytest.mark.slow
async def test_a_resume_late_in_a_believed_freeze_replays_its_first_events(
    private_redis: RedisServer,
) -> None:
    """The tail held one second and a frozen recorder is believed for 1.5 s: a client moving
    1.0-1.5 s into the freeze lost the freeze's first events behind ``true`` (an outside pass:
    633 events in 26 of 27 such resumes answered true)."""
    answer, frames = await _resume_on_the_listener(
        private_redis, "/ws", {"Luna-Account-Id": account()}, _face, True, move_after=1.25
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 3}}
    assert [_tag(f) for f in frames] == ["2", "3", "4", "5"]


@pytest.mark.slow
async def test_a_resume_past_a_tails_reach_keeps_bus_order(private_redis: RedisServer) -> None:
    """2,100 other messages after the missed ones overran the instance's tail: its own append
    of the event after the resume's 101 went ahead of the frozen recorder's late ones, and the
    replay held them out of bus order (an outside pass: 6 of 6 general resumes). The instance
    now holds its appends until the recorder answered its fence."""
    assert TAIL_SLOTS < 2_100
    answer, frames = await _resume_on_the_listener(
        private_redis, "/ws", {"Luna-Account-Id": account()}, _face, True, noise=2_100
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 3}}
    assert [_tag(f) for f in frames] == ["2", "3", "4", "5"]


def test_the_tail_outlasts_the_time_a_frozen_recorder_is_believed() -> None:
    assert TAIL_AGE >= FRESH + SETTLE + 0.2


@pytest.mark.slow
async def test_a_general_resume_replays_what_the_instance_received_unrecorded(
    private_redis: RedisServer,
) -> None:
    """Every instance listens to the general channel: any general resume on an instance
    without a recovering general socket met the race."""
    answer, frames = await _resume_on_the_listener(
        private_redis, "/ws/general", {}, _general, watch_plain=False
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 3}}
    assert [_tag(f) for f in frames] == ["2", "3", "4", "5"]


def test_the_tail_keeps_recent_small_messages_in_order_and_never_past_half_the_dedupe() -> None:
    """What a resume re-appends: an older message would be recorded a second time once the
    history forgot its hash (``history.dedupe``), a larger one would pin memory."""
    tail = Tail(dedupe=0.2)
    for i in range(40):
        tail.add(100.0 + i * 0.001, "a" if i % 2 else "b", b"%d" % i)
    tail.add(100.05, "a", b"x" * (TAIL_MESSAGE + 1))
    assert tail.take("a", 100.05) == [b"%d" % i for i in range(1, 40, 2)]
    assert tail.take("a", 100.0 + 0.039 + 0.1) == [b"39"]  # 0.1 s: half of dedupe
    assert tail.take("c", 100.05) == []
    for i in range(TAIL_SLOTS + 10):  # the last TAIL_SLOTS messages, whatever their channels
        tail.add(101.0, "b" if i % 3 else "a", b"%d" % i)
    assert tail.take("a", 101.0) == [b"%d" % i for i in range(10, TAIL_SLOTS + 10) if i % 3 == 0]
    tail = Tail(dedupe=30.0)
    tail.add(100.0, "a", b"old")
    assert tail.take("a", 100.0 + TAIL_AGE) == [b"old"]
    assert tail.take("a", 100.0 + TAIL_AGE + 0.01) == []


def test_large_messages_are_held_up_to_the_tails_byte_budget_the_oldest_going_first() -> None:
    """Events over 64 KiB were never held, and resumes at 300/s of ~70 KB events lost 1-56
    behind ``true`` in 12 of 20 (an outside pass); the budget bounds what they pin."""
    big = TAIL_MESSAGE
    room = TAIL_BYTES // big
    tail = Tail(dedupe=30.0)
    tail.add(100.0, "a", b"s")
    for i in range(room + 4):
        tail.add(100.0, "a", bytes([i]) * big)
    assert [m[0] for m in tail.take("a", 100.0)] == list(range(4, room + 4))
    tail.add(100.0, "a", b"t")  # over the budget by one byte: the oldest large one goes
    assert [m[0] for m in tail.take("a", 100.0)] == [*range(5, room + 4), ord("t")]


@contextlib.contextmanager
def _forging_fence_answers(redis: RedisServer) -> Iterator[list[bytes]]:
    """A client allowed to SUBSCRIBE and PUBLISH on presence channels answers every fence
    request at once in the name of the recorder asked; yields the requests it answered."""
    answered: list[bytes] = []
    pubsub = redis.client().pubsub()

    def forge(msg: dict[str, Any]) -> None:
        parts = msg["data"].split(b" ")
        if parts[0] == b"fence?" and len(parts) == 4:
            answered.append(msg["data"])
            redis.client().publish(parts[2], b"fence! " + parts[1] + b" " + msg["channel"])

    pubsub.psubscribe(**{"__luna_sender_alive__:*": forge})
    thread = pubsub.run_in_thread(sleep_time=0.001, daemon=True)
    try:
        yield answered
    finally:
        thread.stop()
        thread.join(5)
        pubsub.close()


async def _move_to_an_instance_new_to_the_account(
    redis: RedisServer, publish_after_101: bool, frozen_for: float = 0.03, forged: bool = False
) -> tuple[Any, list[str], Any, list[str]]:
    """The recorder (``first``) frozen while event 2 is published, and 3 with
    ``publish_after_101``, until ``frozen_for`` after the client that left it has the 101 of its
    resume on ``other`` (30 ms: a read or an append made at once is done by then); then event
    4, then a second resume from the same offset on ``first``. Returns both resumes' recovery
    frames and the tags each got."""
    acc, acc2 = account(), account()
    first = Service("--redis-url", redis.url)
    other = Service("--redis-url", redis.url)
    try:
        async with aiohttp.ClientSession(headers={"Luna-Account-Id": acc}) as session:

            async def publish(tag: str) -> None:
                await publish_face(session, other.url, acc, [face_event(user_data=tag)])

            ws = await session.ws_connect(first.ws_url + "/ws", params={"recover": "true"})
            # ``other``'s history in use already (its first call loads the scripts: slower)
            warm = await session.ws_connect(
                other.ws_url + "/ws", params={"recover": "true"}, headers={"Luna-Account-Id": acc2}
            )
            await publish_face(session, other.url, acc2, [face_event()])
            await recv_json(warm)
            await publish("1")
            offset = (await recv_json(ws))["offset"]
            await asyncio.to_thread(_next_beat, redis, acc)  # believed for 1.5 s from here
            forging = _forging_fence_answers(redis) if forged else contextlib.nullcontext([])
            with forging as answered:
                os.kill(first.proc.pid, signal.SIGSTOP)
                try:
                    await publish("2")
                    resumed = await session.ws_connect(
                        other.ws_url + "/ws", params={"since": offset}
                    )
                    if publish_after_101:
                        await publish("3")
                    await asyncio.sleep(frozen_for)
                finally:
                    os.kill(first.proc.pid, signal.SIGCONT)
            assert bool(answered) == forged  # the forger did answer the fence
            answer = await recv_json(resumed)
            got = await _frames(resumed, answer["recovery"]["replayed"])
            await publish("4")
            got.append(await recv_json(resumed))
            await assert_silent(resumed)
            again = await session.ws_connect(first.ws_url + "/ws", params={"since": offset})
            answer2 = await recv_json(again)
            got2 = await _frames(again, answer2["recovery"]["replayed"])
            for sock in (again, resumed, warm, ws):
                await sock.close()
            return answer, [_tag(f) for f in got], answer2, [_tag(f) for f in got2]
    finally:
        for svc in (first, other):
            svc.close()


@pytest.mark.slow
async def test_a_resume_on_an_instance_new_to_the_account_waits_for_the_recorders_append(
    private_redis: RedisServer,
) -> None:
    """The instance the client moves to had nothing of the account: the event published just
    before its subscription took effect reached only the recorder, which appends it a moment
    later. A read made at once missed it behind ``recovered: true`` (an outside pass: 1 of 65
    resumes at 300 events/s). The read now waits ``SETTLE`` (100 ms) after the subscription."""
    answer, got, answer2, got2 = await _move_to_an_instance_new_to_the_account(
        private_redis, publish_after_101=False
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 1}}
    assert got == ["2", "4"]
    assert (answer2, got2) == ({"recovery": {"recovered": True, "replayed": 2}}, ["2", "4"])


@pytest.mark.slow
async def test_a_new_subscriptions_first_events_are_recorded_after_the_ones_before(
    private_redis: RedisServer,
) -> None:
    """The instance new to the account records the first event it receives; the recorder
    that got the previous one first, a moment behind, appended that one after it, so the
    history and every replay held them swapped (an outside pass: 1-4 of 100 resumes at 300
    events/s). The new subscription's appends now wait ``SETTLE`` too."""
    answer, got, answer2, got2 = await _move_to_an_instance_new_to_the_account(
        private_redis, publish_after_101=True
    )
    assert answer == {"recovery": {"recovered": True, "replayed": 2}}
    assert got == ["2", "3", "4"]
    assert (answer2, got2) == ({"recovery": {"recovered": True, "replayed": 3}}, ["2", "3", "4"])


@pytest.mark.slow
async def test_a_resume_on_a_new_instance_waits_for_a_recorder_frozen_under_a_second(
    private_redis: RedisServer,
) -> None:
    """The recorder is frozen 0.5 s (believed: under the 1.5 s since its last refresh) with
    event 2 unappended while the client moves to an instance new to the account. The read 100
    ms after the subscription missed it behind ``recovered: true`` (outside passes: 16-102
    events in 11 of 12 such moves). The new instance now fences the recorder (bus/fences.py):
    its read waits until the recorder, awake, has appended what it received before."""
    answer, got, answer2, got2 = await _move_to_an_instance_new_to_the_account(
        private_redis, publish_after_101=True, frozen_for=0.5
    )
    assert (answer, got) == ({"recovery": {"recovered": True, "replayed": 2}}, ["2", "3", "4"])
    assert (answer2, got2) == ({"recovery": {"recovered": True, "replayed": 3}}, ["2", "3", "4"])


@pytest.mark.slow
async def test_a_resume_on_a_new_instance_is_told_false_when_the_recorder_stays_frozen(
    private_redis: RedisServer,
) -> None:
    """Frozen past the fence's wait, though still believed when the client moves (refreshed
    under 1.5 s before): the new instance marks a gap rather than promise event 2, which only
    the frozen recorder has. Every resume from before it answers ``false``."""
    answer, got, answer2, _ = await _move_to_an_instance_new_to_the_account(
        private_redis, publish_after_101=False, frozen_for=FENCE_WAIT + 0.5
    )
    assert (answer, got) == ({"recovery": {"recovered": False, "replayed": 0}}, ["4"])
    assert answer2 == {"recovery": {"recovered": False, "replayed": 0}}


@pytest.mark.slow
async def test_a_forged_fence_answer_is_not_believed(private_redis: RedisServer) -> None:
    """Another client answers the fence in the frozen recorder's name at once. Believed, the
    resume answered ``true`` without event 2 (an outside pass: 6 of 6, 143-234 events lost at
    load); the answer now counts only with the proof the recorder's own script writes."""
    answer, got, answer2, _ = await _move_to_an_instance_new_to_the_account(
        private_redis, publish_after_101=False, frozen_for=FENCE_WAIT + 0.5, forged=True
    )
    assert (answer, got) == ({"recovery": {"recovered": False, "replayed": 0}}, ["4"])
    assert answer2 == {"recovery": {"recovered": False, "replayed": 0}}


@pytest.mark.slow
async def test_junk_and_forged_fences_on_a_presence_channel_change_nothing(
    private_redis: RedisServer,
) -> None:
    """Anything published to an instance's presence channel reaches its hub: junk, an answer
    nobody asked for, and a fence request whose answer would go to the account's own event
    channel (every instance would have read it there as a poison message) are all ignored."""
    acc = account()
    svc = Service("--redis-url", private_redis.url)
    admin = private_redis.client()
    try:
        async with aiohttp.ClientSession(headers={"Luna-Account-Id": acc}) as session:
            ws = await session.ws_connect(svc.ws_url + "/ws", params={"recover": "true"})
            await _face(session, svc, "1")
            assert _tag(await recv_json(ws)) == "1"
            (name,) = [c.decode() for c in admin.pubsub_channels("__luna_sender_alive__:*")]
            channel = f"luna-sender:{acc}"
            for junk in (
                b"",
                b"\xff\xfe" * 1000,
                b"x" * 1_000_000,
                f"fence! {'0' * 32} {name}".encode(),
                f"fence? {'1' * 32} {channel} {channel}".encode(),  # answer onto the event channel
                f"fence? {'2' * 32} {name} luna-sender:{account()}".encode(),  # not recorded here
                # a token of 100 KB: its answer's proof key would have had it in its name
                f"fence? {'3' * 100_000} {name} {channel}".encode(),
                f"fence? {'4' * 32} {name}{'5' * 100_000} {channel}".encode(),
            ):
                assert admin.publish(name, junk) == 1
            await _face(session, svc, "2")
            assert _tag(await recv_json(ws)) == "2"
            await assert_silent(ws)
            await ws.close()
        assert admin.keys("*:f:*") == []  # no answer was written for any of them
        assert metric(svc.url, "bus_poison_messages_total") == 0
        log = svc.log()
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    finally:
        assert svc.terminate() == 0
