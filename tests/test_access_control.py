"""The attacker corpus (issue 16): what a stranger's browser or a forged token gets, over real sockets.

Every refusal is checked on the wire: the status, the LUNA body (one fixed body per status, so a
prober cannot tell which check failed), and that nothing is delivered past it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from .conftest import LiveApp
from .helpers import account, assert_silent, face_event, recv_json
from .jwtkit import (
    OTHER_SECRET,
    SECRET,
    alg_none_token,
    ec_pair,
    hs256_keyed_with,
    jwt_settings,
    raw_handshake,
    rsa_pair,
    token,
)

FACE_ROUTES = ["/ws", "/1/ws", "/2/ws"]
GENERAL_ROUTES = ["/ws/general", "/1/ws/general", "/2/ws/general"]
WS_ROUTES = [*FACE_ROUTES, *GENERAL_ROUTES, "/viewer/ws"]
UNAUTHORIZED = {
    "error_code": 29010,
    "desc": "Unauthorized",
    "detail": "Missing or invalid authorization token",
    "link": "https://docs.visionlabs.ai/info/luna/troubleshooting/errors-description/code-29010",
}
FORBIDDEN = {
    "error_code": 12033,
    "desc": "Forbidden",
    "detail": "Access to this resource on the server is denied",
    "link": "https://docs.visionlabs.ai/info/luna/troubleshooting/errors-description/code-12033",
}
ORIGIN = {
    "error_code": 29011,
    "desc": "Forbidden",
    "detail": "Cross-origin websocket handshake refused",
    "link": "https://docs.visionlabs.ai/info/luna/troubleshooting/errors-description/code-29011",
}


def port_of(app: LiveApp) -> int:
    port = app.server.port
    assert port is not None
    return port


def _mode_none_access(route: str, acc: str) -> tuple[str, dict[str, str]]:
    """What a mode-none client sends to be let in: the header, or the viewer's parameter."""
    if route == "/viewer/ws":
        return f"{route}?account_id={acc}", {}
    if route in FACE_ROUTES:
        return route, {"Luna-Account-Id": acc}
    return route, {}


def _bad_tokens(acc: str) -> dict[str, dict[str, str]]:
    """Header sets of the token corpus; each must answer 401 on every business route."""
    return {
        "no token": {},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "empty bearer": {"Authorization": "Bearer "},
        "basic auth": {"Authorization": "Basic dXNlcjpwYXNz"},
        "wrong key": {"Authorization": "Bearer " + token(acc, "admin publish", key=OTHER_SECRET)},
        "alg none": {"Authorization": "Bearer " + alg_none_token(acc)},
        "expired": {"Authorization": "Bearer " + token(acc, "admin publish", exp_in=-3600)},
        "no exp": {
            "Authorization": "Bearer " + _signed({"account_id": acc, "scope": "admin publish"})
        },
        "no account_id": {"Authorization": "Bearer " + token(None, "admin publish")},
        "account_id not a string": {"Authorization": "Bearer " + token(None, account_id=7)},
        "scope not a string": {
            "Authorization": "Bearer "
            + _signed({"account_id": acc, "exp": int(time.time()) + 300, "scope": ["admin"]})
        },
        "unexpected audience": {"Authorization": "Bearer " + token(acc, aud="other-service")},
        # RFC 7519 NumericDate is a JSON number: PyJWT alone would take these strings.
        "exp a numeric string": {
            "Authorization": "Bearer "
            + _signed({"account_id": acc, "exp": str(int(time.time()) + 300)})
        },
        "nbf a numeric string": {"Authorization": "Bearer " + token(acc, nbf="0")},
        "iat a numeric string": {
            "Authorization": "Bearer " + token(acc, iat=str(int(time.time())))
        },
        "exp a boolean": {"Authorization": "Bearer " + _signed({"account_id": acc, "exp": True})},
        "empty account_id": {"Authorization": "Bearer " + token("")},
    }


