"""Redis faults under steady publishing: restarts, CLIENT KILL, output-buffer eviction, poison.

The service runs as a real subprocess against a private redis-server on a fixed port that the test
kills and restarts. Each check reports what it measured; hard limits are generous on purpose
(performance belongs to the benchmark), the claims are about never going deaf.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import msgpack
import orjson
import pytest
import redis

from .helpers import RedisServer, Service, account, face_event, face_message, metric
from .test_faults_bus import publish_body

pytestmark = pytest.mark.slow


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    server = RedisServer(extra=["--client-output-buffer-limit", "pubsub 256mb 128mb 60"])
    server.start()
    yield server
    server.close()


@pytest.fixture
def service(fault_redis: RedisServer) -> Iterator[Service]:
    svc = Service("--redis-url", fault_redis.url)
    yield svc
    assert svc.terminate() == 0, svc.log()[-2000:]


def health(svc: Service) -> int:
    try:
        with urllib.request.urlopen(svc.url + "/healthcheck", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Feed:
    """Publishes a timestamped event every 20 ms, shrugging off Redis being down."""

    def __init__(self, port: int, acc: str) -> None:
        self.port, self.acc = port, acc
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        seq = 0
        client = redis.asyncio.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        try:
            while True:
                seq += 1
                try:
                    await client.publish(
                        f"luna-sender:{self.acc}",
                        face_message([face_event(seq=seq, ts=time.time())]),
                    )
                except Exception:  # Redis down: no half-open socket may wait for the GC (a
                    await client.connection_pool.disconnect()  # ResourceWarning under load)
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()  # cancelled at exit: its socket would otherwise reach the GC

    async def __aenter__(self) -> Feed:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def subscriber(svc: Service, acc: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc}) as ws,
    ):
        yield ws


async def first_event_after(
    ws: aiohttp.ClientWebSocketResponse, since: float, limit: float
) -> float:
    """Seconds from ``since`` until an event published after ``since`` arrives."""
    deadline = time.time() + limit
    while time.time() < deadline:
        msg = await asyncio.wait_for(ws.receive(), deadline - time.time())
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket lost: {msg.type} {msg.data}"
        if orjson.loads(msg.data)["event"]["ts"] >= since:
            return time.time() - since
    raise AssertionError(f"no delivery within {limit}s")


async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            await asyncio.wait_for(ws.receive(), 0.01)


def report(label: str, gaps: list[float]) -> None:
    p99 = statistics.quantiles(gaps, n=100)[98] if len(gaps) > 1 else gaps[0]
    print(
        f"\n{label}: n={len(gaps)} median={statistics.median(gaps):.3f}s p99={p99:.3f}s "
        f"max={max(gaps):.3f}s"
    )


async def test_twenty_redis_restarts(service: Service, fault_redis: RedisServer) -> None:
    acc = account()
    gaps = []
    async with subscriber(service, acc) as ws, Feed(fault_redis.port, acc):
        await first_event_after(ws, time.time(), 5)
        for _ in range(20):
            fault_redis.kill()
            # The outage is visible while it lasts.
            deadline = time.monotonic() + 5
            while health(service) != 502:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await drain(ws)
            fault_redis.start()  # returns once Redis answers PING
            gaps.append(await first_event_after(ws, time.time(), 10))
            assert health(service) == 200
        assert not ws.closed
    report("redis restart -> delivery", gaps)
    assert statistics.quantiles(gaps, n=100)[98] < 5.0
    assert metric(service.url, "bus_reconnects_total") >= 20
    assert service.proc.poll() is None


async def test_client_kill_pubsub(service: Service, fault_redis: RedisServer) -> None:
    acc = account()
    admin = fault_redis.client()
    gaps = []
    async with subscriber(service, acc) as ws, Feed(fault_redis.port, acc):
        await first_event_after(ws, time.time(), 5)
        for _ in range(5):
            assert admin.execute_command("CLIENT KILL TYPE pubsub") >= 1
            gaps.append(await first_event_after(ws, time.time(), 10))
    report("CLIENT KILL TYPE pubsub -> delivery", gaps)
    assert metric(service.url, "bus_reconnects_total") >= 5


async def test_output_buffer_eviction(service: Service, fault_redis: RedisServer) -> None:
    acc = account()
    admin = fault_redis.client()
    async with subscriber(service, acc) as ws:
        admin.publish(f"luna-sender:{acc}", face_message([face_event(ts=0)]))
        await ws.receive()
        admin.config_set("client-output-buffer-limit", "pubsub 65536 32768 1")
        # One message over the hard limit: Redis drops the subscriber connection.
        admin.publish(f"luna-sender:{acc}", face_message([face_event(pad="x" * 200_000, ts=0)]))
        admin.config_set("client-output-buffer-limit", "pubsub 256mb 128mb 60")
        async with Feed(fault_redis.port, acc):
            gap = await first_event_after(ws, time.time(), 10)
    print(f"\noutput-buffer eviction -> delivery resumed in {gap:.3f}s")
    assert metric(service.url, "bus_reconnects_total") >= 1


async def test_poison_messages_are_skipped(service: Service, fault_redis: RedisServer) -> None:
    acc = account()
    channel = f"luna-sender:{acc}"
    admin = fault_redis.client()
    poison = [
        b"{not json",
        b"\xc1\xc1\xc1",  # msgpack's never-used byte
        orjson.dumps({"events": "not a list"}),
        orjson.dumps([1, 2, 3]),
        msgpack.packb({"events": [1, 2]}),
        b"{" + b" " * (50 * 1024 * 1024) + b"}",  # 50 MB, over bus_message_max_bytes
    ]
    with admin:
        async with subscriber(service, acc) as ws:
            for i, body in enumerate(poison):
                admin.publish(channel, body)
                admin.publish(channel, face_message([face_event(ok=i)]))
                msg = await asyncio.wait_for(ws.receive(), 20)
                assert orjson.loads(msg.data)["event"]["ok"] == i
    assert metric(service.url, "bus_poison_messages_total") == len(poison)
    log = service.log()
    assert log.count(f"on channel {channel}") == len(poison)
    assert service.proc.poll() is None


async def test_a_health_probe_storm_logs_one_line_a_second(
    service: Service, fault_redis: RedisServer
) -> None:
    """Every failed /healthcheck wrote an INFO line: a burst of probes against a stopped Redis
    filled the log with identical lines (an outside pass: 100 from one burst)."""
    fault_redis.stop()

    async def probe(session: aiohttp.ClientSession) -> int:
        async with session.get(service.url + "/healthcheck") as resp:
            return resp.status

    async with aiohttp.ClientSession() as session:
        assert set(await asyncio.gather(*(probe(session) for _ in range(60)))) == {502}
        await asyncio.sleep(1.1)
        assert await probe(session) == 502
    lines = [line for line in service.log().splitlines() if "healthcheck failed" in line]
    assert len(lines) == 2, lines
    assert "more since the last report" in lines[-1], lines


async def test_a_history_outage_logs_one_line_not_one_a_second(
    service: Service, fault_redis: RedisServer
) -> None:
    """Redis refuses the history's writes (OOM) while events flow: live delivery goes on
    without offsets, and the log says so once, not once per breaker cooldown (1 s) for as long
    as the outage lasts."""
    acc = account()
    admin = fault_redis.client()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            service.ws_url + "/ws", headers={"Luna-Account-Id": acc}, params={"recover": "true"}
        ) as ws,
    ):
        admin.config_set("maxmemory", 1)  # noeviction: every write refused with OOM
        try:
            for seq in range(70):  # 3.5 s: three breaker cooldowns and more
                async with session.post(
                    service.url + "/publish",
                    json=publish_body(seq),
                    headers={"Luna-Account-Id": acc},
                ) as resp:
                    assert resp.status == 204
                await asyncio.sleep(0.05)
            seqs = []
            while len(seqs) < 70:
                msg = orjson.loads((await ws.receive(timeout=10)).data)
                seqs.append(msg["event"]["seq"])
                assert "offset" not in msg
            assert seqs == list(range(70))
        finally:
            admin.config_set("maxmemory", 0)
    lines = [line for line in service.log().splitlines() if "unavailable (" in line]
    assert len(lines) == 1, lines
    assert "maxmemory" in lines[0]
