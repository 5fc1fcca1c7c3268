"""The websocket connection's life at its edges: large events, eviction, handshakes, shutdown.

The service runs as a real subprocess; clients are aiohttp's own client (what the platform's
client library builds on) and raw sockets (tests/rawws.py) where a test needs to see frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import struct
import time
import urllib.request

import aiohttp
import orjson
import pytest

from .helpers import RedisServer, Service, account, face_event, face_message
from .rawws import RawWS

pytestmark = pytest.mark.slow


def metric_text(svc: Service) -> str:
    with urllib.request.urlopen(svc.url + "/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(svc: Service, pattern: str) -> float:
    match = re.search(pattern + r" ([0-9.e+]+)", metric_text(svc))
    return float(match.group(1)) if match else 0.0


# --- item 5: a reader that keeps up is never evicted, however large the accepted events ---------

async def _read_all(ws: aiohttp.ClientWebSocketResponse, sizes: list[int]) -> int | None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            sizes.append(len(msg.data))
    return ws.close_code


async def test_fast_reader_gets_large_events_and_batches() -> None:
    redis_server = RedisServer()
    redis_server.start()
    svc = Service("--redis-url", redis_server.url)
    acc = account()
    try:
        async with aiohttp.ClientSession() as session:
            general = await session.ws_connect(svc.ws_url + "/ws/general", max_msg_size=0)
            face = await session.ws_connect(svc.ws_url + "/ws", max_msg_size=0,
                                            headers={"Luna-Account-Id": acc})
            general_sizes: list[int] = []
            face_sizes: list[int] = []
            readers = [asyncio.create_task(_read_all(general, general_sizes)),
                       asyncio.create_task(_read_all(face, face_sizes))]
            big = "x" * 1_900_000
            for i in range(10):
                async with session.post(svc.url + "/publish/general", json={
                        "event": {"i": i, "pad": big}, "event_type": "big"}) as resp:
                    assert resp.status == 204
            async with session.post(svc.url + "/publish/general", json={
                    "event": {"i": 10, "pad": "y" * (9 * 1024 * 1024)},
                    "event_type": "big"}) as resp:
                assert resp.status == 204
            # One handler batch of 10 events of 1.9 MB: 19 MB of frames written in one go.
            batch = face_message([face_event(i=i, pad=big) for i in range(10)])
            assert redis_server.client().publish(f"luna-sender:{acc}", batch) == 1
            deadline = time.monotonic() + 60
            while (len(general_sizes) < 11 or len(face_sizes) < 10) \
                    and time.monotonic() < deadline:
                assert not any(r.done() for r in readers), "a fast reader was closed"
                await asyncio.sleep(0.1)
            assert len(general_sizes) == 11 and max(general_sizes) > 9 * 1024 * 1024
            assert len(face_sizes) == 10
            assert metric(svc, r'ws_closed_total\{reason="slow_consumer"\}') == 0
            await general.close()
            await face.close()
            await asyncio.gather(*readers)
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]
        redis_server.close()


def test_queue_cap_below_the_largest_message_is_a_start_up_error() -> None:
    svc = Service(env={"LUNA_SENDER_WS__QUEUE_MAX_BYTES": str(8 * 1024 * 1024)}, wait=False)
    assert svc.proc.wait(30) != 0
    assert "ws.queue_max_bytes" in svc.log()
