"""Slow consumers and hostile frames: one bad client never hurts the others.

Clients are raw asyncio sockets (tests/rawws.py) so the test process is not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import socket
import time
from collections.abc import Iterator

import pytest

from .helpers import Service, account, face_event, metric, publish_face
from .rawws import RawWS

pytestmark = pytest.mark.slow
TS_RE = re.compile(rb'"ts":([0-9.]+)')


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def service() -> Iterator[Service]:
    # A 1 MiB cap needs message limits within it (the cap holds the largest accepted message).
    svc = Service(
        env={
            "LUNA_SENDER_WS__QUEUE_MAX_BYTES": str(1 << 20),
            "LUNA_SENDER_LIMITS__BUS_MESSAGE_MAX_BYTES": str(1 << 20),
            "LUNA_SENDER_LIMITS__PUBLISH_BODY_MAX_BYTES": str(1 << 20),
            # Long enough that a phase ends before any stalled socket is closed.
            "LUNA_SENDER_WS__STALL_TIMEOUT": "10",
        }
    )
    yield svc
    assert svc.terminate() == 0, svc.log()[-2000:]


async def _publisher(svc: Service, acc: str, rate: float, duration: float) -> list[bytes]:
    """Publishes for ``duration`` seconds; returns each event's ``ts`` as it appears in frames."""
    import aiohttp

    sent: list[bytes] = []
    pad = "x" * 10_000
    async with aiohttp.ClientSession() as session:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            ts = time.time()
            await publish_face(session, svc.url, acc, [face_event(ts=ts, pad=pad)])
            sent.append(repr(ts).encode())
            await asyncio.sleep(1 / rate)
    return sent


async def _record(ws: RawWS, heard: list[bytes]) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            frame = await ws.recv_data()
            if frame.opcode == 0x8:
                return
            match = TS_RE.search(frame.payload)
            if match:
                heard.append(match.group(1))


async def _drain(ws: RawWS) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            frame = await ws.recv_data()
            if frame.opcode == 0x8:
                return


async def _phase(svc: Service, acc: str, sampled: list[RawWS]) -> None:
    """Every sampled reader hears every event of the phase, once and in order."""
    heard: list[list[bytes]] = [[] for _ in sampled]
    tasks = [asyncio.create_task(_record(ws, h)) for ws, h in zip(sampled, heard, strict=True)]
    sent = await _publisher(svc, acc, rate=20, duration=4)
    deadline = time.monotonic() + 20
    while any(len(h) < len(sent) for h in heard) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    assert sent
    for h in heard:
        assert h == sent, f"a healthy reader heard {len(h)} frames of {len(sent)} published"


async def test_stalled_consumers_do_not_hurt_the_others(service: Service) -> None:
    """A healthy reader misses nothing while 50 others stop reading, and those 50 are closed.

    How much the stalled ones cost the others' latency is a figure, not a pass/fail:
    ``benchmarks/slow_consumers.py`` measures it.
    """
    acc = account()
    headers = {"Luna-Account-Id": acc}
    readers = [await RawWS.connect(service.port, headers=headers) for _ in range(950)]
    sampled, rest = readers[:50], readers[50:]
    drains = [asyncio.create_task(_drain(ws)) for ws in rest]
    baseline_rss = rss_bytes(service.proc.pid)

    await _phase(service, acc, sampled)
    stalled = [await RawWS.connect(service.port, headers=headers, rcvbuf=4096) for _ in range(50)]
    stall_started = time.monotonic()
    await _phase(service, acc, sampled)
    # ...and heard it while the stalled ones were still open: a writer that waited on them
    # would hold the healthy readers until the stall timeout closed them.
    assert metric(service.url, 'ws_closed_total{reason="slow_consumer"}') == 0

    cap = 1 << 20
    peak = rss_bytes(service.proc.pid)
    print(
        f"RSS baseline {baseline_rss >> 20} MiB, with stalled {peak >> 20} MiB "
        f"(bound {(baseline_rss + 50 * cap) >> 20} MiB)"
    )
    assert peak < baseline_rss + 50 * cap

    # Every stalled socket is closed by the server with 1008 and a reason.
    deadline = time.monotonic() + 25
    while True:
        if metric(service.url, 'ws_closed_total{reason="slow_consumer"}') >= 50:
            break
        assert time.monotonic() < deadline, "stalled sockets were not closed"
        await _publisher(service, acc, rate=20, duration=0.5)
    closed_after = time.monotonic() - stall_started
    print(f"stalled sockets closed {closed_after:.1f} s after they stopped reading")
    codes = []
    for ws in stalled:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await asyncio.wait_for(ws.recv(), 5)
                if frame.opcode == 0x8:
                    codes.append((frame.close_code, frame.payload[2:].decode()))
                    break
    assert codes and all(code == 1008 and "slow consumer" in reason for code, reason in codes)
    for task in drains:
        task.cancel()
    for ws in readers + stalled:
        ws.close()


