"""Redis Cluster backend: ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://``).

Plain PUBLISH in a Redis Cluster reaches every node, so one ordinary SUBSCRIBE connection to any
node hears every producer. The reader therefore subscribes through one node at a time and, when
that node goes away, the reconnect loop (redis.py) moves on to the next known node — the startup
list plus whatever the cluster reported. Publishing goes through redis-py's cluster client.

``?sharded=1`` (Redis >= 7) picks ``ShardedClusterBus`` (bus/sharded.py) instead:
SPUBLISH/SSUBSCRIBE, each channel living on the node that owns its slot.

The recovery history (bus/redis_history.py) uses a client of its own from :func:`cluster_client`:
its keys are hash-tagged by channel, so each script's keys share one slot and the cluster
pipeline sends every EVALSHA to the node owning it (docs/recovery.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import MovedError, ResponseError

from luna_sender.bus.base import (
    NOT_PUBLISHED,
    NOT_REACHABLE,
    BusError,
    BusOptions,
    MessageHandler,
)
from luna_sender.bus.dialect import SHARDED
from luna_sender.bus.link import STALL, pubsub_link
from luna_sender.bus.nodes import NodePool, SlotMapReload, answers, reload_slot_map
from luna_sender.bus.publishing import health_ping, publish_once, reason
from luna_sender.bus.redis import NO_RETRY, RedisBus
from luna_sender.bus.subscriptions import KEEPALIVE
from luna_sender.bus.urls import parse_hosts, split_url

log = logging.getLogger("luna_sender.bus")
RETAKE = 0.2  # seconds at most between attempts to take a lost shard's channels again
CONNECT_WAIT = 3.0  # seconds a classic subscription connection may take to be set up
ROUTES_CHECK = 5.0  # seconds between checks of the publishes' slot map against the cluster


def cluster_bus(url: str, options: BusOptions | None = None) -> ClusterBus:
    """The Cluster backend the URL asks for: classic pub/sub, or sharded with ``?sharded=1``."""
    query = split_url(url).query
    sharded = query.get("sharded", ["0"])[0].lower() in ("1", "true", "yes")
    if sharded:
        from luna_sender.bus.sharded import ShardedClusterBus

        return ShardedClusterBus(url, options)
    return ClusterBus(url, options)


def cluster_client(url: str) -> RedisCluster:
    """The cluster client for a ``redis+cluster://`` URL (the bus's publisher, the history)."""
    parsed = split_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in parse_hosts(parsed.hosts, 6379)],
        ssl=parsed.tls,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        # No cluster-level retries: a retried PUBLISH after a timeout is a duplicate event.
        retry=NO_RETRY,
        username=parsed.user,
        password=parsed.password,
    )


