"""Property: across random accounts, tokens and filters, no event reaches another account's socket.

One service in jwt mode on a real port with a real redis-server; every example opens real
websockets (token by header or by parameter, with or without admin, asking for its own or another
account), publishes through the HTTP routes (some publishes forged: another account's header, a
non-admin token naming another account), then checks each socket received exactly what its
token and filters allow — nothing of another account, nothing forged, nothing missing.

The end of an example is proven by markers published last: a single Redis connection delivers in
publication order, so once a socket has its markers every earlier frame for it has arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luna_sender.app import build_app
from luna_sender.config.settings import Settings

from .jwtkit import jwt_settings, token

SOURCES = ("cam-1", "cam-2", "cam-3")
MARKER = "marker"
PROPERTY = settings(
    max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
_ids = itertools.count()


@dataclass
class Sub:
    owner: int  # index of the token's account
    kind: str  # face | general
    admin: bool
    asks: int | None  # account index named by header (face) or account_id (general); None: none
    sources: tuple[str, ...] | None
    by_header: bool
    frames: list[Any] = field(default_factory=list)


@dataclass
class Pub:
    kind: str  # face | general
    owner: int | None  # account the event belongs to (general: None = no account)
    publisher: int  # index of the publishing token's account
    source: str

    def account(self) -> int | None:
        """Whose event it is: face without a header goes into the publisher's account."""
        if self.kind == "face" and self.owner is None:
            return self.publisher
        return self.owner


subs = st.builds(
    Sub,
    owner=st.integers(0, 2),
    kind=st.sampled_from(["face", "general"]),
    admin=st.booleans(),
    asks=st.one_of(st.none(), st.integers(0, 2)),
    sources=st.one_of(
        st.none(), st.sets(st.sampled_from(SOURCES), min_size=1).map(lambda s: tuple(sorted(s)))
    ),
    by_header=st.booleans(),
)
pubs = st.builds(
    Pub,
    kind=st.sampled_from(["face", "general"]),
    owner=st.one_of(st.none(), st.integers(0, 2)),
    publisher=st.integers(0, 2),
    source=st.sampled_from(SOURCES),
)


