"""The service process stands still (SIGSTOP here; a paused VM, swap or a starved host in the
field) for longer than a deadline, while its clients do their part. When it runs again, its due
timers run before the loop has read its sockets: every deadline fired on connections whose
bytes had arrived, or whose peer had read, meanwhile (docs/reliability.md "When the process
itself stood still").

Each test fails on the code before the fix, on either event loop (checked). Real process, real
sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import aiohttp
import orjson
import pytest

from luna_sender.delivery.frames import CLOSE, PING, PONG, TEXT

from .faults import process_stopped
from .helpers import Service
from .rawws import Frame, RawWS

STOOD_STILL = 1.6  # past every 1 s deadline below


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"LUNA_SENDER_EVENT_LOOP": request.param}


async def test_heads_that_arrived_while_the_service_stood_still_are_answered(
    loop_env: dict[str, str],
) -> None:
    svc = Service(env={**loop_env, "LUNA_SENDER_LIMITS__HTTP_HEAD_TIMEOUT": "1"})
    try:
        conns = [await asyncio.open_connection("127.0.0.1", svc.port) for _ in range(5)]
        await asyncio.sleep(0.3)  # accepted: their head deadlines run
        with process_stopped(svc.proc.pid):
            for _, writer in conns:
                writer.write(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(STOOD_STILL)
        for reader, _ in conns:
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        # The deadline still holds for a client that sends nothing
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.9 < time.monotonic() - started < 3
        for _, w in [*conns, (reader, writer)]:
            w.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


async def test_a_body_that_arrived_while_the_service_stood_still_is_taken(
    loop_env: dict[str, str],
) -> None:
    svc = Service(env={**loop_env, "LUNA_SENDER_LIMITS__HTTP_BODY_TIMEOUT": "1"})
    try:
        ws = await RawWS.connect(svc.port, "/ws/general")
        body = orjson.dumps({"event": {"k": "x" * 1000}, "event_type": "t"})
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(
            b"POST /publish/general HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:500])
        )
        await asyncio.sleep(0.3)  # the head is in: the body deadline runs
        with process_stopped(svc.proc.pid):
            writer.write(body[500:])
            await asyncio.sleep(STOOD_STILL)
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 204")
        frame = await asyncio.wait_for(ws.recv_data(), 5)
        assert frame.opcode == TEXT and b"x" * 1000 in frame.payload
        writer.close()
        ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


async def test_a_pong_that_arrived_while_the_service_stood_still_keeps_the_socket(
    loop_env: dict[str, str],
) -> None:
    svc = Service(env={**loop_env, "LUNA_SENDER_WS__HEARTBEAT": "1"})  # no answer in 0.5 s: dead
    try:
        ws = await RawWS.connect(svc.port, "/ws/general")
        ping = await asyncio.wait_for(ws.recv(), 5)
        assert ping.opcode == PING
        with process_stopped(svc.proc.pid):
            ws.send(PONG, ping.payload)
            await ws.writer.drain()
            await asyncio.sleep(STOOD_STILL)
        await asyncio.sleep(0.5)  # the heartbeat's next checks
        async with (
            aiohttp.ClientSession() as session,
            session.post(svc.url + "/publish/general", json={"event": {"k": 1}, "event_type": "t"}),
        ):
            pass
        frame = await asyncio.wait_for(ws.recv_data(), 5)
        assert frame.opcode == TEXT and b'"k":1' in frame.payload
        ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


def _drain(sock: socket.socket, until: float) -> bytes:
    """What the kernel holds for ``sock`` until ``until``, without waiting past it."""
    got = b""
    sock.settimeout(0.05)
    while time.monotonic() < until:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        got += chunk
    return got


async def test_an_answer_read_while_the_service_stood_still_is_not_cut(
    loop_env: dict[str, str],
) -> None:
    svc = Service(
        env={
            **loop_env,
            "LUNA_SENDER_LIMITS__HTTP_SEND_TIMEOUT": "1",
            "LUNA_SENDER_LIMITS__HTTP_SEND_BUFFER": "4096",
        }
    )
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", svc.port))
        sock.sendall(
            b"GET /docs/spec HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        await asyncio.sleep(0.6)  # the kernel's buffers fill, nothing read: the deadline runs
        with process_stopped(svc.proc.pid):
            got = _drain(sock, time.monotonic() + 0.3)  # the client reads what the kernel has
            await asyncio.sleep(STOOD_STILL - 0.3)
        assert got
        got += await asyncio.to_thread(_drain, sock, time.monotonic() + 10)
        head, _, rest = got.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        assert len(rest) == length > 100_000
    finally:
        sock.close()
        assert svc.terminate() == 0, svc.log()[-3000:]


async def test_a_websocket_that_read_while_the_service_stood_still_is_not_evicted(
    loop_env: dict[str, str],
) -> None:
    svc = Service(
        env={
            **loop_env,
            "LUNA_SENDER_WS__STALL_TIMEOUT": "1",
            "LUNA_SENDER_WS__SOCKET_SEND_BUFFER": "4096",
        }
    )
    try:
        ws = await RawWS.connect(svc.port, "/ws/general", rcvbuf=4096)
        sent = 100
        async with aiohttp.ClientSession() as session:
            for i in range(sent):  # ~200 KB: most of it waits in the service, unsent
                body = {"event": {"i": i, "pad": "x" * 2000}, "event_type": "t"}
                async with session.post(svc.url + "/publish/general", json=body) as resp:
                    assert resp.status == 204
        await asyncio.sleep(0.5)  # nothing read: the stall sweep notes no progress
        got: list[Frame] = []

        async def read() -> None:
            while len(got) < sent and (not got or got[-1].opcode == TEXT):
                got.append(await ws.recv_data())

        with process_stopped(svc.proc.pid):
            reader = asyncio.create_task(read())  # what the client's kernel holds, then waits
            await asyncio.sleep(STOOD_STILL)
            assert got
        await asyncio.wait_for(reader, 10)
        assert all(f.opcode == TEXT for f in got), [f.close_code for f in got if f.opcode == CLOSE]
        assert [orjson.loads(f.payload)["event"]["i"] for f in got] == list(range(sent))
        # Still subscribed: an evicted socket gets its backlog, then a Close 1008
        async with aiohttp.ClientSession() as session:
            body = {"event": {"i": sent}, "event_type": "t"}
            async with session.post(svc.url + "/publish/general", json=body) as resp:
                assert resp.status == 204
        last = await asyncio.wait_for(ws.recv_data(), 5)
        assert last.opcode == TEXT, last.close_code
        ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


async def test_a_body_its_route_does_not_read_is_drained_no_longer_than_the_body_deadline() -> None:
    """Not a stall: found by the same outside pass. aiohttp drains what is left of a body its
    route did not read for 10 s, past a shorter ``http_body_timeout``."""
    svc = Service(env={"LUNA_SENDER_LIMITS__HTTP_BODY_TIMEOUT": "1"})
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\n")
        writer.write(b"x" * 1_000_000)
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            while await asyncio.wait_for(reader.read(65536), 15):
                pass
        assert time.monotonic() - started < 3  # was 10 s
        writer.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]
