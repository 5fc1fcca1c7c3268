"""A message published twice byte for byte (docs/recovery.md, fine print): the shared history
records it once, so its second copy must not carry the first one's offset.

Under that older offset a recovering socket's offsets went backwards (X at n, Y at n+1, X at
n), and a client resuming from the last offset it received got Y a second time (an outside
pass: 5 of 5, face and general). The second copy now goes out live without ``offset``.
"""

from __future__ import annotations

from typing import Any

import pytest

from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import account, assert_silent, face_event, face_message, recv_json
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
