"""Requests that could be read two ways are refused, never read the convenient way.

A front door appends what it established (``&account_id=<A>``, a ``Luna-Account-Id`` header);
a client that can make the service read the request differently (cut the query at a raw ``#``,
send the header twice so the first one wins) chooses the account itself. Checked over raw sockets,
so the exact bytes reach the service.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from .conftest import LiveApp
from .helpers import account, assert_silent, face_event, recv_json
from .jwtkit import jwt_settings, token

UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]
FORBIDDEN_CODE = 12033


async def raw(
    app: LiveApp,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    body: bytes = b"",
) -> tuple[int, dict[str, Any] | None]:
    """One request with exactly these bytes: the status and the JSON body (None if none)."""
    port = app.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            *(f"{k}: {v}" for k, v in headers or []),
            f"Content-Length: {len(body)}",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split()[1])
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        data = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        return status, orjson.loads(data) if data else None
    finally:
        writer.close()


def ws_headers(*extra: tuple[str, str]) -> list[tuple[str, str]]:
    key = base64.b64encode(os.urandom(16)).decode()
    return [*UPGRADE, ("Sec-WebSocket-Key", key), *extra]


def face_body(source: str) -> bytes:
    return orjson.dumps(
        {
            "events": [face_event(source=source)],
            "handler_id": "h",
            "event_create_time": "2026-01-01T00:00:00Z",
            "event_end_time": "2026-01-01T00:00:00Z",
        }
    )


# --- a raw '#' in the request target ------------------------------------------------------


async def test_a_raw_hash_in_the_target_is_refused_on_every_route(memory_app: LiveApp) -> None:
    """The tester's case: ``event_type=frag#&account_id=<A>`` was read as ``event_type=frag``
    (yarl drops the "fragment"), and the socket received every account's general events."""
    acc = account()
    for target in (
        f"/ws/general?event_type=frag#&account_id={acc}",
        f"/ws/general?#&account_id={acc}",
        f"/1/ws/general?x=1&#account_id={acc}",
        "/ws#x",
        f"/viewer/ws?account_id={acc}#",
    ):
        status, body = await raw(memory_app, target, ws_headers(("Luna-Account-Id", acc)))
        assert status == 400, target
        assert body is not None and body["error_code"] == 12046, target
        assert "'#'" in body["detail"]
    # Plain HTTP routes, including ones that do not exist: refused before routing.
    for method, target in (
        ("GET", "/healthcheck#"),
        ("GET", "/version?a=1#b"),
        ("GET", "/no/such/route#x"),
        ("POST", "/publish/general?#"),
        ("GET", "/docs/dev#top"),
    ):
        status, body = await raw(memory_app, target, method=method)
        assert (status, body and body["error_code"]) == (400, 12046), target


async def test_an_encoded_hash_is_an_ordinary_character(memory_app: LiveApp) -> None:
    acc = account()
    status, _body = await raw(
        memory_app, f"/ws/general?event_type=frag%23&account_id={acc}", ws_headers()
    )
    assert status == 101
    async with memory_app.ws("/ws/general", params={"event_type": "a#b"}) as ws:
        async with memory_app.session.post(
            memory_app.url("/publish/general"), json={"event": {"n": 1}, "event_type": "a#b"}
        ) as resp:
            assert resp.status == 204
        assert (await recv_json(ws))["event"] == {"n": 1}


# --- Luna-Account-Id sent twice -----------------------------------------------------------


def _bad_header(body: dict[str, Any] | None) -> bool:
    return body is not None and body["error_code"] == 12012 and "Luna-Account-Id" in body["detail"]


@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_a_repeated_account_header_is_refused(live_app_factory: Any, mode: str) -> None:
    app = await live_app_factory(**(jwt_settings() if mode == "jwt" else {}))
    a, b = account(), account()
    auth = [("Authorization", "Bearer " + token(a, "publish"))] if mode == "jwt" else []
    listen_auth = {"Authorization": "Bearer " + token(b)} if mode == "jwt" else {}
    async with app.ws("/ws", account=b, headers=listen_auth) as victim:
        for pair in ([a, b], [b, a], [a, a], [a, a.upper()]):
            headers = [*auth, *(("Luna-Account-Id", v) for v in pair)]
            for route in ("/ws", "/1/ws"):
                status, body = await raw(app, route, ws_headers(*headers))
                assert status == 400 and _bad_header(body), (mode, route, pair)
            for route in ("/publish", "/2/publish"):
                status, body = await raw(
                    app,
                    route,
                    [*headers, ("Content-Type", "application/json")],
                    "POST",
                    face_body("forged"),
                )
                assert status == 400 and _bad_header(body), (mode, route, pair)
            # aiohttp's client sends a multidict's repeated header as two lines, too.
            async with app.session.post(
                app.url("/publish"),
                data=face_body("forged"),
                headers=CIMultiDict([*headers, ("Content-Type", "application/json")]),
            ) as resp:
                assert resp.status == 400 and _bad_header(await resp.json())
        await assert_silent(victim)
        # Once is fine: the same publish with one header reaches its account.
        one = [
            *auth,
            ("Luna-Account-Id", b if mode == "none" else a),
            ("Content-Type", "application/json"),
        ]
        if mode == "none":
            status, _ = await raw(app, "/publish", one, "POST", face_body("one"))
            assert status == 204
            assert (await recv_json(victim))["event"]["source"] == "one"


@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_a_repeated_viewer_account_parameter_is_refused(
    live_app_factory: Any, mode: str
) -> None:
    app = await live_app_factory(**(jwt_settings() if mode == "jwt" else {}))
    a, b = account(), account()
    extra = f"&token={token(a)}" if mode == "jwt" else ""
    for path in ("/viewer/ws", "/viewer/validate"):
        status, body = await raw(app, f"{path}?account_id={a}&account_id={b}{extra}", ws_headers())
        assert status == 400, path
        assert body is not None and (body["error_code"], body["detail"]) == (
            12012,
            "Bad query parameters 'account_id'",
        )


# --- token scope: space-delimited ---------------------------------------------------------


async def test_scope_is_split_on_single_spaces_only(live_app_factory: Any) -> None:
    """RFC 8693 §4.2: ``scope`` is space-delimited; a tab or newline is not a delimiter, so
    ``"admin\\tpublish"`` is one unknown scope that grants nothing."""
    app = await live_app_factory(**jwt_settings())
    acc, other = account(), account()
    for scope in ("admin\tpublish", "publish\n", "admin\npublish", "admin,publish"):
        bearer = {"Authorization": "Bearer " + token(acc, scope)}
        async with app.session.post(
            app.url("/publish"),
            data=face_body("x"),
            headers={**bearer, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 403, repr(scope)
            assert (await resp.json())["error_code"] == FORBIDDEN_CODE
        async with app.session.get(app.url("/config"), headers=bearer) as resp:
            assert resp.status == 403, repr(scope)
        status, body = await raw(
            app, f"/ws/general?account_id={other}", ws_headers(*bearer.items())
        )
        assert (status, body and body["error_code"]) == (403, FORBIDDEN_CODE), repr(scope)
    # Two spaces still separate two scopes (no empty scope is granted either).
    bearer = {"Authorization": "Bearer " + token(acc, "admin  publish")}
    async with app.session.get(app.url("/config"), headers=bearer) as resp:
        assert resp.status == 200
