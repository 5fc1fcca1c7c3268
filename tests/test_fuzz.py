"""Hostile input: hypothesis fuzzing of both websocket query strings and both publish bodies.

Whatever arrives, the answer is a LUNA error or success — never a 5xx, never a crash — and a
subscriber of an account nobody publishes to receives nothing (isolation).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from luna_sender.app import build_app
from luna_sender.config.settings import Settings
from luna_sender.filters.events import FACE_SPECS
from luna_sender.filters.general import GENERAL_SPECS

from .helpers import account

pytestmark = pytest.mark.slow
# Derandomized, so every run tries the same queries: 4,000 of them (10,000 took 40 s of CI's
# 30-minute budget; the suite has never failed on one).
FUZZ = settings(
    max_examples=4_000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
BODY_FUZZ = settings(
    max_examples=1_500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


class Harness:
    """One app on a real port, driven from hypothesis's synchronous test bodies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = TestServer(build_app(Settings()), host="127.0.0.1")
        self.loop.run_until_complete(self.server.start_server())
        self.session = self.loop.run_until_complete(self._session())
        self.protected = account()
        self.watcher = self.loop.run_until_complete(
            self.session.ws_connect(
                self.server.make_url("/ws"), headers={"Luna-Account-Id": self.protected}
            )
        )
        # Read continuously (answering the server's heartbeat pings) for the whole module.
        self.leaked: list[Any] = []
        self.reader = self.loop.create_task(self._watch())

    async def _watch(self) -> None:
        async for msg in self.watcher:
            self.leaked.append(msg.data)

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.reader.cancel()
        self.run(self.watcher.close())
        self.run(self.session.close())
        self.run(self.server.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def _check_error(status: int, body: bytes, allowed: set[int]) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        err = orjson.loads(body)
        assert set(err) == {"error_code", "desc", "detail", "link"}
        assert err["error_code"] in allowed, err


names = st.one_of(
    st.sampled_from(sorted({*FACE_SPECS, *GENERAL_SPECS})),
    st.sampled_from(["meta.", "event.", "meta.a__", "event.a.b__in:", "event.x:integer"]).flatmap(
        lambda p: st.text(max_size=12).map(lambda s: p + s)
    ),
    st.text(max_size=20),
)
values = st.one_of(
    st.text(max_size=40),
    st.lists(st.text(max_size=6), max_size=6).map(",".join),
    st.integers(-200, 200).map(str),
    st.floats().map(str),
)
queries = st.lists(st.tuples(names, values), max_size=6).map(
    lambda pairs: "&".join(f"{quote(k, safe='')}={quote(v, safe=',')}" for k, v in pairs)
)


async def _get(h: Harness, path: str, query: str, headers: dict[str, str]) -> tuple[int, bytes]:
    url = URL(str(h.server.make_url(path)) + ("?" + query if query else ""), encoded=True)
    async with h.session.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


@FUZZ
@given(query=queries)
def test_fuzz_face_query(harness: Harness, query: str) -> None:
    status, body = harness.run(_get(harness, "/ws", query, {"Luna-Account-Id": account()}))
    # 12046: a valid query without the upgrade headers; everything else must be 12012.
    _check_error(status, body, {12012, 12046})
    assert status == 400


@FUZZ
@given(query=queries)
def test_fuzz_general_query(harness: Harness, query: str) -> None:
    status, body = harness.run(_get(harness, "/ws/general", query, {}))
    _check_error(status, body, {12012, 12046})
    assert status == 400


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
face_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "events": st.one_of(
                st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=3),
                json_values,
            ),
            "handler_id": st.one_of(st.text(max_size=10), json_values),
            "event_create_time": st.one_of(st.just("2026-01-01T00:00:00Z"), json_values),
            "event_end_time": st.one_of(st.just("2026-01-01T00:00:00+03:00"), json_values),
        },
    ),
)
general_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "event": json_values,
            "event_type": st.one_of(st.text(max_size=10), json_values),
            "account_id": st.one_of(st.none(), st.uuids().map(str), json_values),
            "event_create_time": st.one_of(st.just("2026-01-01T00:00:00Z"), json_values),
        },
    ),
)
raw_bodies = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))


async def _post(h: Harness, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with h.session.post(
        h.server.make_url(path), data=data, headers={"Content-Type": "application/json", **headers}
    ) as resp:
        return resp.status, await resp.read()


@BODY_FUZZ
@given(body=st.one_of(face_bodies.map(lambda v: json.dumps(v).encode()), raw_bodies))
def test_fuzz_publish_events(harness: Harness, body: bytes) -> None:
    status, resp = harness.run(_post(harness, "/publish", body, {"Luna-Account-Id": account()}))
    _check_error(status, resp, {12002, 12022})


@BODY_FUZZ
@given(body=st.one_of(general_bodies.map(lambda v: json.dumps(v).encode()), raw_bodies))
def test_fuzz_publish_general(harness: Harness, body: bytes) -> None:
    status, resp = harness.run(_post(harness, "/publish/general", body, {}))
    _check_error(status, resp, {12002, 12022})


def test_isolation_held_during_fuzzing(harness: Harness) -> None:
    harness.run(asyncio.sleep(0.3))
    assert not harness.watcher.closed, "the watching subscriber lost its socket"
    assert harness.leaked == [], f"fuzzed events reached another account: {harness.leaked[:3]}"
