"""/healthcheck on a Redis Cluster asks the nodes this instance reads events from.

Before 2026-11-29 its PING went to the cluster client's default node: frozen, that node made
every instance unready (the readiness probe takes every pod out at once) though they delivered
from another node, while a frozen node they did read from stayed green for the 5 s health grace
(an outside pass).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from luna_sender.bus.subscriptions import KEEPALIVE

from .faults import health
from .ha import ClusterSetup, running
from .helpers import Service, account
from .test_faults_bus import poster, ready

pytestmark = pytest.mark.slow


async def _statuses(svc: Service, seconds: float) -> list[int]:
    """/healthcheck's status every 0.25 s for ``seconds``."""
    seen: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append((await asyncio.to_thread(health, svc.url))[0])
        await asyncio.sleep(0.25)
    return seen


async def _default_node(setup: ClusterSetup) -> int:
    """The port of the node a redis-py cluster client sends PING to (its default node)."""
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in setup.nodes])
    try:
        await client.initialize()
        return int(client.get_default_node().port)
    finally:
        await client.aclose()


@pytest.fixture
def frozen() -> Iterator[list[ClusterSetup]]:
    """Whatever a test freezes is woken however it ends (a frozen node outlives its SIGTERM)."""
    setups: list[ClusterSetup] = []
    yield setups
    for setup in setups:
        for node in setup.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("replicas", [0, 1])
async def test_classic_mode_health_follows_the_subscription_node(
    frozen: list[ClusterSetup], replicas: int
) -> None:
    """The subscription's node frozen: 502 at once (it delivers nothing), then 200 again, still
    frozen, once the subscription has moved to a node that answers (with replicas, while the
    frozen master fails over)."""
    with running(
        ClusterSetup(node_timeout_ms=20000 if not replicas else 2000, replicas=replicas)
    ) as setup:
        frozen.append(setup)
        svc = Service("--redis-url", setup.url)
        first = setup.nodes[0]  # the first node of the URL carries the subscription
        assert first.proc is not None
        try:
            await ready(svc)
            acc = account()
            while setup.owner(f"luna-sender:{acc}") is not first:
                acc = account()
            async with aiohttp.ClientSession() as session:
                post = poster(session, svc, {"Luna-Account-Id": acc}, {})

                async def producing() -> None:  # its failures reload the slot map
                    for n in itertools.count():
                        await post(n)
                        await asyncio.sleep(0.05)

                producer = asyncio.ensure_future(producing())
                first.proc.send_signal(signal.SIGSTOP)
                during = await _statuses(svc, 12)
                first.proc.send_signal(signal.SIGCONT)
                producer.cancel()
            assert 502 in during[:10], during  # within 2.5 s
            assert "moving to another node" in svc.log()
            assert during[-8:] == [200] * 8, (during, svc.log()[-2000:])
        finally:
            assert svc.terminate() == 0


async def test_sharded_mode_health_asks_the_shards_it_reads(frozen: list[ClusterSetup]) -> None:
    """A master this instance reads nothing from frozen: still 200 (its own accounts' publishes
    are refused, truthfully). The master it reads from frozen: 502 within 2 s."""
    with running(ClusterSetup(node_timeout_ms=20000)) as setup:
        frozen.append(setup)
        svc = Service("--redis-url", setup.url + "?sharded=1")
        read = setup.owner(KEEPALIVE)
        acc = account()
        while setup.owner(f"luna-sender:{acc}") is not read:  # one shard connection only
            acc = account()
        default = await _default_node(setup)
        general = setup.owner("luna-sender-general-events")  # read too (general events)
        unread = [n for n in setup.nodes if n is not read and n is not general]
        other = next((n for n in unread if n.port == default), unread[0])
        # A node read from that the old PING (the default node) did not ask, where there is one.
        watched = next((n for n in (general, read) if n.port != default), read)
        assert other.proc is not None and watched.proc is not None
        try:
            await ready(svc)
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc})
                other.proc.send_signal(signal.SIGSTOP)
                unread_frozen = await _statuses(svc, 3)
                other.proc.send_signal(signal.SIGCONT)
                assert unread_frozen == [200] * len(unread_frozen), unread_frozen
                watched.proc.send_signal(signal.SIGSTOP)
                read_frozen = await _statuses(svc, 2)
                watched.proc.send_signal(signal.SIGCONT)
                assert 502 in read_frozen, read_frozen
                status, body = await asyncio.to_thread(health, svc.url)
                deadline = time.monotonic() + 10
                while status != 200 and time.monotonic() < deadline:
                    status, body = await asyncio.to_thread(health, svc.url)
                assert status == 200, body
                await ws.close()
        finally:
            assert svc.terminate() == 0
