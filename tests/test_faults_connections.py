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

import aiohttp
import pytest

from .helpers import (
    RedisServer,
    Service,
    account,
    face_event,
    face_message,
    metric,
    publish_face,
    scrape,
)
from .rawws import RawWS

pytestmark = pytest.mark.slow


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
            face = await session.ws_connect(
                svc.ws_url + "/ws", max_msg_size=0, headers={"Luna-Account-Id": acc}
            )
            general_sizes: list[int] = []
            face_sizes: list[int] = []
            readers = [
                asyncio.create_task(_read_all(general, general_sizes)),
                asyncio.create_task(_read_all(face, face_sizes)),
            ]
            big = "x" * 1_900_000
            for i in range(10):
                async with session.post(
                    svc.url + "/publish/general",
                    json={"event": {"i": i, "pad": big}, "event_type": "big"},
                ) as resp:
                    assert resp.status == 204
            async with session.post(
                svc.url + "/publish/general",
                json={"event": {"i": 10, "pad": "y" * (9 * 1024 * 1024)}, "event_type": "big"},
            ) as resp:
                assert resp.status == 204
            # One handler batch of 10 events of 1.9 MB: 19 MB of frames written in one go.
            batch = face_message([face_event(i=i, pad=big) for i in range(10)])
            assert redis_server.client().publish(f"luna-sender:{acc}", batch) == 1
            deadline = time.monotonic() + 60
            while (len(general_sizes) < 11 or len(face_sizes) < 10) and time.monotonic() < deadline:
                assert not any(r.done() for r in readers), "a fast reader was closed"
                await asyncio.sleep(0.1)
            assert len(general_sizes) == 11 and max(general_sizes) > 9 * 1024 * 1024
            assert len(face_sizes) == 10
            assert metric(svc.url, 'ws_closed_total{reason="slow_consumer"}') == 0
            await general.close()
            await face.close()
            await asyncio.gather(*readers)
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]
        redis_server.close()


def test_queue_cap_below_the_largest_message_is_a_start_up_error() -> None:
    svc = Service(env={"LUNA_SENDER_WS__QUEUE_MAX_BYTES": str(8 * 1024 * 1024)}, wait=False)
    try:
        assert svc.proc.wait(30) != 0
        assert "ws.queue_max_bytes" in svc.log()
    finally:
        svc.close()


# --- item 10: shutdown completes the closing handshake (RFC 6455 §7.1.1) --------------------------


async def test_sigterm_clients_that_answer_see_1001_not_1006() -> None:
    svc = Service()
    codes: list[int | None] = []
    try:
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(svc.ws_url + "/ws/general") for _ in range(100)]

            async def slow_answer(ws: aiohttp.ClientWebSocketResponse) -> None:
                await asyncio.sleep(0.3)  # the client reads the Close 0.3 s late, then answers
                msg = await ws.receive()
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                codes.append(ws.close_code)

            waits = [asyncio.create_task(slow_answer(ws)) for ws in sockets]
            svc.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*waits), 20)
        assert codes.count(1001) == 100, codes
        assert svc.proc.wait(10) == 0
    finally:
        svc.close()


