"""Slow clients (slowloris) cannot hold connections: limits.http_head_timeout and _body_timeout.

Found by an outside tester: an idle connection, headers trickled a byte at a time, an upgrade
request without its final blank line and an idle keep-alive connection were each held for an
hour, and ~1,100 of them used up every descriptor under a 1,024 open-file limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .conftest import LiveApp
from .helpers import account, face_event, publish_face, recv_json

HEAD, BODY = 1.0, 1.0
MARGIN = 1.5
UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    f"Luna-Account-Id: {account()}\r\n\r\n"
).encode()


async def _app(factory: Callable[..., Any]) -> LiveApp:
    app: LiveApp = await factory(limits={"http_head_timeout": HEAD, "http_body_timeout": BODY})
    return app


async def _connect(app: LiveApp) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert app.server.port is not None
    return await asyncio.open_connection("127.0.0.1", app.server.port)


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (at most ``limit``), and what it sent."""
    started, data = time.monotonic(), b""
    while chunk := await asyncio.wait_for(reader.read(65536), limit):
        data += chunk
    return time.monotonic() - started, data


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


async def test_a_connection_that_sends_nothing_is_closed(live_app_factory) -> None:
    app = await _app(live_app_factory)
    reader, writer = await _connect(app)
    elapsed, data = await _until_closed(reader, HEAD + MARGIN)
    assert data == b"" and elapsed >= HEAD * 0.8, (elapsed, data)
    writer.close()


async def test_trickled_headers_are_cut_at_the_head_deadline(live_app_factory) -> None:
    app = await _app(live_app_factory)
    reader, writer = await _connect(app)

    async def trickle() -> None:
        for i in range(len(UPGRADE)):  # 0.1 s a byte: the whole head would take 15 s
            writer.write(UPGRADE[i : i + 1])
            await asyncio.sleep(0.1)

    sending = asyncio.ensure_future(trickle())
    try:
        elapsed, data = await _until_closed(reader, HEAD + MARGIN)
        assert data == b"" and not sending.done() and elapsed >= HEAD * 0.8, (elapsed, data)
    finally:
        sending.cancel()
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(live_app_factory) -> None:
    app = await _app(live_app_factory)
    reader, writer = await _connect(app)
    writer.write(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200"), head
    elapsed, data = await _until_closed(reader, HEAD + MARGIN)
    assert data == b"" and elapsed >= HEAD * 0.8, (elapsed, data)
    writer.close()


async def test_an_idle_websocket_outlives_the_head_deadline(live_app_factory) -> None:
    app = await _app(live_app_factory)
    acc = account()
    async with app.ws(account=acc) as ws:
        await asyncio.sleep(HEAD * 2.5)
        assert not ws.closed
        await publish_face(app.session, app.url(""), acc, [face_event(seq="late")])
        assert (await recv_json(ws))["event"]["seq"] == "late"


async def test_slow_but_complete_requests_within_the_bound_are_served(live_app_factory) -> None:
    """A head sent over 0.8 s is served; the deadline restarts after each response, so a
    second request 0.5 s later (1.3 s after the connection opened) is served too."""
    app = await _app(live_app_factory)
    reader, writer = await _connect(app)
    request = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(0, len(request), 4):
        writer.write(request[i : i + 4])
        await asyncio.sleep(0.08)
    assert (await _response(reader))[0].startswith(b"HTTP/1.1 200")
    await asyncio.sleep(HEAD * 0.5)
    writer.write(request)
    assert (await _response(reader))[0].startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_trickled_body_is_answered_408_and_closed(live_app_factory) -> None:
    app = await _app(live_app_factory)
    reader, writer = await _connect(app)
    writer.write(
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Luna-Account-Id: {account()}\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"events": ['
    )
    elapsed, data = await _until_closed(reader, BODY + MARGIN)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b'"error_code":12046' in data.replace(b" ", b""), data
    assert elapsed >= BODY * 0.8, elapsed
    writer.close()
