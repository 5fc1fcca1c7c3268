"""The W5 client process: many recovering sockets, cut at once by TCP reset, resumed with since.

Its own small websocket protocol rather than loadgen's: this one must keep per-socket state
across connections (the last offset, which sequence numbers arrived and how often) and tell the
``{"recovery": ...}`` frame and the replay apart from live frames, which loadgen's latency
counter has no reason to know about. Per frame it does one regex and one byte increment, so
2,000 sockets stay cheap on a 2-core machine shared with the server.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import random
import re
import resource
import socket
import struct
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import quote

from luna_sender.delivery.frames import FrameParser, client_frame

SEQ_RE = re.compile(rb'"bench_seq":(\d+)')
OFFSET_KEY = b'"offset":"'


class Track:
    """One logical subscriber, surviving its reconnections."""

    __slots__ = (
        "acc_index",
        "account",
        "attempts",
        "disorder",
        "last",
        "offset",
        "recovered",
        "replay_left",
        "replayed",
        "seen",
        "t_first",
        "t_open",
        "t_recovery",
        "t_start",
        "transport",
    )

    def __init__(self, account: str, acc_index: int, capacity: int) -> None:
        self.account, self.acc_index = account, acc_index
        self.seen = bytearray(capacity)  # receipts per sequence number, saturating at 255
        self.last = -1
        self.offset: str | None = None
        self.disorder = 0
        self.replay_left = 0
        self.recovered: bool | None = None
        self.replayed = -1
        self.t_start = self.t_open = self.t_recovery = self.t_first = 0.0
        self.attempts = 0
        self.transport: asyncio.Transport | None = None

    def on_event(self, payload: bytes, now: float) -> None:
        match = SEQ_RE.search(payload)
        if match is None:
            return
        seq = int(match.group(1))
        if seq >= len(self.seen):
            self.seen.extend(bytes(seq + 1024 - len(self.seen)))
        if self.seen[seq] < 255:
            self.seen[seq] += 1
        if seq <= self.last:
            self.disorder += 1
        self.last = max(self.last, seq)
        at = payload.rfind(OFFSET_KEY)
        if at >= 0:
            end = payload.index(b'"', at + len(OFFSET_KEY))
            self.offset = payload[at + len(OFFSET_KEY) : end].decode()
        if self.replay_left:
            if not self.t_first:
                self.t_first = now
            self.replay_left -= 1

    def on_recovery(self, payload: bytes, now: float) -> None:
        info = json.loads(payload)["recovery"]
        self.recovered, self.replayed = bool(info["recovered"]), int(info["replayed"])
        self.t_recovery, self.replay_left = now, self.replayed


class Proto(FrameParser, asyncio.Protocol):
    def __init__(self, track: Track) -> None:
        self.track = track
        self.buf = bytearray()
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[bytes] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("closed during handshake"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.receive(data, now)

    def on_frame(self, opcode: int, payload: bytearray, now: float) -> None:
        assert self.transport is not None
        if opcode == 0x9:
            self.transport.write(client_frame(0xA, payload))
        elif opcode == 0x8:
            self.transport.close()
        elif payload.startswith(b'{"recovery"'):
            self.track.on_recovery(payload, now)
        else:
            self.track.on_event(payload, now)


async def connect(port: int, track: Track, jitter: float = 0.0, retries: int = 8) -> None:
    """One (re)connection, retried with backoff like a real client; counts its attempts."""
    loop = asyncio.get_running_loop()
    if jitter:
        await asyncio.sleep(random.random() * jitter)
    track.t_start = time.monotonic()  # the reconnect starts here, after any jitter
    query = "?recover=true" if track.offset is None else "?since=" + quote(track.offset, safe="")
    delay = 0.1
    for attempt in range(retries):
        track.attempts += 1
        try:
            transport, proto = await loop.create_connection(lambda: Proto(track), "127.0.0.1", port)
            key = base64.b64encode(os.urandom(16)).decode()
            transport.write(
                (
                    f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    f"Luna-Account-Id: {track.account}\r\n\r\n"
                ).encode()
            )
            try:
                head = await asyncio.wait_for(proto.head, 30)
            except BaseException:
                transport.close()  # a refused or timed-out upgrade must not leak its socket
                raise
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                transport.close()
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
            track.transport = transport
            track.t_open = time.monotonic()
            return
        except (TimeoutError, OSError):
            if attempt == retries - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def cut(track: Track) -> None:
    """A TCP reset, as a load balancer reload or a network blip gives: SO_LINGER 0, then close.

    Whatever the kernel had received but this process had not read yet is discarded with it,
    so frames in flight are lost to the client exactly as they would be on a real cut.
    """
    transport, track.transport = track.transport, None
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def missing(track: Track, published: int) -> int:
    return track.seen[:published].count(0) + max(0, published - len(track.seen))


async def settle(tracks: list[Track], published: list[int], limit: float) -> float:
    """Waits (up to ``limit`` s) until every socket holds every published event: a server still
    busy with the herd delivers the last events late, which is not loss."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if not any(missing(t, published[t.acc_index]) for t in tracks):
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def summary(track: Track, published: int) -> dict[str, Any]:
    window = track.seen[:published]
    lost = missing(track, published)
    dup = sum(c - 1 for c in window if c > 1)
    return {
        "lost": lost,
        "holes": window[: track.last + 1].count(0),  # lost before the last event received
        "dup": dup,
        "disorder": track.disorder,
        "recovered": track.recovered,
        "replayed": track.replayed,
        "to_open": track.t_open - track.t_start if track.t_start else None,
        "to_recovery": track.t_recovery - track.t_start if track.t_recovery else None,
        "to_first": track.t_first - track.t_start if track.t_first else None,
        "attempts": track.attempts,
    }


async def _main(port: int, accounts: list[str], plan: list[int], pipe: Connection) -> None:
    tracks = [Track(accounts[a], a, 4096) for a in plan]
    for start in range(0, len(tracks), 200):
        await asyncio.gather(*(connect(port, t) for t in tracks[start : start + 200]))
    gc.collect()
    gc.freeze()
    pipe.send(("ready", len(tracks)))
    loop = asyncio.get_running_loop()
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "cut":  # arg: (outage seconds, reconnect jitter seconds)
            outage, jitter = arg
            for track in tracks:
                cut(track)
            without = sum(t.offset is None for t in tracks)
            await asyncio.sleep(outage)
            for track in tracks:
                track.t_open = track.t_recovery = track.t_first = 0.0
                track.attempts = 0
            results = await asyncio.gather(
                *(connect(port, t, jitter) for t in tracks), return_exceptions=True
            )
            failed = [repr(r) for r in results if isinstance(r, BaseException)]
            pipe.send(("reconnected", {"failed": failed, "without_offset": without}))
        elif command == "report":  # arg: events published per account, settle limit (s)
            published, limit = arg
            waited = await settle(tracks, published, limit)
            pipe.send(
                (
                    "report",
                    [summary(t, published[t.acc_index]) | {"settle": waited} for t in tracks],
                )
            )
        elif command == "stop":
            for track in tracks:
                if track.transport is not None:
                    track.transport.close()
            return


def client_process(port: int, accounts: list[str], plan: list[int], pipe: Connection) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(port, accounts, plan, pipe))
    else:
        uvloop.run(_main(port, accounts, plan, pipe))
