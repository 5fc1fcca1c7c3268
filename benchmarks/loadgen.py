"""Subscriber load generator: processes holding many raw websockets, measuring latency.

Raw asyncio sockets keep the client cheap; each frame's latency is now minus the publisher
timestamp embedded in the event (``"bench_ts":<unix time>``). A process reports its own CPU
time so the harness can flag a run where the client, not the server, was the bottleneck.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import socket
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

TS_RE = re.compile(rb'"bench_ts":\s*([0-9.]+)')


@dataclass
class Sub:
    """One subscriber: which peer protocol, path (with query), headers, rooms to join."""

    protocol: str  # "ws" (luna, naive, broadcaster, nchan) or "socketio"
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    rooms: list[str] = field(default_factory=list)
    ready_marker: bytes | None = None  # a first frame that means "subscribed" (broadcaster)


async def _handshake(port: int, path: str, headers: dict[str, str]
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return reader, writer


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126
                                     else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b1 & 0x0F, await reader.readexactly(n)


class Stats:
    def __init__(self) -> None:
        self.window: tuple[float, float] | None = None
        self.count = 0
        self.latencies: list[float] = []

    def record(self, payload: bytes, now: float) -> None:
        match = TS_RE.search(payload)
        if match is None or self.window is None:
            return
        ts = float(match.group(1))
        if self.window[0] <= ts <= self.window[1]:
            self.count += 1
            if self.count % 7 == 0 or len(self.latencies) < 2000:
                self.latencies.append(now - ts)


async def _subscriber(port: int, sub: Sub, stats: Stats, ready: list[int]) -> None:
    reader, writer = await _handshake(port, sub.path, sub.headers)
    if sub.protocol == "socketio":
        await _read(reader)  # engine.io open packet
        writer.write(_frame(0x1, b"40"))
        await _read(reader)  # namespace connected
        for room in sub.rooms:
            writer.write(_frame(0x1, b'42["join",' + json.dumps(room).encode() + b"]"))
            await _read(reader)  # joined
    elif sub.ready_marker is not None:
        opcode, payload = await _read(reader)
        assert payload == sub.ready_marker, payload[:100]
    ready[0] += 1
    try:
        while True:
            opcode, payload = await _read(reader)
            if opcode == 0x9:
                writer.write(_frame(0xA, payload))
            elif opcode == 0x8:
                return
            elif payload == b"2":  # engine.io ping
                writer.write(_frame(0x1, b"3"))
            else:
                stats.record(payload, time.time())
    except (asyncio.IncompleteReadError, ConnectionError):
        return


async def _main(port: int, subs: list[Sub], pipe: Connection) -> None:
    stats = Stats()
    ready = [0]
    tasks = []
    for start in range(0, len(subs), 200):
        batch = subs[start:start + 200]
        tasks += [asyncio.create_task(_subscriber(port, s, stats, ready)) for s in batch]
        while ready[0] < start + len(batch):
            await asyncio.sleep(0.01)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                pipe.send(("error", repr(failed[0].exception())))
                return
    pipe.send(("ready", len(subs)))
    loop = asyncio.get_running_loop()
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "window":
            stats.window, stats.count, stats.latencies = arg, 0, []
            cpu0 = _cpu()
            wall0 = time.monotonic()
        elif command == "report":
            pipe.send(("report", {"count": stats.count, "latencies": stats.latencies,
                                  "cpu": _cpu() - cpu0,
                                  "wall": time.monotonic() - wall0}))
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
    asyncio.run(_main(port, subs, pipe))


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for r in reports for x in r["latencies"])
    count = sum(r["count"] for r in reports)

    def pick(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    saturated = any(r["wall"] > 0 and r["cpu"] / r["wall"] > 0.9 for r in reports)
    return {"count": count, "p50": pick(0.5), "p99": pick(0.99), "client_saturated": saturated}
