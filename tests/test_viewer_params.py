"""The viewer's routes take recovery's ``recover``/``since`` as ``/ws`` does (#18), no browser."""

from __future__ import annotations

import pytest

from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import account, face_event, face_message, recv_json


async def publish(app: LiveApp, acc: str, tag: str) -> None:
    hub = app.app[CTX].hub
    await hub.bus.publish(hub.face_channel(acc), face_message([face_event(user_data=tag)]))


@pytest.mark.parametrize("kind", ["face", "general"])
async def test_validate_accepts_recovery_params_and_refuses_a_bad_recover(
    memory_app: LiveApp, kind: str
) -> None:
    base = {"kind": kind, "account_id": account()}
    for extra in ({"recover": "true"}, {"recover": "0", "since": "anything"}):
        async with memory_app.session.get(
            memory_app.url("/viewer/validate"), params={**base, **extra}
        ) as resp:
            assert resp.status == 204
    async with memory_app.session.get(
        memory_app.url("/viewer/validate"), params={**base, "recover": "maybe"}
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["error_code"] == 12012 and "recover" in body["desc"] + body["detail"]


async def test_viewer_ws_carries_offsets_and_resumes_with_since(memory_app: LiveApp) -> None:
    acc = account()
    params = {"account_id": acc, "recover": "true"}
    async with memory_app.session.ws_connect(memory_app.url("/viewer/ws"), params=params) as ws:
        await publish(memory_app, acc, "1")
        last = (await recv_json(ws))["offset"]
    await publish(memory_app, acc, "2")
    params = {"account_id": acc, "since": last}
    async with memory_app.session.ws_connect(memory_app.url("/viewer/ws"), params=params) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 1}}
        got = await recv_json(ws)
        assert got["event"]["user_data"] == "2" and "offset" in got
    async with memory_app.session.get(
        memory_app.url("/viewer/ws"), params={"account_id": acc, "recover": "yes"}
    ) as resp:
        assert resp.status == 400
