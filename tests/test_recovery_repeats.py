"""A message published twice byte for byte (docs/recovery.md, fine print): the shared history
records it once, so its second copy must not carry the first one's offset.

Under that older offset a recovering socket's offsets went backwards (X at n, Y at n+1, X at
n), and a client resuming from the last offset it received got Y a second time (an outside
pass: 5 of 5, face and general). The second copy now goes out live without ``offset``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import RedisServer, account, assert_silent, face_event, face_message, recv_json
from .test_recovery_e2e import channel, general

pytestmark = pytest.mark.slow


def _tag(frame: Any) -> Any:
    event = frame["event"]
    return event["user_data"] if "user_data" in event else event["n"]


@pytest.mark.parametrize("kind", ["face", "general"])
async def test_a_byte_identical_republish_goes_out_without_an_older_offset(
    redis_app: LiveApp, kind: str
) -> None:
    bus = redis_app.app[CTX].bus
    acc = account()
    if kind == "face":
        path, chan, who = "/ws", channel(acc), acc
        x, y = (face_message([face_event(user_data=tag)]) for tag in ("x", "y"))
    else:
        path, chan, who = "/ws/general", "luna-sender-general-events", None
        x, y = general(1), general(2)
    async with redis_app.ws(path, account=who, params={"recover": "true"}) as ws:
        for data in (x, y, x):
            await bus.publish(chan, data)
        got = [await recv_json(ws) for _ in range(3)]
        assert [_tag(f) for f in got] == [_tag(got[0]), _tag(got[1]), _tag(got[0])]
        assert "offset" in got[0] and "offset" in got[1]
        assert got[0]["offset"] != got[1]["offset"]
        assert "offset" not in got[2], got[2]  # not got[0]'s again
        # The socket's offsets still rise: the next event is named past the last one.
        await bus.publish(chan, face_message([face_event(user_data="z")]) if who else general(3))
        after = await recv_json(ws)
        assert "offset" in after and after["offset"] not in (got[0]["offset"], got[1]["offset"])
    # A resume from the last offset received replays nothing it already had.
    async with redis_app.ws(path, account=who, params={"since": after["offset"]}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 0}}
        await assert_silent(ws)
    # From y's: only z (x is recorded once, at its first place).
    async with redis_app.ws(path, account=who, params={"since": got[1]["offset"]}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 1}}
        assert _tag(await recv_json(ws)) == _tag(after)
        await assert_silent(ws)


def _answer_late(app: LiveApp, delay: float) -> None:
    """The instance's appends land in Redis at once, their offsets come back ``delay`` late:
    an instance lagging behind another (a busy loop, a slow link)."""
    history = app.app[CTX].hub.recorder.history
    assert history is not None
    real = history.append_nowait

    def append_nowait(channel: str, data: bytes) -> Any:
        late = asyncio.get_running_loop().create_future()

        def answer(done: Any) -> None:
            asyncio.get_running_loop().call_later(delay, _settle, late, done)

        real(channel, data).add_done_callback(answer)
        return late

    history.append_nowait = append_nowait  # type: ignore[method-assign]


def _settle(late: Any, done: Any) -> None:
    if done.exception() is not None:
        late.set_exception(done.exception())
    else:
        late.set_result(done.result())


async def test_a_late_copy_of_a_repeat_the_client_had_is_not_sent_again_after_a_resume(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """Client C got a repeat of X live (unnamed) on instance A, then resumed on B, which lags:
    B's copy of the repeat reached C's new socket after its replay. Unnamed there too, the seam
    could not tell it from a new event and C got X a third time (an outside pass, 4 of 4
    clients); the seam judges it by the offset the history gave it, which ``since`` covers."""
    one = await live_app_factory(redis_url=redis_server.url)
    two = await live_app_factory(redis_url=redis_server.url)
    _answer_late(two, 0.3)
    bus, acc = one.app[CTX].bus, account()
    x, y, z = (face_message([face_event(user_data=tag)]) for tag in "xyz")
    async with two.ws(account=acc, params={"recover": "true"}) as other:
        async with one.ws(account=acc, params={"recover": "true"}) as ws:
            await asyncio.sleep(0.1)  # both subscribed
            for data in (x, y):
                await bus.publish(channel(acc), data)
            first = [await recv_json(ws) for _ in range(2)]
            assert [_tag(f) for f in await _frames(other, 2)] == ["x", "y"]
            await bus.publish(channel(acc), x)
            repeat = await recv_json(ws)
            assert _tag(repeat) == "x" and "offset" not in repeat
        since = first[1]["offset"]
        async with two.ws(account=acc, params={"since": since}) as resumed:
            assert await recv_json(resumed) == {"recovery": {"recovered": True, "replayed": 0}}
            late = await recv_json(other)  # B's own copy of the repeat, 0.3 s late, unnamed
            assert _tag(late) == "x" and "offset" not in late
            await bus.publish(channel(acc), z)
            got = await recv_json(resumed)
            assert _tag(got) == "z" and "offset" in got  # not x a third time
            await assert_silent(resumed)


async def _frames(ws: Any, n: int) -> list[Any]:
    return [await recv_json(ws) for _ in range(n)]
