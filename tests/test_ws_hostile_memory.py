"""Hostile clients and memory: a ping flood is bounded by the queue cap, and a closed socket's
objects are freed by reference counting (outside pass: pingflood.py, filtermem.py).

- A client sending pings and reading nothing grew the pong backlog by its bandwidth (+178 MB
  per socket in 6 s) until the stall sweeper came: pongs now pass ``ws.queue_max_bytes`` like
  events, and the socket is evicted 1008 as a slow consumer and no longer read.
- A closed socket's Connection, compiled filter and protocol were a reference cycle, kept until
  the GC policy's planned full pass (after ``gc.min_churn`` closes): 730 MB per 300 sockets
  with large filters.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from luna_sender.delivery.connection import Connection
from luna_sender.delivery.frames import CLOSE, PING, TEXT, client_frame
from luna_sender.filters.base import CompiledFilter
from luna_sender.web import streams
from luna_sender.web.context import CTX

from .helpers import (
    LARGE_SOURCES,
    Service,
    account,
    face_event,
    metric,
    publish_face,
    raw_upgrade,
    upgrade_head,
)
from .rawws import RawWS

EVICTED = 'ws_closed_total{reason="slow_consumer"}'


async def test_ping_flood_is_evicted_at_the_cap() -> None:
    """Evicted once the pong backlog passes a 64 KiB cap, long before the 30 s stall timeout;
    then not read (its flood stops); a healthy reader of the same account misses nothing."""
    cap = str(1 << 16)
    svc = Service(
        env={
            "LUNA_SENDER_WS__QUEUE_MAX_BYTES": cap,
            "LUNA_SENDER_LIMITS__BUS_MESSAGE_MAX_BYTES": cap,
            "LUNA_SENDER_LIMITS__PUBLISH_BODY_MAX_BYTES": cap,
            "LUNA_SENDER_WS__STALL_TIMEOUT": "30",
            "LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "3",
        }
    )
    acc = account()
    headers = {"Luna-Account-Id": acc}
    healthy = await RawWS.connect(svc.port, headers=headers)
    flooder = await RawWS.connect(svc.port, headers=headers, rcvbuf=4096)
    got: list[str] = []
    sent = [0]

    async def read() -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while (frame := await healthy.recv_data()).opcode == TEXT:
                got.append(orjson.loads(frame.payload)["event"]["event_id"])

    async def flood() -> None:
        burst = client_frame(PING, b"p" * 125) * 512  # 67 KB of pings per write
        with contextlib.suppress(ConnectionError):
            while True:
                flooder.writer.write(burst)
                await flooder.writer.drain()
                sent[0] += len(burst)

    tasks = [asyncio.create_task(read())]
    published: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def publish() -> None:
                event = face_event()
                published.append(event["event_id"])
                await publish_face(session, svc.url, acc, [event])

            for _ in range(5):
                await publish()
            # No events meanwhile: only the pongs can pass the cap.
            tasks.append(asyncio.create_task(flood()))
            started = time.monotonic()
            while metric(svc.url, EVICTED) < 1:
                assert time.monotonic() - started < 10, "the ping flooder was not evicted"
                await asyncio.sleep(0.05)
            # Not read once evicted (its Close waits behind the backlog for 3 s, then TCP is
            # cut): what it sends stops at what the kernel buffers take.
            await asyncio.sleep(0.8)
            stopped = sent[0]
            for _ in range(10):
                await publish()
                await asyncio.sleep(0.08)
            assert sent[0] == stopped, "an evicted flooder is still being read"
        deadline = time.monotonic() + 5
        while len(got) < len(published) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert got == published  # every event, once, in order
        while not re.search(r"websocket \d+ closed: .* code=1008 ", svc.log()):
            assert time.monotonic() < deadline + 5, svc.log()[-2000:]
            await asyncio.sleep(0.1)
        closed = re.findall(r"websocket \d+ closed: .* code=(\d+) .*", svc.log())
        assert closed == ["1008"], closed  # the healthy one is still open
        assert re.search(
            r"code=1008 delivered=\d+ slow consumer: outgoing queue overflow", svc.log()
        )
        assert metric(svc.url, EVICTED) == 1
    finally:
        for task in tasks:
            task.cancel()
        for ws in (healthy, flooder):
            ws.writer.transport.abort()
        assert svc.terminate() == 0, svc.log()[-2000:]


def _alive(kind: type) -> int:
    return sum(type(obj) is kind for obj in gc.get_objects())


async def test_a_closed_socket_is_freed_without_a_cyclic_pass(
    live_app_factory: Callable[..., Any],
) -> None:
    """With the collector off, a closed socket's Connection and compiled filter are gone as
    soon as its close is done: by the client's Close or by a dropped TCP connection."""
    app = await live_app_factory(gc={"freeze_interval": 0})  # frozen objects escape get_objects
    hub = app.app[CTX].hub
    port = app.server.port
    assert port is not None
    query = "&".join(
        f"meta.k{k}__in=" + ",".join(f"v{k}x{j}" for j in range(200)) for k in range(8)
    )
    gc.collect()
    gc.disable()
    try:
        for how in ("close frame", "tcp drop"):
            before = _alive(Connection), _alive(CompiledFilter)
            ws = await RawWS.connect(port, "/ws?" + query, {"Luna-Account-Id": account()})
            assert len(hub.connections) == 1
            assert _alive(Connection) == before[0] + 1
            # Let the stall sweeper walk the open socket: its sleeping frame kept the last socket
            # it walked, closed since, alive until it walked another (seen in a full-suite run).
            await asyncio.sleep(1.2)
            if how == "close frame":
                ws.send(CLOSE, struct.pack("!H", 1000))
                assert (await asyncio.wait_for(ws.recv(), 5)).close_code == 1000
            else:
                ws.writer.transport.abort()
            deadline = time.monotonic() + 5
            while hub.connections or streams._ENDING:
                assert time.monotonic() < deadline, how
                await asyncio.sleep(0.01)
            ws.writer.transport.abort()
            # The transport's own close callbacks may take a few loop turns on a busy machine;
            # with the collector off, only reference counting can free them meanwhile.
            deadline = time.monotonic() + 5
            while (_alive(Connection), _alive(CompiledFilter)) != before:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert (_alive(Connection), _alive(CompiledFilter)) == before, how
    finally:
        gc.enable()


