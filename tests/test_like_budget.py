"""The LIKE budget: many sockets with distinct costly patterns no longer add up without bound.

Each costly ``nlike`` stays linear, but 150 sockets x 64 distinct ones held the loop 3.5 s per
event. Now a socket has at most ``limits.like_filters_max`` like/nlike filters (12012), the
service at most ``limits.like_scanning_max`` scanning ones over its distinct filter groups
(503/29012), and values are inspected up to ``limits.like_value_max_chars``. The attack, scaled
to those caps, runs here against a real service while /healthcheck is polled.
"""

from __future__ import annotations

import asyncio
import itertools
import string
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from luna_sender.config.settings import Settings
from luna_sender.filters.base import FilterError, Limits
from luna_sender.filters.general import compile_general

from .conftest import LiveApp
from .helpers import UPGRADE, RedisServer, Service

DEFAULTS = Settings().limits
PER_SOCKET = DEFAULTS.like_filters_max
TOTAL = DEFAULTS.like_scanning_max
_RUN = (DEFAULTS.like_pattern_max_chars - 4) // (DEFAULTS.like_wildcards_max - 2) - 1
_TAILS = ["".join(p) for p in itertools.product(string.ascii_letters[1:] + string.digits, repeat=2)]


def costly(n: int) -> str:
    """The costliest shape the caps allow (a wide ``_`` segment scanned by shift-and against a
    run of ``a`` that never completes), made distinct by its last two characters."""
    pattern = "%" + ("a" * _RUN + "_") * (DEFAULTS.like_wildcards_max - 2) + _TAILS[n] + "%"
    assert len(pattern) <= DEFAULTS.like_pattern_max_chars
    return pattern


def _socket_filters(sock: int) -> dict[str, str]:
    return {f"event.f{i}__nlike": costly(sock * PER_SOCKET + i) for i in range(PER_SOCKET)}


def test_defaults_bound_one_event_to_well_under_100_ms() -> None:
    """The worst the defaults allow, in-process: every allowed scanning filter (distinct) against
    an event carrying the longest inspected values, all scanned to the end (nlike hits)."""
    groups = [
        compile_general(list(_socket_filters(s).items()), Limits())
        for s in range(TOTAL // PER_SOCKET)
    ]
    assert sum(g.scanning_likes for g in groups) == TOTAL
    event: Any = type(
        "Msg",
        (),
        {"event": {f"f{i}": "a" * DEFAULTS.like_value_max_chars for i in range(PER_SOCKET)}},
    )()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        assert all(g.match(event) for g in groups)
        best = min(best, time.perf_counter() - started)
    print(f"worst event: {best * 1000:.1f} ms")
    assert best < 0.1


def test_per_connection_cap_names_the_parameter() -> None:
    query = [(f"event.f{i}__like", f"%x{i}%") for i in range(PER_SOCKET + 1)]
    compile_general(query[:-1], Limits())
    with pytest.raises(FilterError) as exc:
        compile_general(query, Limits())
    assert exc.value.param == f"event.f{PER_SOCKET}__like"


async def test_per_connection_cap_is_12012(memory_app: LiveApp) -> None:
    params = {f"event.f{i}__nlike": f"%{i}%" for i in range(PER_SOCKET + 1)}
    async with memory_app.session.get(memory_app.url("/ws/general"), params=params) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error_code"] == 12012
    assert body["detail"] == f"Bad query parameters 'event.f{PER_SOCKET}__nlike'"


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Service]:
    svc = Service("--redis-url", redis_server.url)
    yield svc
    svc.close()


async def _watch(url: str, stop: asyncio.Event) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(
                url + "/healthcheck", timeout=aiohttp.ClientTimeout(total=30)
            ) as resp:
                assert resp.status == 200
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    return latencies


async def _attack(svc: Service) -> None:
    ws_url = svc.url.replace("http", "ws") + "/ws/general"
    http_url = svc.url + "/ws/general"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        attackers = [
            await session.ws_connect(ws_url, params=_socket_filters(s))
            for s in range(TOTAL // PER_SOCKET)
        ]
        # Beyond the service-wide cap: refused with the documented error, before the 101.
        extra = _socket_filters(TOTAL // PER_SOCKET)
        async with session.get(http_url, params=extra, headers=UPGRADE) as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["error_code"] == 29012
        assert body["detail"] == (
            f"Too many costly like/nlike filters in the service (limit {TOTAL})"
        )
        # The same filters as a live socket share its group and cost nothing more.
        twin = await session.ws_connect(ws_url, params=_socket_filters(0))
        # Legitimate use is untouched: many sockets with a few short patterns each.
        plain = [
            await session.ws_connect(
                ws_url, params={f"event.f{i}__like": f"%{n}-{i}%" for i in range(3)}
            )
            for n in range(40)
        ]

        stop = asyncio.Event()
        watch = asyncio.create_task(_watch(svc.url, stop))
        longest = "a" * DEFAULTS.like_value_max_chars
        for n in range(5):
            body = {
                "event_type": "t",
                "event": {"id": f"e{n}", **{f"f{i}": longest for i in range(PER_SOCKET)}},
            }
            async with session.post(
                svc.url + "/publish/general",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 204, await resp.text()
        for ws in [*attackers, twin]:
            got = [
                orjson.loads((await ws.receive(timeout=60)).data)["event"]["id"] for _ in range(5)
            ]
            assert got == [f"e{n}" for n in range(5)]
        stop.set()
        latencies = await watch
        print(f"healthcheck: {len(latencies)} answers, slowest {max(latencies):.3f} s")
        assert max(latencies) < 2.0, latencies

        # A closed group gives its share back: the refused socket now gets in.
        await attackers[-1].close()
        await twin.close()  # not the last of group 0: that group stays
        for _ in range(100):
            async with session.get(http_url, params=extra, headers=UPGRADE) as resp:
                if resp.status != 503:
                    break
            await asyncio.sleep(0.05)
        late = await session.ws_connect(ws_url, params=extra)
        for ws in [*attackers[:-1], *plain, late]:
            await ws.close()


def test_attack_scaled_to_the_caps_keeps_the_service_answering(service: Service) -> None:
    asyncio.run(_attack(service))
    assert "Traceback" not in service.log()