def _signed(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256")


# --- Origin: always on, in both modes -------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "jwt"])
async def test_foreign_origins_are_refused_on_every_websocket_route(
    live_app_factory: Any, mode: str
) -> None:
    app = await live_app_factory(**(jwt_settings() if mode == "jwt" else {}))
    acc = account()
    good = token(acc, "admin")
    for route in WS_ROUTES:
        path, headers = _mode_none_access(route, acc)
        if mode == "jwt":
            path, headers = route, {"Authorization": "Bearer " + good}
        own = f"http://127.0.0.1:{port_of(app)}"
        # Not ``http(s)://host[:port]``, so foreign even where a URL parser would normalise
        # it to the service's own origin.
        for origin in (
            "http://evil.example",
            "null",
            f"http://127.0.0.1:{port_of(app) + 1}",
            f"https://127.0.0.1:{port_of(app)}",
            "file://",
            "garbage",
            own + "/",
            own + "/.",
            own + "/?",
            own + "#",
            own + "/ws",
            f"http://user@127.0.0.1:{port_of(app)}",
            "http://127.0.0.1:",
            f"http://127.0.0.1:0{port_of(app)}",
            f"ws://127.0.0.1:{port_of(app)}",
        ):
            status, _h, body = await raw_handshake(
                port_of(app), path, {**headers, "Origin": origin}
            )
            assert (status, orjson.loads(body)) == (403, ORIGIN), (route, origin)
        # aiohttp's client (its ``origin`` argument) sees the same refusal.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await app.session.ws_connect(
                app.url(path), headers=headers, origin="http://evil.example"
            )
        assert refused.value.status == 403
        # The same request from the service's own page, or from no browser at all, is let in.
        for extra in (
            {"Origin": f"http://127.0.0.1:{port_of(app)}"},
            {"Origin": f"HTTP://127.0.0.1:{port_of(app)}"},
            {},
        ):
            async with app.session.ws_connect(app.url(path), headers={**headers, **extra}) as ws:
                assert not ws.closed, (route, extra)


