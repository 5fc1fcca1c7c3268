"""Subscriber load generator: processes holding many raw websockets, measuring latency.

Raw asyncio sockets keep the client cheap; each frame's latency is now minus the publisher
timestamp embedded in the event (``"bench_ts":<unix time>``). A process reports its own CPU
time so the harness can flag a run where the client, not the server, was the bottleneck.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import re
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from luna_sender.delivery.frames import CLOSE, PING, PONG, TEXT, FrameParser, client_frame

TS_RE = re.compile(rb'"bench_ts":\s*([0-9.]+)')


@dataclass
class Sub:
    """One subscriber: which peer protocol, path (with query), headers, rooms to join."""

    protocol: str  # "ws" (luna, naive, broadcaster, nchan) or "socketio"
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    rooms: list[str] = field(default_factory=list)
    ready_marker: bytes | None = None  # a first frame that means "subscribed" (broadcaster)


class WSClient(FrameParser, asyncio.Protocol):
    """One raw websocket: a Protocol parses frames in ``data_received``, no task per frame.

    The clients share the cores with the server under test, so their CPU per frame is delay
    that shows up as latency; three awaits per frame (``readexactly``) were the costliest part
    of the old reader. Each frame is stamped when the chunk that completes it arrives.
    """

    def __init__(self, stats: Stats, timed: bool = True) -> None:
        self.stats = stats
        # Untimed sockets only count frames (see count_receive); a sample of them is timed.
        self.timed = timed
        self.skip = 0
        self.pending = b""
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.setup: asyncio.Queue[tuple[int, bytes | bytearray]] | None = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("closed during handshake"))
        if self.setup is not None:
            self.setup.put_nowait((CLOSE, b""))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.timed or self.setup is not None:
            self.receive(data, time.time())
        else:
            self.count_receive(data)

    def count_receive(self, data: bytes) -> None:
        """Count data frames by walking their headers, never copying or reading a payload.

        W1's 1,000 sockets receive 1,000 frames per event; parsing and timing each one made the
        client processes, not the server, the first to saturate (the W1 rerun problem,
        docs/performance.md). Latency is still taken on every SAMPLE-th socket, which sees the
        same events; counted frames are those arriving between "window" and "report" (the
        step drains for a second before its report).
        """
        if self.pending:
            data, self.pending = self.pending + data, b""
        size = len(data)
        pos = self.skip
        if pos >= size:
            self.skip = pos - size
            return
        self.skip = 0
        stats = self.stats
        while size - pos >= 2:
            b1, n, hdr = data[pos], data[pos + 1] & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, hdr = (data[pos + 2] << 8) | data[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, hdr = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            end = pos + hdr + n
            if b1 & 0x08:  # control frame (ping, close): small, handled whole
                if end > size:
                    break
                self.on_frame(b1 & 0x0F, bytearray(data[pos + hdr : end]), 0.0)
            elif stats.window is not None:
                stats.count += 1
            if end > size:
                self.skip = end - size
                return
            pos = end
        self.pending = data[pos:]

    def on_frame(self, opcode: int, payload: bytearray, now: float) -> None:
        assert self.transport is not None
        if opcode == PING:
            self.transport.write(client_frame(PONG, payload))
        elif opcode == CLOSE:
            self.transport.close()
        elif self.setup is not None:
            self.setup.put_nowait((opcode, payload))
        elif payload == b"2":  # engine.io ping
            self.transport.write(client_frame(TEXT, b"3"))
        else:
            self.stats.record(payload, now)

    async def read(self) -> tuple[int, bytes | bytearray]:
        assert self.setup is not None
        opcode, payload = await self.setup.get()
        if opcode == CLOSE:
            raise ConnectionError("closed during setup")
        return opcode, payload


class Stats:
    def __init__(self) -> None:
        self.window: tuple[float, float] | None = None
        self.count = 0
        self.latencies = array("d")

    def record(self, payload: bytearray, now: float) -> None:
        match = TS_RE.search(payload)
        if match is None or self.window is None:
            return
        ts = float(match.group(1))
        if self.window[0] <= ts <= self.window[1]:
            self.count += 1
            self.latencies.append(now - ts)


# one socket in SAMPLE is timed, the rest only count; LUNA_BENCH_SAMPLE=1 times all (the old client)
SAMPLE = int(os.environ.get("LUNA_BENCH_SAMPLE", "10"))


async def _subscriber(
    port: int, sub: Sub, stats: Stats, ready: list[int], timed: bool = True
) -> None:
    loop = asyncio.get_running_loop()
    timed = timed or sub.protocol == "socketio"  # engine.io pings need the payload
    transport, client = await loop.create_connection(
        lambda: WSClient(stats, timed), "127.0.0.1", port
    )
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in sub.headers.items())
    transport.write(
        (
            f"GET {sub.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()
    )
    head = await client.head
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    if sub.protocol == "socketio":
        await client.read()  # engine.io open packet
        transport.write(client_frame(TEXT, b"40"))
        await client.read()  # namespace connected
        for room in sub.rooms:
            transport.write(client_frame(TEXT, b'42["join",' + json.dumps(room).encode() + b"]"))
            await client.read()  # joined
    elif sub.ready_marker is not None:
        _opcode, payload = await client.read()
        assert payload == sub.ready_marker, payload[:100]
    client.setup = None
    ready[0] += 1
    await client.closed


async def _main(port: int, subs: list[Sub], pipe: Connection) -> None:
    stats = Stats()
    ready = [0]
    tasks = []
    for start in range(0, len(subs), 200):
        batch = subs[start : start + 200]
        tasks += [
            asyncio.create_task(_subscriber(port, s, stats, ready, (start + i) % SAMPLE == 0))
            for i, s in enumerate(batch)
        ]
        while ready[0] < start + len(batch):
            await asyncio.sleep(0.01)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                pipe.send(("error", repr(failed[0].exception())))
                return
    # The client's own full collections would pass for server latency: freeze its state.
    gc.collect()
    gc.freeze()
    pipe.send(("ready", len(subs)))
    loop = asyncio.get_running_loop()
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "window":
            stats.window, stats.count, stats.latencies = arg, 0, array("d")
            cpu0 = _cpu()
            wall0 = time.monotonic()
        elif command == "report":
            pipe.send(
                (
                    "report",
                    {
                        "count": stats.count,
                        "latencies": stats.latencies.tobytes(),
                        "cpu": _cpu() - cpu0,
                        "wall": time.monotonic() - wall0,
                    },
                )
            )
        elif command == "stop":
            for task in tasks:
                task.cancel()
            return


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_process(port: int, subs: list[Sub], pipe: Connection) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:  # the client's cost per frame is mostly its event loop: use the cheaper one if present
        import uvloop
    except ImportError:
        asyncio.run(_main(port, subs, pipe))
    else:
        uvloop.run(_main(port, subs, pipe))


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for r in reports for x in array("d", r["latencies"]))
    count = sum(r["count"] for r in reports)

    def pick(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    utils = [r["cpu"] / r["wall"] for r in reports if r["wall"] > 0]
    saturated = any(u > 0.9 for u in utils)
    return {
        "count": count,
        "p50": pick(0.5),
        "p99": pick(0.99),
        "client_saturated": saturated,
        "client_util_max": max(utils, default=0.0),
        "client_cpu_s": sum(r["cpu"] for r in reports),
    }