@pytest.mark.parametrize(
    ("opcode", "payload", "fin", "length", "expected"),
    [
        (0x3, b"x", True, None, 1002),  # reserved opcode
        (0x1, b"\xff\xfe", True, None, 1007),  # invalid UTF-8 in a text frame
        (0x1, b"", True, 10 * 1024 * 1024, 1009),  # frame larger than ws.max_message_size
        (0x9, b"ping", False, None, 1002),  # fragmented control frame
    ],
)
async def test_malformed_frames_close_only_that_socket(
    service: Service,
    opcode: int,
    payload: bytes,
    fin: bool,
    length: int | None,
    expected: int,
) -> None:
    import aiohttp

    acc = account()
    headers = {"Luna-Account-Id": acc}
    bad = await RawWS.connect(service.port, headers=headers)
    good = await RawWS.connect(service.port, headers=headers)
    bad.send(opcode, payload, fin=fin, length=length)
    await bad.writer.drain()
    frame = await asyncio.wait_for(bad.recv_data(), 5)
    assert frame.opcode == 0x8 and frame.close_code == expected
    async with aiohttp.ClientSession() as session:
        body = {
            "events": [face_event(ok=1)],
            "handler_id": "h",
            "event_create_time": "2026-01-01T00:00:00Z",
            "event_end_time": "2026-01-01T00:00:00Z",
        }
        async with session.post(service.url + "/publish", json=body, headers=headers) as resp:
            assert resp.status == 204
    frame = await asyncio.wait_for(good.recv_data(), 5)
    assert frame.opcode == 0x1 and b'"ok":1' in frame.payload
    bad.close()
    good.close()


async def test_client_messages_are_ignored(service: Service) -> None:
    acc = account()
    ws = await RawWS.connect(service.port, headers={"Luna-Account-Id": acc})
    for _ in range(100):
        ws.send(0x1, b'{"hello": "server"}')
    ws.send(0x9, b"are you there")
    await ws.writer.drain()
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert frame.opcode == 0xA and frame.payload == b"are you there"
    ws.close()


