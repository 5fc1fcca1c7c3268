"""Bytes that are not RESP on the pub/sub connection (bus/feed.py: hiredis's protocol error).

The service runs as a subprocess whose Redis URL is a relay of the test's own in front of a real
redis-server; the relay writes garbage into the server-to-service direction of the pub/sub
connection only. What docs/reliability.md promises for a lost bus connection must hold: the
process keeps running, websockets stay open, the loss is logged once (``bus connection lost``,
WARNING, with its reason), the reader reconnects and resubscribes, and delivery resumes with no
event delivered twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

import aiohttp

from .faults import health, wait_until
from .helpers import RedisServer, Service, account, face_event, metric, publish_face, recv_json

GARBAGE = b"\x00garbage\r\n"


class Relay:
    """TCP relay to a redis-server; ``pubsub`` holds the service side of each pub/sub connection
    (one that sent a SUBSCRIBE), in the order they were opened."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.pubsub: list[asyncio.StreamWriter] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers.append(up_writer)
        await asyncio.gather(self._pump(reader, up_writer, writer), self._pump(up_reader, writer))

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        service: asyncio.StreamWriter | None = None,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if service is not None and b"SUBSCRIBE" in data and service not in self.pubsub:
                    self.pubsub.append(service)
                dst.write(data)  # a whole chunk: injected bytes fall between replies
                await dst.drain()
        dst.close()
        with contextlib.suppress(ConnectionError):
            await dst.wait_closed()


async def seqs(ws: aiohttp.ClientWebSocketResponse, quiet: float) -> collections.Counter[str]:
    """The ``seq`` of every event received until ``quiet`` s pass silently; the socket must
    stay open throughout (recv_json fails on a close frame)."""
    seen: collections.Counter[str] = collections.Counter()
    with contextlib.suppress(TimeoutError):
        while True:
            seen[(await recv_json(ws, quiet))["event"]["seq"]] += 1
    return seen


async def test_garbage_on_the_pubsub_connection_reconnects_and_delivers_once(
    redis_server: RedisServer,
) -> None:
    acc = account()
    async with Relay(redis_server.port) as relay, aiohttp.ClientSession() as session:
        # Off the loop: the relay runs on this loop and the service talks to Redis through it.
        svc = await asyncio.to_thread(Service, "--redis-url", relay.url)
        try:
            assert await wait_until(lambda: health(svc.url)[0] == 200, 15), svc.log()[-2000:]
            headers = {"Luna-Account-Id": acc}
            async with session.ws_connect(svc.ws_url + "/ws", headers=headers) as ws:
                await publish_face(session, svc.url, acc, [face_event(seq="before")])
                assert (await recv_json(ws))["event"]["seq"] == "before"
                assert len(relay.pubsub) == 1, "one pub/sub connection before the fault"
                relay.pubsub[0].write(GARBAGE)
                # The service drops that connection and opens a new one through the relay.
                assert await wait_until(lambda: len(relay.pubsub) == 2, 10), svc.log()[-2000:]
                # Events published before the resubscription lands are lost by design: probe.
                seen: collections.Counter[str] = collections.Counter()
                for probe in range(50):
                    await publish_face(session, svc.url, acc, [face_event(seq=f"probe-{probe}")])
                    seen += await seqs(ws, 0.2)
                    if seen:
                        break
                assert seen, "no event delivered after the reconnect"
                await publish_face(session, svc.url, acc, [face_event(seq="after")])
                seen += await seqs(ws, 1.0)
                assert seen["after"] == 1 and seen["before"] == 0, seen
                assert set(seen.values()) == {1}, f"an event delivered twice: {seen}"
                assert not ws.closed
            assert svc.proc.poll() is None, svc.log()[-2000:]
            assert await wait_until(lambda: health(svc.url)[0] == 200, 10)
            assert await asyncio.to_thread(metric, svc.url, "bus_reconnects_total") == 1
            log = svc.log()
            lost = [line for line in log.splitlines() if "bus connection lost:" in line]
            assert len(lost) == 1, log[-3000:]
            assert " WARNING luna_sender.bus " in lost[0], lost
            assert "Protocol error from the bus" in lost[0], lost
            assert log.count("bus connection back after") == 1, log[-3000:]
            assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
        finally:
            code = await asyncio.to_thread(svc.terminate)
        assert code == 0, svc.log()[-2000:]
