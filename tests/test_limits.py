"""Every limit is configurable, has a sane default, and answers a LUNA error when hit."""

from __future__ import annotations

import aiohttp
import pytest

from luna_sender.config.settings import Settings
from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import account


def test_defaults_are_sane() -> None:
    s = Settings()
    assert s.ws.max_connections == 20000
    assert s.ws.max_message_size == 65536
    assert s.ws.queue_max_bytes == 64 * 1024 * 1024
    assert s.limits.publish_body_max_bytes == 16 * 1024 * 1024
    assert s.limits.list_filter_max_items == 1000
    assert s.limits.user_filters_max == 64


async def test_max_connections_refused_before_upgrade(live_app_factory) -> None:
    app: LiveApp = await live_app_factory(ws={"max_connections": 3})
    acc = account()
    open_ = [await app.ws(account=acc) for _ in range(2)] + [await app.ws("/ws/general")]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await app.ws(account=acc)
    assert info.value.status == 503
    async with app.session.get(app.url("/ws"), headers={"Luna-Account-Id": acc}) as resp:
        assert resp.status == 503
        assert (await resp.json())["error_code"] == 29005
    assert len(app.app[CTX].hub.connections) == 3
    await open_[0].close()
    again = await app.ws(account=acc)  # a slot freed up
    for ws in [*open_[1:], again]:
        await ws.close()


async def test_publish_body_size(live_app_factory) -> None:
    app: LiveApp = await live_app_factory(limits={"publish_body_max_bytes": 2048})
    body = {
        "events": [{"pad": "x" * 4096}],
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    for path, headers in (("/publish", {"Luna-Account-Id": account()}), ("/publish/general", {})):
        async with app.session.post(app.url(path), json=body, headers=headers) as resp:
            assert resp.status == 413
            assert (await resp.json())["error_code"] == 12031

        # Chunked bodies (no Content-Length) are capped too.
        async def chunks():
            yield b'{"event": {"pad": "' + b"x" * 4096 + b'"}, "event_type": "t"}'

        async with app.session.post(
            app.url(path), data=chunks(), headers={**headers, "Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 413


async def test_inbound_message_size(live_app_factory) -> None:
    app: LiveApp = await live_app_factory(ws={"max_message_size": 1024})
    async with app.ws(account=account()) as ws:
        await ws.send_str("x" * 2048)
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1009


async def test_publish_requires_account(memory_app: LiveApp) -> None:
    async with memory_app.session.post(memory_app.url("/publish"), json={}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error_code"] == 29001


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "events"),
        ({"events": []}, "events"),
        ({"events": {}}, "events"),
        ({"events": [1]}, "events.0"),
        ({"events": [{}]}, "handler_id"),
        ({"events": [{}], "handler_id": 1}, "handler_id"),
        ({"events": [{}], "handler_id": "h"}, "event_create_time"),
        # A plain string (contract Part 1 "Accounts"): type and size are checked, not the format.
        ({"events": [{}], "handler_id": "h", "event_create_time": ["x"]}, "event_create_time"),
        (
            {"events": [{}], "handler_id": "h", "event_create_time": "2026-01-01T00:00:00Z"},
            "event_end_time",
        ),
        (
            {
                "events": [{}],
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
                "x": 1,
            },
            "x",
        ),
    ],
)
async def test_publish_events_validation(memory_app: LiveApp, body: dict, path: str) -> None:
    async with memory_app.session.post(
        memory_app.url("/publish"), json=body, headers={"Luna-Account-Id": account()}
    ) as resp:
        assert resp.status == 400
        err = await resp.json()
    assert err["error_code"] == 12022
    assert err["detail"].startswith(f"Failed to validate input json. Path: '{path}',  message: '")