def _fin_wait_sockets(port: int) -> int:
    """Connections from ``port`` the kernel still holds in FIN-WAIT-1: closed by the process
    with unsent data queued (an orphan, sent on after the descriptor is gone)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "04":
                    count += 1
    return count


async def test_a_cut_websocket_leaves_nothing_queued_in_the_kernel() -> None:
    """A socket that stops reading is closed 1008, and cut when it does not answer the Close.
    The cut used to be a plain close: the kernel kept the unsent frames (up to the socket's
    whole send buffer) as an orphan and sent them on after the descriptor was gone. It is a
    reset now: the client sees ECONNRESET without reading, and no orphan is left."""
    svc = Service(
        env={"LUNA_SENDER_WS__STALL_TIMEOUT": "1", "LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "0.5"}
    )
    try:
        acc = account()
        stalled = await RawWS.connect(svc.port, headers={"Luna-Account-Id": acc}, rcvbuf=4096)
        sock = stalled.writer.get_extra_info("socket")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLERR | select.POLLHUP)
        import aiohttp

        async with aiohttp.ClientSession() as session:
            pad = "x" * 10_000
            deadline = time.monotonic() + 15
            while not poller.poll(0):  # never read: only the reset can wake it
                assert time.monotonic() < deadline, (
                    f"no reset; orphans {_fin_wait_sockets(svc.port)}"
                )
                await publish_face(session, svc.url, acc, [face_event(pad=pad)] * 10)
                await asyncio.sleep(0.05)
        assert metric(svc.url, 'ws_closed_total{reason="slow_consumer"}') == 1
        assert metric(svc.url, 'connections_reset_total{reason="ws_close_timeout"}') == 1
        with pytest.raises(ConnectionResetError):
            while await asyncio.wait_for(stalled.reader.read(1 << 20), 5):
                pass
        assert _fin_wait_sockets(svc.port) == 0
        stalled.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-2000:]


async def test_a_stop_leaves_no_stalled_websocket_queued_in_the_kernel() -> None:
    """SIGTERM with a socket whose client reads nothing: it cannot take the 1001 Close within
    ws.shutdown_timeout, and the cut after it is a reset, so the stopped service leaves no
    orphan holding its unsent frames."""
    svc = Service(env={"LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "0.5"})
    acc = account()
    stalled = await RawWS.connect(svc.port, headers={"Luna-Account-Id": acc}, rcvbuf=4096)
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            pad = "x" * 10_000
            for _ in range(10):  # ~1 MB: more than the kernel's buffers on both sides hold
                await publish_face(session, svc.url, acc, [face_event(pad=pad)] * 10)
        assert svc.terminate() == 0, svc.log()[-2000:]
        assert _fin_wait_sockets(svc.port) == 0
        with pytest.raises(ConnectionResetError):
            while await asyncio.wait_for(stalled.reader.read(1 << 20), 5):
                pass
    finally:
        stalled.close()
        svc.close()


async def test_a_stalled_websocket_that_half_closes_is_cut_too() -> None:
    """A client that stops reading, then shuts its sending side (``shutdown(SHUT_WR)``): the
    transport closed on its FIN and waited to flush what the client would never read, out of
    the stall sweep's reach, until the heartbeat (an outside pass: 29 s with the defaults, 50
    such sockets holding 25 MB of kernel memory). The sweep resets it now."""
    svc = Service(env={"LUNA_SENDER_WS__STALL_TIMEOUT": "1"})
    try:
        acc = account()
        stalled = await RawWS.connect(svc.port, headers={"Luna-Account-Id": acc}, rcvbuf=4096)
    except BaseException:
        svc.close()
        raise
    try:
        sock = stalled.writer.get_extra_info("socket")
        import aiohttp

        async with aiohttp.ClientSession() as session:
            pad = "x" * 10_000
            for _ in range(10):  # ~1 MB: more than the kernel's buffers on both sides hold
                await publish_face(session, svc.url, acc, [face_event(pad=pad)] * 10)
        sock.shutdown(socket.SHUT_WR)
        shut = time.monotonic()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLERR | select.POLLHUP)
        while not poller.poll(0):  # never read: only the reset can wake it
            assert time.monotonic() - shut < 5, "the half-closed stalled socket was kept"
            await asyncio.sleep(0.02)
        assert metric(svc.url, 'connections_reset_total{reason="ws_stalled"}') == 1
        assert metric(svc.url, "ws_connections") == 0
        assert _fin_wait_sockets(svc.port) == 0
    finally:
        stalled.close()
        assert svc.terminate() == 0, svc.log()[-2000:]


async def test_a_reader_that_half_closes_gets_everything_queued() -> None:
    """A client that half-closes while reading steadily, slower than what is queued for it
    drains: every queued event still arrives, then the connection ends without a reset (a
    first fix cut it ``ws.shutdown_timeout`` after the FIN, an outside pass: 267-278 of 400)."""
    svc = Service(env={"LUNA_SENDER_WS__STALL_TIMEOUT": "1"})
    try:
        acc = account()
        ws = await RawWS.connect(svc.port, headers={"Luna-Account-Id": acc}, rcvbuf=4096)
    except BaseException:
        svc.close()
        raise
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            pad = "x" * 10_000
            for _ in range(20):  # 200 events, ~2 MB queued
                await publish_face(session, svc.url, acc, [face_event(pad=pad)] * 10)
        # A 204 means published, not yet queued for the socket: half-closing before the last
        # batch came back from the bus asked for what was queued then (CI: 190 of 200).
        deadline = time.monotonic() + 10
        while metric(svc.url, "events_delivered_total") < 200:
            assert time.monotonic() < deadline, "the events never reached the socket's queue"
            await asyncio.sleep(0.05)
        ws.writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
        got, reset = 0, False
        try:
            while True:  # ~700 KB/s: about 3 s for what is queued
                frame = await asyncio.wait_for(ws.recv(), 5)
                got += frame.opcode == 0x1
                if got % 10 == 0:
                    await asyncio.sleep(0.15)
        except asyncio.IncompleteReadError:
            pass
        except ConnectionResetError:
            reset = True
        assert (got, reset) == (200, False)
        assert metric(svc.url, "connections_reset_total") == 0
    finally:
        ws.close()
        assert svc.terminate() == 0, svc.log()[-2000:]
