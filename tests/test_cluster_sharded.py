"""The sharded Cluster bus (``?sharded=1``) against a real three-master cluster.

An outside pass (2026-11-29) saw a burst of 3,000 publishes leave such a service "deaf for
good": every shard connection was polled in turn with a 20 ms wait on each idle one, so messages
came out at ~50 a second and every later event queued behind the burst. Its PINGs went to a
connection nobody read, so the shutdown's flush and the subscription self-check never got their
answer either.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from luna_sender.bus.cluster import ShardedClusterBus
from luna_sender.bus.subscriptions import KEEPALIVE

from .ha import ClusterSetup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    setup = ClusterSetup()
    try:
        setup.start()
    except BaseException:
        setup.close()
        raise
    yield setup
    setup.close()


def _producer(cluster: ClusterSetup) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes])


async def _channel_off(producer: RedisCluster, other: str) -> str:
    """A channel whose slot another master owns than ``other``'s: two shard connections."""
    await producer.initialize()
    taken = producer.get_node_from_key(other).name
    while True:
        channel = f"luna-sender:{uuid.uuid4()}"
        if producer.get_node_from_key(channel).name != taken:
            return channel


async def _started(cluster: ClusterSetup, got: list[bytes], channel: str) -> ShardedClusterBus:
    bus = ShardedClusterBus(cluster.url + "?sharded=1")
    await bus.start(lambda chan, data: got.append(data) if chan == channel else None)
    deadline = time.monotonic() + 10
    while not bus.connected:
        assert time.monotonic() < deadline, "the sharded bus did not connect"
        await asyncio.sleep(0.02)
    await bus.subscribe(channel)
    assert bus.subs.live(channel)
    return bus


async def test_a_burst_comes_out_at_once_and_a_flush_waits_for_every_shard(
    cluster: ClusterSetup,
) -> None:
    producer = _producer(cluster)
    channel = await _channel_off(producer, KEEPALIVE)
    got: list[bytes] = []
    bus = await _started(cluster, got, channel)
    try:
        n = 3000
        pipe = producer.pipeline(transaction=False)
        for i in range(n):
            pipe.spublish(channel, b"%d" % i)
        await pipe.execute()
        # The flush's PING is answered by every shard after what it sent before: everything is in.
        await bus.flush(20.0)
        assert len(got) == n, f"{len(got)} of {n} read when the flush returned"
        assert got == [b"%d" % i for i in range(n)]  # one shard's messages in its order
    finally:
        await bus.stop()
        await producer.aclose()


async def test_a_subscription_lost_on_a_shard_is_repaired(cluster: ClusterSetup) -> None:
    """The self-check's PING reaches every shard, so drift found there is repaired."""
    producer = _producer(cluster)
    channel = await _channel_off(producer, KEEPALIVE)
    got: list[bytes] = []
    bus = await _started(cluster, got, channel)
    repaired = asyncio.Event()
    bus.observe(reconnected=lambda: None, repaired=lambda *_: repaired.set())
    try:
        pubsub = bus._pubsub
        assert pubsub is not None
        shard = pubsub.node_pubsub_mapping[producer.get_node_from_key(channel).name]
        await shard.execute_command("SUNSUBSCRIBE", channel)  # drift, as Redis sees it
        await asyncio.wait_for(repaired.wait(), 10)
        deadline = time.monotonic() + 5
        while await producer.spublish(channel, b"after") == 0 or not got:
            assert time.monotonic() < deadline, "the channel was not subscribed again"
            await asyncio.sleep(0.1)
        assert got[-1] == b"after"
    finally:
        await bus.stop()
        await producer.aclose()
