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


async def test_a_repeated_since_opens_and_is_told_false(memory_app: LiveApp) -> None:
    """``since`` is never an error (docs/compatibility.md): the same offset twice resumes from
    it, two different ones answer ``recovered: false``; a repeated ``kind`` on the viewer's
    pre-check is refused like a repeated filter (it was taken silently; an outside pass)."""
    acc = account()
    headers = {"Luna-Account-Id": acc}
    async with memory_app.session.ws_connect(
        memory_app.url("/ws"), params={"recover": "true"}, headers=headers
    ) as ws:
        await publish(memory_app, acc, "1")
        last = (await recv_json(ws))["offset"]
    await publish(memory_app, acc, "2")
    for sinces, answer in (([last, last], True), ([last, "garbage"], False)):
        query = "&".join(f"since={s}" for s in sinces)
        async with memory_app.session.ws_connect(
            memory_app.url("/ws") + "?" + query, headers=headers
        ) as ws:
            assert (await recv_json(ws))["recovery"]["recovered"] is answer
    async with memory_app.session.get(
        memory_app.url("/viewer/validate") + "?kind=face&kind=general&account_id=" + acc
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["detail"] == "Bad query parameters 'kind'"