class Harness:
    """The service and a client session on one loop, driven from hypothesis's sync bodies."""

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = TestServer(
            build_app(Settings(redis_url=redis_url, **jwt_settings())), host="127.0.0.1"
        )
        self.loop.run_until_complete(self.server.start_server())
        self.session = self.loop.run_until_complete(self._session())

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.run_until_complete(self.server.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(redis_server: Any) -> Iterator[Harness]:
    h = Harness(redis_server.url)
    yield h
    h.close()


def refused(sub: Sub, accounts: list[str]) -> bool:
    """What the policy says before any socket opens: asking for another account is 403."""
    if sub.asks is None or sub.asks == sub.owner:
        return False
    return sub.kind == "face" or not sub.admin


def allowed_publish(pub: Pub) -> bool:
    # Publisher tokens carry "publish" only (no admin): face events go into the token's account
    # (a header naming another is 403); general events must name the token's account.
    return pub.account() == pub.publisher


def receives(sub: Sub, pub: Pub, accounts: list[str]) -> bool:
    """Does ``sub`` get ``pub``? Stated from the contract, not from the code."""
    if not allowed_publish(pub) or sub.kind != pub.kind:
        return False
    if sub.sources is not None and pub.source not in sub.sources:
        return False
    if sub.kind == "face":
        return pub.account() == sub.owner
    if sub.admin:
        return sub.asks is None or pub.account() == sub.asks
    return pub.account() == sub.owner


async def _open(h: Harness, sub: Sub, accounts: list[str]) -> aiohttp.ClientWebSocketResponse:
    scope = "admin" if sub.admin else ""
    tok = token(accounts[sub.owner], scope)
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    if sub.by_header:
        headers["Authorization"] = "Bearer " + tok
    else:
        params["token"] = tok
    if sub.sources is not None:
        params["sources"] = ",".join((*sub.sources, MARKER))
    path = "/ws" if sub.kind == "face" else "/ws/general"
    if sub.asks is not None:
        if sub.kind == "face":
            headers["Luna-Account-Id"] = accounts[sub.asks]
        else:
            params["account_id"] = accounts[sub.asks]
    return await h.session.ws_connect(h.url(path), headers=headers, params=params)


async def _publish(h: Harness, pub: Pub, accounts: list[str], n: int) -> int:
    publisher = accounts[pub.publisher]
    if pub.kind == "face":
        owner = accounts[pub.owner if pub.owner is not None else pub.publisher]
        headers = {"Authorization": "Bearer " + token(publisher, "publish")}
        if pub.owner is not None:
            headers["Luna-Account-Id"] = owner
        body: dict[str, Any] = {
            "events": [{"event_id": str(n), "source": pub.source, "meta": {"owner": owner}}],
            "handler_id": "h",
            "event_create_time": "2026-01-01T00:00:00Z",
            "event_end_time": "2026-01-01T00:00:00Z",
        }
        path = "/publish"
    else:
        headers = {"Authorization": "Bearer " + token(publisher, "publish")}
        body = {"event": {"n": n, "source": pub.source}, "event_type": "t"}
        if pub.owner is not None:
            body["account_id"] = accounts[pub.owner]
        path = "/publish/general"
    async with h.session.post(h.url(path), headers=headers, json=body) as resp:
        return resp.status


async def _markers(h: Harness, accounts: list[str]) -> None:
    admin = {"Authorization": "Bearer " + token(accounts[0], "admin publish")}
    for acc in accounts:
        headers = {"Authorization": "Bearer " + token(acc, "publish")}
        body = {
            "events": [{"event_id": MARKER, "source": MARKER}],
            "handler_id": "h",
            "event_create_time": "2026-01-01T00:00:00Z",
            "event_end_time": "2026-01-01T00:00:00Z",
        }
        async with h.session.post(h.url("/publish"), headers=headers, json=body) as resp:
            assert resp.status == 204
    for acc in [*accounts, None]:
        general: dict[str, Any] = {"event": {"n": MARKER, "source": MARKER}, "event_type": "t"}
        if acc is not None:
            general["account_id"] = acc
        async with h.session.post(h.url("/publish/general"), headers=admin, json=general) as resp:
            assert resp.status == 204


def _marker_count(sub: Sub) -> int:
    if sub.kind == "face" or not sub.admin or sub.asks is not None:
        return 1
    return 4  # an admin without account_id sees every account's marker and the account-less one


async def _collect(ws: aiohttp.ClientWebSocketResponse, sub: Sub) -> None:
    expected = _marker_count(sub)
    seen = 0
    while seen < expected:
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = orjson.loads(msg.data)
        source = frame["event"]["source"]
        if source == MARKER:
            seen += 1
        else:
            sub.frames.append(frame)


async def _example(h: Harness, sockets: list[Sub], events: list[Pub]) -> None:
    accounts = [str(uuid.uuid4()) for _ in range(3)]
    open_ws: list[tuple[Sub, aiohttp.ClientWebSocketResponse]] = []
    try:
        for sub in sockets:
            if refused(sub, accounts):
                with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                    await _open(h, sub, accounts)
                assert exc.value.status == 403
            else:
                open_ws.append((sub, await _open(h, sub, accounts)))
        numbered = []
        for pub in events:
            n = next(_ids)
            status = await _publish(h, pub, accounts, n)
            assert status == (204 if allowed_publish(pub) else 403), (pub, status)
            numbered.append((n, pub))
        await _markers(h, accounts)
        await asyncio.wait_for(asyncio.gather(*(_collect(ws, sub) for sub, ws in open_ws)), 20)
        for sub, _ws in open_ws:
            mine = accounts[sub.owner]
            for frame in sub.frames:
                if sub.kind == "face":  # the one promise that matters most, stated plainly
                    assert frame["event"]["meta"]["owner"] == mine, (sub, frame)
                elif not sub.admin:
                    assert frame["account_id"] == mine, (sub, frame)
            got = sorted(
                int(f["event"]["event_id"]) if sub.kind == "face" else f["event"]["n"]
                for f in sub.frames
            )
            want = sorted(n for n, pub in numbered if receives(sub, pub, accounts))
            assert got == want, (sub, numbered)
    finally:
        for _sub, ws in open_ws:
            await ws.close()


@PROPERTY
@given(sockets=st.lists(subs, min_size=1, max_size=6), events=st.lists(pubs, max_size=8))
def test_no_event_reaches_another_accounts_socket(
    harness: Harness, sockets: list[Sub], events: list[Pub]
) -> None:
    for sub in sockets:
        sub.frames = []
    harness.loop.run_until_complete(_example(harness, sockets, events))