async def test_a_burst_of_huge_upgrades_gives_its_memory_back() -> None:
    """1,000 simultaneous upgrades with 79 KB queries (refused: too many list items) left
    60-240 MB of resident memory for good, freed by Python but kept by the C allocator; once
    the burst is over the housekeeping hands it back (docs/reliability.md, "Memory after a
    burst")."""
    from .test_faults_clients import rss_bytes

    svc = Service("--log-level", "INFO")
    query = "sources=" + ",".join(f"c{i:05d}" for i in range(13_000))[:79_000]
    head = upgrade_head(query, account())

    async def upgrade() -> bytes:
        status, writer = await raw_upgrade(svc.port, head, 30)
        writer.close()
        return status

    try:
        await asyncio.sleep(1.5)  # past start-up's own growth
        before = rss_bytes(svc.proc.pid)
        statuses = await asyncio.gather(*(upgrade() for _ in range(1000)))
        assert set(statuses) == {b"HTTP/1.1 400 Bad Request"}
        deadline = time.monotonic() + 8
        while (grown := rss_bytes(svc.proc.pid) - before) >= 16 << 20:
            assert time.monotonic() < deadline, f"still {grown / 1e6:.0f} MB above the start"
            await asyncio.sleep(0.2)
        # The trim's line may come a moment after the fall it caused is seen (a loaded host)
        while "MB of freed heap to the system" not in svc.log():
            assert time.monotonic() < deadline + 4, svc.log()[-2000:]
            await asyncio.sleep(0.2)
    finally:
        assert svc.terminate() == 0


async def test_memory_freed_after_a_trim_is_given_back_too() -> None:
    """An outside pass held 1,000 accepted sockets with 128 KB queries: a trim ran while they
    were open, and once they closed the process kept 332 MB with no socket open, because only a
    rise in resident size led to a trim. A fall leads to one now."""
    from .test_faults_clients import rss_bytes

    svc = Service("--log-level", "INFO")
    head = upgrade_head(f"sources={LARGE_SOURCES}", account())

    try:
        await asyncio.sleep(1.5)
        before = rss_bytes(svc.proc.pid)
        opened = []
        for _ in range(4):  # 4 x 150, so the handshakes do not all queue at once
            opened += await asyncio.gather(*(raw_upgrade(svc.port, head) for _ in range(150)))
        assert {status for status, _ in opened} == {b"HTTP/1.1 101 Switching Protocols"}
        held = rss_bytes(svc.proc.pid) - before
        assert held > 100 << 20, held  # what the sockets' filters hold
        deadline = time.monotonic() + 6
        while "MB of freed heap to the system" not in svc.log():  # the trim while they are open
            assert time.monotonic() < deadline, svc.log()[-2000:]
            await asyncio.sleep(0.2)
        for _, writer in opened:
            writer.transport.abort()
        # The fall of the resident size once they close leads to a second trim (before, none)
        deadline = time.monotonic() + 10
        while svc.log().count("MB of freed heap to the system") < 2:
            assert time.monotonic() < deadline, svc.log()[-2000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        grown = rss_bytes(svc.proc.pid) - before
        assert grown < held / 2, (grown, held)
    finally:
        assert svc.terminate() == 0