class ClusterBus(RedisBus):
    announces = False  # a node counts only its own clients' subscriptions (bus/presence.py)

    def __init__(self, url: str, options: BusOptions | None = None) -> None:
        parsed = split_url(url)
        self._tls = parsed.tls
        self._user, self._password = parsed.user, parsed.password
        self._nodes: list[tuple[str, int]] = parse_hosts(parsed.hosts, 6379)
        self._rotation = itertools.count()
        self._cluster = cluster_client(url)
        self._node_client: aioredis.Redis | None = None
        self._loaded = False  # the slot map, once: later connects reload it (a failover)
        self._slot_map = SlotMapReload(self._cluster)
        self._prefer: tuple[str, int] | None = None
        self._links_reset = 7.5  # seconds (see _links_reset_after), until connected
        super().__init__(url, options, client=self._cluster)

    def _known_nodes(self) -> list[tuple[str, int]]:
        known = list(self._nodes)
        try:
            for node in self._cluster.get_nodes():
                pair = (node.host, int(node.port))
                if pair not in known:
                    known.append(pair)
        except Exception:  # topology not loaded yet: the startup list will do
            pass
        return known

    def _subscriber(self) -> Any:
        nodes = self._known_nodes()
        host, port = self._prefer or nodes[next(self._rotation) % len(nodes)]
        self._prefer = None  # a node that just answered (_stalled), else the next in turn
        old, self._node_client = (
            self._node_client,
            aioredis.Redis(
                host=host,
                port=port,
                ssl=self._tls,
                socket_connect_timeout=1.0,
                socket_timeout=None,
                retry=NO_RETRY,
                username=self._user,
                password=self._password,
            ),
        )
        if old is not None:  # closed by the reader, unless its connect never finished
            closing = asyncio.ensure_future(old.connection_pool.disconnect())
            closing.add_done_callback(lambda task: task.cancelled() or task.exception())
        return self._node_client

    async def _connect(self) -> PubSub:
        if self.dialect is SHARDED:  # waits for every shard, as before
            # ClusterPubSub routes SSUBSCRIBE by the slot map: loaded on the first connect, and
            # reloaded on every later one, since a lost shard may have failed over meanwhile.
            if self._loaded:
                await reload_slot_map(self._cluster)
            await self._cluster.initialize()
            self._loaded = True
            return await super()._connect()
        # One node's SUBSCRIBE needs no slot map: reloaded in the background (the publishes'
        # routes, the nodes to move to). Awaited, it asked the startup nodes in order, and a
        # frozen first one held every move for its 2 s timeout (an outside pass: 4.7 s deaf).
        self._slot_map.soon()
        # A frozen node accepts the TCP connection and never answers its handshake: bounded,
        # the reader moves on to the next node (an outside pass: 12 s stuck on a second frozen
        # node while a third answered).
        pubsub = await asyncio.wait_for(super()._connect(), CONNECT_WAIT)
        self._links_reset = await self._links_reset_after()
        return pubsub

    async def _links_reset_after(self) -> float:
        """Seconds a node may stand still before the others drop the PUBLISHes they forward
        to it: a node frees its cluster-bus link to a peer whose PING is pending for half
        ``cluster-node-timeout``, and with it what it had not delivered yet."""
        try:
            assert self._node_client is not None
            async with asyncio.timeout(1.0):
                reply = await self._node_client.config_get("cluster-node-timeout")
            return int(str(reply["cluster-node-timeout"])) / 2000
        except Exception:  # CONFIG renamed or refused (managed Redis): Redis's default
            return 7.5

    def _ping_every(self) -> float:
        return min(self._audit_interval, self._links_reset / 4)

    async def _quick_pings(self) -> None:
        """The self-check's PING, often enough to tell a stand-still of the subscription's
        node that may have dropped events (see :meth:`_pong`)."""
        while True:
            await asyncio.sleep(self._ping_every())
            if self._pubsub is not None and self.connected and not self._pings:
                with contextlib.suppress(Exception):
                    await self._ping(None)

    def _pong(self) -> None:
        """A PING answered after the subscription's node stood still long enough for the
        others to drop what they forwarded to it: every channel is told of a cut (gap
        markers, recovering sockets closed) though the connection held. Before, a freeze
        shorter than the 2 s that moves the subscription lost events behind ``recovered:
        true`` (an outside pass: 4-5 events in 9 freezes of 10, 1.4-1.9 s each)."""
        if self._pings and self.dialect is not SHARDED:
            stood = time.monotonic() - self._pings[0][2]
            if stood >= max(0.2, self._links_reset - self._ping_every() - 0.1):
                log.warning(
                    "bus subscription node stood still for %.1f s: the events other nodes "
                    "forwarded to it meanwhile may be lost; recovering sockets are told",
                    stood,
                    extra={"bus_state": "stood_still"},
                )
                if self._on_cut is not None:
                    self._on_cut(frozenset(self.subs.confirmed - {KEEPALIVE}), False)
        super()._pong()

    async def _health_probe(self) -> None:
        """PING the node this instance reads events from, on the pool its subscription came
        from. Before, the PING went to the cluster client's default node: frozen, it made every
        instance unready though they delivered from another node (the readiness probe takes
        every pod out at once), and a frozen subscription node stayed green for the health
        grace. A master nobody here reads from answers for its own accounts: their publishes
        are refused (503) truthfully."""
        if self._node_client is None:
            raise BusError("no pub/sub connection", NOT_REACHABLE)
        await health_ping(self._node_client)

    async def start(self, on_message: MessageHandler) -> None:
        await super().start(on_message)
        self._tasks.append(asyncio.create_task(self._slot_map.follow(ROUTES_CHECK)))
        if self.dialect is not SHARDED:
            self._tasks.append(asyncio.create_task(self._quick_pings()))

    async def stop(self) -> None:
        self._slot_map.cancel()
        await super().stop()

    async def publish(self, channel: str, data: bytes) -> None:
        """One PUBLISH on a connection of the node owning the channel's slot, classified as on
        a single Redis (publishing.py): redis-py's cluster client gave up after its socket
        timeout (a 3 s freeze answered "may still be delivered" at 2.3 s) and could not say
        whether a failure came before or after the write ("not published" events were
        delivered under connection kills). Each node's stall is its own: one frozen master must
        not refuse the others' publishes (an outside pass: ~600 refusals a run, all for the
        healthy nodes)."""
        node = await self._owner(channel)
        async with self._publish_guard(self._publish_slots, self._publish_timeout, node.name):
            for attempt in (1, 2):
                try:
                    pool = NodePool(node)
                    await publish_once(pool, channel, data, self._publish_timeout, self._verb)
                    self._answered(node.name)
                    return
                except BusError as exc:
                    refusal = exc.__cause__ if isinstance(exc.__cause__, ResponseError) else None
                    if not isinstance(refusal, MovedError) or attempt == 2:
                        if refusal is None:
                            # unreachable or silent: failed over? (meanwhile fail fast, truthfully)
                            self._slot_map.soon()
                        raise  # ASK (a slot migrating) too: "not published", truthfully
                # The slot moved: Redis refused it unpublished, so one retry on the owner the
                # refusal names cannot duplicate it (the map may not know of it yet).
                self._slot_map.soon()
                named = self._cluster.get_node(host=refusal.host, port=refusal.port)
                node = named or await self._owner(channel)

    _verb = "PUBLISH"

    def _answered(self, node: str) -> None:
        """A publish on ``node`` succeeded (the sharded bus takes a lost shard again at once)."""

    async def _stalled(self, seconds: float) -> None:
        """The subscription's node stopped answering while others answer. Redis Cluster forwards
        PUBLISHes to it and drops some while it stands still (an outside pass: events lost behind
        ``recovered: true``): after :data:`STALL` s it moves, as after a lost connection."""
        link = pubsub_link(self._pubsub)
        if seconds < STALL or link is None:
            return
        transport, here = link
        others = [n for n in self._cluster.get_nodes() if (n.host, int(n.port)) != here]
        oldest = self._pings[0]
        live = [node for node in others[:3] if await answers(node)]
        await asyncio.sleep(0.2)  # a cluster waking up answers the old PING too: then stay
        if not live or not self._pings or self._pings[0] is not oldest:
            return  # the whole cluster stood still (it drops nothing then), or it answered
        self._prefer = (live[0].host, int(live[0].port))
        log.warning(
            "bus subscription node not answering for %.1f s: moving to another node",
            seconds,
            extra={"bus_state": "stalled"},
        )
        transport.abort()  # the reader sees the connection lost and reconnects elsewhere

    async def _owner(self, channel: str) -> ClusterNode:
        try:
            await self._cluster.initialize()  # once; a no-op after the first slot map
            node = self._cluster.get_node_from_key(channel)
        except Exception as exc:
            raise BusError(f"not sent: {reason(exc)}", NOT_PUBLISHED, published=False) from exc
        if node is None:
            raise BusError("not sent: no node owns the channel's slot", NOT_PUBLISHED, False)
        return node
