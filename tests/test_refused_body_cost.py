"""A refused publish body costs the loop little (outside tester, round 1).

The error path re-parses a body orjson refused with the stdlib, to name the offending value. It
did so up to 1 MiB: ``[1,1,...,NaN]`` of 1 MiB held the loop 0.4 s per request and 30 at once
stalled /healthcheck 10 s. Now only bodies up to ``strictjson.EXPLAIN_MAX_BYTES`` are re-parsed. The
attack runs against a real service process while /healthcheck is polled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from luna_sender.web import strictjson

from .helpers import RedisServer, Service, account

TAIL = b'NaN]}],"handler_id":"h","event_create_time":"t","event_end_time":"t"}'
HEAD = b'{"events":[{"event_id":"x","a":['


def costliest(size: int) -> bytes:
    """The costliest shape to re-parse and walk: a flat array of one-digit numbers, then NaN."""
    return HEAD + b"1," * ((size - len(HEAD) - len(TAIL)) // 2) + TAIL


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[Service]:
    svc = Service("--redis-url", redis_server.url)
    yield svc
    svc.close()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict]:
    async with session.post(
        url + "/publish",
        data=body,
        headers={"Luna-Account-Id": account(), "Content-Type": "application/json"},
    ) as resp:
        return resp.status, await resp.json()


async def _attack(url: str) -> None:
    at_cap = costliest(strictjson.EXPLAIN_MAX_BYTES)
    assert len(at_cap) <= strictjson.EXPLAIN_MAX_BYTES
    big = costliest(1024 * 1024)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        latencies: list[float] = []
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                started = time.monotonic()
                async with session.get(
                    url + "/healthcheck", timeout=aiohttp.ClientTimeout(total=60)
                ) as resp:
                    assert resp.status == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        for body in (big, at_cap):
            answers = await asyncio.gather(*(_post(session, url, body) for _ in range(30)))
            for status, payload in answers:
                assert status == 400
                assert set(payload) == {"error_code", "desc", "detail", "link"}
                if body is at_cap:  # still re-parsed: the path is named
                    assert payload["error_code"] == 12022
                    assert "Path: 'events.0.a." in payload["detail"], payload
                else:
                    assert payload["error_code"] == 12002
        done.set()
        await watcher
    print(f"healthcheck: {len(latencies)} answers, slowest {max(latencies):.3f} s")
    # Before: 30 x 0.4 s of loop in a row. A generous bound for a loaded 2-core machine.
    assert max(latencies) < 3.0, latencies


def test_concurrent_refused_bodies_leave_the_loop_free(service: Service) -> None:
    asyncio.run(_attack(service.url))
    assert "Traceback" not in service.log()


def test_overflowing_integer_beyond_the_cap_is_12022_without_path(service: Service) -> None:
    """orjson itself says why (a number beyond a double), so the answer stays 12022."""
    body = (
        HEAD + b"1," * (strictjson.EXPLAIN_MAX_BYTES // 2) + b"1" * 400 + TAIL.replace(b"NaN", b"")
    )

    async def run() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session:
            return await _post(session, service.url, body)

    status, payload = asyncio.run(run())
    assert status == 400
    assert payload["error_code"] == 12022
    assert payload["detail"] == (
        f"Failed to validate input json. Path: '',  message: '{strictjson.OUT_OF_RANGE}'"
    )