async def test_the_issue_scenario_a_stranger_page_reads_nothing(live_app_factory: Any) -> None:
    """The report: a page on evil.example learnt account ids on /ws/general, then read faces."""
    app = await live_app_factory()
    victim = account()
    async with app.ws("/ws", account=victim) as own:
        for path in ("/ws/general", "/1/ws/general", f"/viewer/ws?account_id={victim}"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await app.session.ws_connect(app.url(path), origin="http://evil.example")
            assert refused.value.status == 403
        async with app.session.post(
            app.url("/publish"),
            headers={"Luna-Account-Id": victim},
            json=_face_body(face_event(source="cam-1")),
        ) as resp:
            assert resp.status == 204
        assert (await recv_json(own))["event"]["source"] == "cam-1"


async def test_allowed_origins_default_ports_and_case(live_app_factory: Any) -> None:
    app = await live_app_factory(
        ws={"allowed_origins": ["https://Dash.Example.com", "http://127.0.0.1:8080"]}
    )
    for origin in (
        "https://dash.example.com",
        "https://DASH.EXAMPLE.COM:443",
        "http://127.0.0.1:8080",
    ):
        status, _h, _b = await raw_handshake(port_of(app), "/ws/general", {"Origin": origin})
        assert status == 101, origin
    for origin in (
        "http://dash.example.com",
        "https://dash.example.com:8443",
        "https://evil.dash.example.com",
        "http://127.0.0.1:8081",
    ):
        status, _h, body = await raw_handshake(port_of(app), "/ws/general", {"Origin": origin})
        assert (status, orjson.loads(body)) == (403, ORIGIN), origin


async def test_behind_a_tls_proxy_the_forwarded_origin_is_the_services_own(
    live_app_factory: Any,
) -> None:
    app = await live_app_factory()
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sender.example.com"}
    ok = await raw_handshake(
        port_of(app), "/ws/general", {**proxy, "Origin": "https://sender.example.com"}
    )
    assert ok[0] == 101
    status, _h, _b = await raw_handshake(
        port_of(app), "/ws/general", {**proxy, "Origin": "https://evil.example"}
    )
    assert status == 403
    # A proxy that keeps the public Host header works without the X-Forwarded-Host header.
    status, _h, _b = await raw_handshake(
        port_of(app),
        "/ws/general",
        {"X-Forwarded-Proto": "https", "Origin": "https://sender.example.com"},
        host="sender.example.com",
    )
    assert status == 101


async def test_two_origin_headers_must_both_be_allowed(live_app_factory: Any) -> None:
    app = await live_app_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(app))
    own = f"http://127.0.0.1:{port_of(app)}"
    writer.write(
        (
            f"GET /ws/general HTTP/1.1\r\nHost: 127.0.0.1:{port_of(app)}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {own}\r\nOrigin: http://evil.example\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403")


# --- the token corpus ------------------------------------------------------------------------


async def test_bad_tokens_get_401_on_every_business_route(live_app_factory: Any) -> None:
    app = await live_app_factory(**jwt_settings())
    acc = account()
    for name, headers in _bad_tokens(acc).items():
        for route in WS_ROUTES:
            status, got, body = await raw_handshake(port_of(app), route, headers)
            assert (status, orjson.loads(body)) == (401, UNAUTHORIZED), (name, route)
            challenge = got["www-authenticate"]
            assert challenge.startswith('Bearer realm="luna-sender"')
            assert ("invalid_token" in challenge) == (name != "no token"), (name, challenge)
            assert "luna-request-id" in got
        for route in ("/publish", "/2/publish", "/publish/general", "/1/publish/general"):
            async with app.session.post(app.url(route), headers=headers, json={}) as resp:
                assert (resp.status, await resp.json()) == (401, UNAUTHORIZED), (name, route)
        async with app.session.get(app.url("/config"), headers=headers) as resp:
            assert (resp.status, await resp.json()) == (401, UNAUTHORIZED), name


async def test_bad_token_in_the_query_parameter_and_two_tokens(live_app_factory: Any) -> None:
    app = await live_app_factory(**jwt_settings())
    acc = account()
    for bad in (
        "garbage",
        alg_none_token(acc),
        token(acc, exp_in=-60),
        token(acc, key=OTHER_SECRET),
    ):
        status, _h, body = await raw_handshake(port_of(app), f"/ws/general?token={bad}")
        assert (status, orjson.loads(body)) == (401, UNAUTHORIZED)
    good = token(acc)
    # Two tokens (header and query, or the parameter twice) are ambiguous: refused.
    for path, headers in (
        (f"/ws?token={good}", {"Authorization": "Bearer " + good}),
        (f"/ws?token={good}&token={good}", {}),
    ):
        status, _h, body = await raw_handshake(port_of(app), path, headers)
        assert (status, orjson.loads(body)) == (401, UNAUTHORIZED)


async def test_a_valid_token_opens_every_route_by_header_or_parameter(
    live_app_factory: Any,
) -> None:
    app = await live_app_factory(**jwt_settings())
    acc = account()
    good = token(acc)
    for route in WS_ROUTES:
        async with app.session.ws_connect(
            app.url(route), headers={"Authorization": "Bearer " + good}
        ) as ws:
            assert not ws.closed
        # ``token`` is not a filter: it is not refused as an unknown parameter either.
        async with app.session.ws_connect(
            app.url(route), params={"token": good, "sources": "cam-1"}
        ) as ws:
            assert not ws.closed


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_public_key_modes_pin_their_algorithm(
    live_app_factory: Any, kind: str, tmp_path: Any
) -> None:
    private, pem = rsa_pair() if kind == "rsa" else ec_pair()
    algorithm = "RS256" if kind == "rsa" else "ES256"
    path = tmp_path / "key.pem"
    path.write_text(pem)
    for key_setting in (pem, str(path)):  # inline PEM, or a path to the PEM file
        app = await live_app_factory(auth={"mode": "jwt", "jwt_public_key": key_setting})
        acc = account()
        good = token(acc, key=private, algorithm=algorithm)
        async with app.session.ws_connect(app.url("/ws"), params={"token": good}) as ws:
            assert not ws.closed
        other_private, _ = ec_pair() if kind == "rsa" else rsa_pair()
        other_algorithm = "ES256" if kind == "rsa" else "RS256"
        for bad in (
            hs256_keyed_with(pem.encode(), acc),  # algorithm confusion
            alg_none_token(acc),
            token(acc, key=other_private, algorithm=other_algorithm),
            token(acc),
        ):  # HS256 with some secret
            status, _h, body = await raw_handshake(port_of(app), f"/ws?token={bad}")
            assert (status, orjson.loads(body)) == (401, UNAUTHORIZED)


async def test_audience_and_leeway(live_app_factory: Any) -> None:
    app = await live_app_factory(**jwt_settings(jwt_audience="luna-sender", jwt_leeway=60))
    acc = account()
    for good in (
        token(acc, aud="luna-sender"),
        token(acc, aud=["x", "luna-sender"]),
        token(acc, aud="luna-sender", exp_in=-5),
    ):  # within the leeway
        status, _h, _b = await raw_handshake(port_of(app), f"/ws?token={good}")
        assert status == 101
    for bad in (token(acc), token(acc, aud="other"), token(acc, aud="luna-sender", exp_in=-600)):
        status, _h, _b = await raw_handshake(port_of(app), f"/ws?token={bad}")
        assert status == 401


# --- authorisation: accounts and scopes ------------------------------------------------------


async def test_another_accounts_header_or_parameter_is_403(live_app_factory: Any) -> None:
    app = await live_app_factory(**jwt_settings())
    acc, other = account(), account()
    for scope in ("", "admin publish"):  # admin widens general events only
        bearer = {"Authorization": "Bearer " + token(acc, scope)}
        for route in FACE_ROUTES:
            status, _h, body = await raw_handshake(
                port_of(app), route, {**bearer, "Luna-Account-Id": other}
            )
            assert (status, orjson.loads(body)) == (403, FORBIDDEN), route
            status, _h, _b = await raw_handshake(
                port_of(app), route, {**bearer, "Luna-Account-Id": acc.upper()}
            )
            assert status == 101
        status, _h, body = await raw_handshake(
            port_of(app), f"/viewer/ws?account_id={other}", bearer
        )
        assert (status, orjson.loads(body)) == (403, FORBIDDEN)
    # A token whose account is not a uuid cannot hold a face/body stream at all.
    status, _h, body = await raw_handshake(port_of(app), "/ws?token=" + token("tenant-7"))
    assert (status, orjson.loads(body)) == (403, FORBIDDEN)


async def test_face_stream_is_the_tokens_account_whatever_the_header(
    live_app_factory: Any, redis_server: Any
) -> None:
    app = await live_app_factory(redis_url=redis_server.url, **jwt_settings())
    acc, other = account(), account()
    pub = {"Authorization": "Bearer " + token(acc, "publish")}
    pub_other = {"Authorization": "Bearer " + token(other, "publish")}
    async with app.session.ws_connect(app.url("/ws"), params={"token": token(acc)}) as mine:
        async with app.session.post(
            app.url("/publish"), headers=pub_other, json=_face_body(face_event(source="other"))
        ) as resp:
            assert resp.status == 204
        async with app.session.post(
            app.url("/publish"), headers=pub, json=_face_body(face_event(source="mine"))
        ) as resp:
            assert resp.status == 204
        assert (await recv_json(mine))["event"]["source"] == "mine"
        await assert_silent(mine)


async def test_general_stream_of_a_non_admin_token_is_its_account_only(
    live_app_factory: Any, redis_server: Any
) -> None:
    app = await live_app_factory(redis_url=redis_server.url, **jwt_settings())
    acc, other = account(), account()
    admin_pub = {"Authorization": "Bearer " + token(account(), "admin publish")}
    status, _h, body = await raw_handshake(
        port_of(app), f"/ws/general?account_id={other}&token={token(acc)}"
    )
    assert (status, orjson.loads(body)) == (403, FORBIDDEN)
    async with (
        app.session.ws_connect(app.url("/ws/general"), params={"token": token(acc)}) as mine,
        app.session.ws_connect(
            app.url("/2/ws/general"), params={"token": token(acc), "account_id": acc}
        ) as mine2,
        app.session.ws_connect(
            app.url("/ws/general"), params={"token": token(other, "admin"), "account_id": acc}
        ) as admin_acc,
        app.session.ws_connect(
            app.url("/ws/general"), params={"token": token(other, "admin")}
        ) as admin_all,
    ):
        for owner in (other, None, acc):
            body = {"event": {"owner": str(owner)}, "event_type": "t"}
            if owner is not None:
                body["account_id"] = owner
            async with app.session.post(
                app.url("/publish/general"), headers=admin_pub, json=body
            ) as resp:
                assert resp.status == 204
        for ws in (mine, mine2, admin_acc):
            got = await recv_json(ws)
            assert (got["account_id"], got["event"]["owner"]) == (acc, acc)
            await assert_silent(ws)
        owners = [(await recv_json(admin_all))["event"]["owner"] for _ in range(3)]
        assert owners == [other, "None", acc]


async def test_general_recovery_needs_an_admin_token(live_app_factory: Any) -> None:
    """The general channel's offsets number every account's events in one sequence: a
    non-admin's recovering socket learnt how many events other accounts published, and when,
    and a ``since`` probe confirmed their ids (an outside pass). Refused; admins recover."""
    app = await live_app_factory(**jwt_settings())
    acc = account()
    for query in ("recover=true", "since=anything", "recover=1&since=x"):
        for route in ("/ws/general", "/2/ws/general"):
            status, _h, body = await raw_handshake(
                port_of(app), f"{route}?{query}&token={token(acc)}"
            )
            assert (status, orjson.loads(body)) == (403, FORBIDDEN), (route, query)
        async with app.session.get(
            app.url(f"/viewer/validate?kind=general&{query}"), params={"token": token(acc)}
        ) as resp:
            assert (resp.status, await resp.json()) == (403, FORBIDDEN)
    async with (
        app.session.ws_connect(
            app.url("/ws/general"), params={"token": token(acc), "recover": "false"}
        ) as plain,
        app.session.ws_connect(
            app.url("/ws/general"), params={"token": token(acc, "admin"), "recover": "true"}
        ) as admin,
    ):
        admin_pub = {"Authorization": "Bearer " + token(acc, "admin publish")}
        body = {"event": {"n": 1}, "event_type": "t", "account_id": acc}
        async with app.session.post(
            app.url("/publish/general"), headers=admin_pub, json=body
        ) as resp:
            assert resp.status == 204
        assert "offset" not in await recv_json(plain)
        assert "offset" in await recv_json(admin)
    # The face stream's offsets count one account's own events: recovery stays open there.
    async with app.session.ws_connect(
        app.url("/ws"), params={"token": token(acc), "recover": "true"}
    ) as face:
        assert not face.closed


async def test_publish_needs_scope_and_publishes_into_the_tokens_account(
    live_app_factory: Any, redis_server: Any
) -> None:
    app = await live_app_factory(redis_url=redis_server.url, **jwt_settings())
    acc, other = account(), account()

    def bearer(who: str, scope: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + token(who, scope)}

    async def post(path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        async with app.session.post(app.url(path), headers=headers, json=body) as resp:
            return resp.status, (await resp.json() if resp.status != 204 else None)

    async with (
        app.ws("/ws", params={"token": token(other)}) as victim,
        app.ws("/ws/general", params={"token": token(other, "admin")}) as victim_general,
    ):
        face = _face_body(face_event(source="forged"))
        general = {"event": {"n": 1}, "event_type": "t", "account_id": other}
        for path, headers, body in (
            ("/publish", bearer(acc, ""), face),
            ("/publish", bearer(acc, "admin"), face),
            ("/publish", {**bearer(acc, "publish"), "Luna-Account-Id": other}, face),
            ("/publish", {**bearer(acc, "admin publish"), "Luna-Account-Id": other}, face),
            ("/publish/general", bearer(acc, ""), general),
            ("/publish/general", bearer(acc, "admin"), general),
            ("/publish/general", bearer(acc, "publish"), general),
            ("/publish/general", bearer(acc, "publish"), {**general, "account_id": None}),
            (
                "/1/publish/general",
                bearer(acc, "publish"),
                {k: v for k, v in general.items() if k != "account_id"},
            ),
        ):
            assert await post(path, headers, body) == (403, FORBIDDEN), (path, headers, body)
        # The allowed ones: own account (header optional), and admin+publish for any account.
        assert await post(
            "/publish", bearer(other, "publish"), _face_body(face_event(source="own"))
        ) == (204, None)
        assert await post(
            "/publish/general", bearer(acc, "admin publish"), {**general, "event": {"n": 2}}
        ) == (204, None)
        assert (await recv_json(victim))["event"]["source"] == "own"
        assert (await recv_json(victim_general))["event"] == {"n": 2}
        await assert_silent(victim)
        await assert_silent(victim_general)


async def test_probes_stay_open_and_config_needs_admin(live_app_factory: Any) -> None:
    app = await live_app_factory(**jwt_settings())
    for path in (
        "/version",
        "/healthcheck",
        "/metrics",
        "/plugins",
        "/docs/spec",
        "/viewer",
        "/docs/dev/index.html",
    ):
        headers = {"Accept": "application/x-yaml"} if path == "/docs/spec" else {}
        async with app.session.get(app.url(path), headers=headers) as resp:
            assert resp.status == 200, path
    acc = account()
    async with app.session.get(
        app.url("/config"), headers={"Authorization": "Bearer " + token(acc, "publish")}
    ) as resp:
        assert (resp.status, await resp.json()) == (403, FORBIDDEN)
    async with app.session.get(
        app.url("/config"), headers={"Authorization": "Bearer " + token(acc, "admin")}
    ) as resp:
        assert resp.status == 200
        text = await resp.text()
    assert orjson.loads(text)["auth"]["jwt_secret"] == "********"
    assert "luna-sender-test-secret" not in text


async def test_mode_none_ignores_tokens_and_keeps_the_original_trust_model(
    memory_app: LiveApp,
) -> None:
    acc = account()
    async with memory_app.ws("/ws", account=acc, params={"token": "anything"}) as ws:
        assert not ws.closed
    async with memory_app.session.get(memory_app.url("/config")) as resp:
        assert resp.status == 200
    status, _h, body = await raw_handshake(port_of(memory_app), "/ws?token=x")
    assert status == 403 and orjson.loads(body)["error_code"] == 29001


async def test_viewer_validate_answers_what_the_handshake_would(live_app_factory: Any) -> None:
    app = await live_app_factory(**jwt_settings())
    acc = account()
    cases = [
        ({"kind": "face"}, 401, 29010),
        ({"kind": "face", "token": "garbage"}, 401, 29010),
        ({"kind": "face", "token": token(acc)}, 204, None),
        ({"kind": "face", "token": token(acc), "account_id": account()}, 403, 12033),
        ({"kind": "general", "token": token(acc), "account_id": account()}, 403, 12033),
        ({"kind": "general", "token": token(acc), "sources": "cam-1"}, 204, None),
        ({"kind": "face", "token": token(acc), "gender": "7"}, 400, 12012),
    ]
    for params, status, code in cases:
        async with app.session.get(app.url("/viewer/validate"), params=params) as resp:
            assert resp.status == status, params
            if code is not None:
                assert (await resp.json())["error_code"] == code


def _face_body(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "events": [event],
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }


async def test_front_door_account_filter_cannot_be_widened(memory_app: LiveApp) -> None:
    """docs/security.md's nginx appends ``&account_id=<authenticated>`` to /ws/general: with no
    client query that is ``?&account_id=A`` (accepted); a client's own account_id beside it is a
    repeated parameter, refused rather than widened."""
    acc = account()
    status, _h, _b = await raw_handshake(port_of(memory_app), f"/ws/general?&account_id={acc}")
    assert status == 101
    status, _h, body = await raw_handshake(
        port_of(memory_app), f"/ws/general?account_id={account()}&account_id={acc}"
    )
    assert status == 400 and orjson.loads(body)["error_code"] == 12012