async def test_sigterm_cuts_clients_that_never_answer_at_shutdown_timeout() -> None:
    svc = Service(env={"LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "1.5"})
    try:
        sockets = [await RawWS.connect(svc.port, "/ws/general") for _ in range(20)]

        async def until_eof(ws: RawWS) -> tuple[list[int | None], float]:
            closes: list[int | None] = []
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:  # never answers the Close
                    frame = await ws.recv()
                    if frame.opcode == 0x8:
                        closes.append(frame.close_code)
            return closes, time.monotonic()

        waits = [asyncio.create_task(until_eof(ws)) for ws in sockets]
        signalled = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        results = await asyncio.wait_for(asyncio.gather(*waits), 20)
        assert all(closes == [1001] for closes, _ in results), results
        cut_after = [at - signalled for _, at in results]
        print(f"\nunanswered sockets cut after {min(cut_after):.2f}-{max(cut_after):.2f} s")
        assert min(cut_after) >= 1.0  # kept open for the handshake...
        assert max(cut_after) < 1.5 + 3.0  # ...and cut once ws.shutdown_timeout is over
        assert svc.proc.wait(10) == 0
        for ws in sockets:
            ws.close()
    finally:
        svc.close()


# --- item 11: an evicted socket gets exactly one Close frame ----------------------------------------


async def test_evicted_socket_gets_exactly_one_close() -> None:
    svc = Service(
        env={"LUNA_SENDER_WS__STALL_TIMEOUT": "1", "LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "10"}
    )
    acc = account()
    try:
        stalled = await RawWS.connect(svc.port, headers={"Luna-Account-Id": acc}, rcvbuf=4096)
        pad = "x" * 100_000
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while metric(svc.url, 'ws_closed_total{reason="slow_consumer"}') < 1:
                assert time.monotonic() < deadline, "the stalled socket was not evicted"
                await publish_face(session, svc.url, acc, [face_event(pad=pad)])
                await asyncio.sleep(0.05)
        # The client resumes reading, answers the Close as a client should, reads to EOF.
        closes: list[tuple[int | None, bytes]] = []
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await asyncio.wait_for(stalled.recv_data(), 15)
                if frame.opcode == 0x8:
                    closes.append((frame.close_code, frame.payload[2:]))
                    if len(closes) == 1:
                        stalled.send(0x8, frame.payload[:2])
        assert len(closes) == 1, closes
        assert closes[0][0] == 1008 and b"slow consumer" in closes[0][1]
        stalled.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


# --- item 12: a client that leaves during the handshake is not a server error -------------------


async def _vanish(port: int, request: bytes, rst: bool) -> None:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    if rst:  # close with RST: the server's next write fails with ECONNRESET
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await asyncio.get_running_loop().sock_sendall(sock, request)
    sock.close()


async def test_handshake_disconnects_are_not_server_errors() -> None:
    svc = Service()
    acc = account()
    try:
        upgrade = (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nLuna-Account-Id: {acc}\r\n\r\n"
        ).encode()
        general = upgrade.replace(b"GET /ws ", b"GET /ws/general ")
        for round_ in range(10):
            await asyncio.gather(
                *(
                    _vanish(svc.port, request, rst=bool(i % 2))
                    for i in range(40)
                    for request in (upgrade, general, upgrade[:60], general[:-2])
                )
            )
            del round_
        # The service is healthy and still serves sockets.
        ws = await RawWS.connect(svc.port, "/ws/general")
        ws.close()
        await asyncio.sleep(0.5)
        text = scrape(svc.url)
        assert not re.search(r'request_count_total\{[^}]*status_code="5\d\d"', text), text
        assert not re.search(r'errors_count_total\{[^}]*error_code="1"', text), text
        assert re.search(r'request_count_total\{[^}]*status_code="101"', text)
        log = svc.log()
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


# --- item 13: unmasked client frames (documented in docs/compatibility.md) -----------------------


async def test_unmasked_client_frames_are_tolerated_and_change_nothing() -> None:
    """aiohttp's frame reader unmasks when the bit is set and has no way to require it."""
    svc = Service()
    try:
        ws = await RawWS.connect(svc.port, "/ws/general")
        ws.writer.write(b"\x81\x05hello")  # unmasked text frame: read and dropped
        ws.writer.write(b"\x89\x04ping")  # unmasked ping: answered
        await ws.writer.drain()
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert frame.opcode == 0xA and frame.payload == b"ping"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                svc.url + "/publish/general", json={"event": {"k": 1}, "event_type": "t"}
            ) as resp,
        ):
            assert resp.status == 204
        frame = await asyncio.wait_for(ws.recv_data(), 5)
        assert frame.opcode == 0x1 and b'"k":1' in frame.payload
        ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]
