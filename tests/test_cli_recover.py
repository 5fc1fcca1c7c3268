"""``luna-sender listen --recover`` against a small server speaking the recovery contract.

Real sockets, no luna-sender service: phase 2 adds the end-to-end test against the service.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from luna_sender.cli import client
from luna_sender.cli.main import build_parser


def event(seq: int) -> dict[str, object]:
    return {"event": {"n": seq}, "event_type": "t", "offset": f"e0.1000-{seq}"}


async def test_listen_recover_resumes_with_since_and_reports_a_failed_recovery() -> None:
    seen: list[dict[str, str]] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        query = dict(request.query)
        seen.append(query)
        if len(seen) == 1:  # first connection: three events, then the connection drops
            for seq in (1, 2, 3):
                await sock.send_str(json.dumps(event(seq)))
        elif len(seen) == 2:  # resumes: 4 and 5 were published meanwhile
            await sock.send_str(json.dumps({"recovery": {"recovered": True, "replayed": 2}}))
            for seq in (4, 5):
                await sock.send_str(json.dumps(event(seq)))
        else:  # the window was lost: recovered false, then live
            await sock.send_str(json.dumps({"recovery": {"recovered": False, "replayed": 0}}))
            await sock.send_str(json.dumps(event(9)))
            await sock.receive()  # until the client leaves
        await sock.close()
        return sock

    app = web.Application()
    app.router.add_get("/ws/general", ws)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url(""))
        argv = ["listen", "--url", url, "--general", "--recover", "--event-type", "t"]
        args = build_parser().parse_args([*argv, "--count", "6"])
        out, err = io.StringIO(), io.StringIO()
        status = await asyncio.wait_for(client.listen(args, out, err), 20)
    finally:
        await server.close()
    assert status == 0
    printed = [json.loads(line)["event"]["n"] for line in out.getvalue().splitlines()]
    assert printed == [1, 2, 3, 4, 5, 9]  # the recovery reports are not events
    assert [q.get("since") for q in seen] == [None, "e0.1000-3", "e0.1000-5"]
    assert all(q["recover"] == "true" and q["event_type"] == "t" for q in seen)
    log = err.getvalue()
    assert "resumed, 2 missed event(s) replayed" in log
    assert "not recovered" in log and "may have been missed" in log


async def test_listen_without_recover_sends_the_original_query() -> None:
    seen: list[dict[str, str]] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        seen.append(dict(request.query))
        await sock.send_str(json.dumps({"event": {"n": 1}, "offset": "x"}))
        await sock.close()
        return sock

    app = web.Application()
    app.router.add_get("/ws/general", ws)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        args = build_parser().parse_args(
            ["listen", "--url", str(server.make_url("")), "--general", "--count", "1"]
        )
        assert await asyncio.wait_for(client.listen(args, io.StringIO(), io.StringIO()), 10) == 0
    finally:
        await server.close()
    assert seen == [{}]


async def test_listen_recover_against_the_service_survives_a_server_side_cut(
    memory_app: Any,
) -> None:
    """The real service cuts every socket's TCP connection while events keep flowing: the
    CLI reconnects with since and prints every event exactly once, in order."""
    from luna_sender.web.context import CTX

    from .helpers import account, face_event, face_message

    acc = account()
    hub = memory_app.app[CTX].hub
    argv = ["listen", "--url", memory_app.url(""), "--account-id", acc, "--recover"]
    args = build_parser().parse_args([*argv, "--count", "30"])
    out, err = io.StringIO(), io.StringIO()
    listener = asyncio.create_task(client.listen(args, out, err))

    async def publish(n: int) -> None:
        body = face_message([face_event(user_data=str(n))])
        await hub.bus.publish(hub.face_channel(acc), body)

    async def connected() -> None:
        while not any(c.account == acc and not c.closing for c in hub.connections):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(connected(), 10)
    for n in range(1, 31):
        await publish(n)
        if n in (10, 20):
            for conn in list(hub.connections):
                conn.transport.abort()  # a network cut, no closing handshake
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.01)
    status = await asyncio.wait_for(listener, 30)
    assert status == 0
    printed = [json.loads(line)["event"]["user_data"] for line in out.getvalue().splitlines()]
    assert printed == [str(n) for n in range(1, 31)]
    assert "not recovered" not in err.getvalue()
