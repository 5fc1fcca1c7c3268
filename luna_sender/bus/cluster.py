"""Redis Cluster backend: ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://``).

Plain PUBLISH in a Redis Cluster reaches every node, so one ordinary SUBSCRIBE connection to any
node hears every producer. The reader therefore subscribes through one node at a time and, when
that node goes away, the reconnect loop (redis.py) moves on to the next known node — the startup
list plus whatever the cluster reported. Publishing goes through redis-py's cluster client.

``?sharded=1`` (Redis >= 7) picks :class:`ShardedClusterBus` instead: SPUBLISH/SSUBSCRIBE, each
channel living on the node that owns its slot.

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
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.exceptions import ResponseError

from luna_sender.bus.base import NOT_PUBLISHED, BusError, BusOptions
from luna_sender.bus.dialect import SHARDED
from luna_sender.bus.nodes import NodePool, answers
from luna_sender.bus.publishing import publish_once, reason
from luna_sender.bus.redis import NO_RETRY, RedisBus
from luna_sender.bus.shards import ShardReaders
from luna_sender.bus.subscriptions import KEEPALIVE
from luna_sender.bus.urls import parse_hosts, split_url

log = logging.getLogger("luna_sender.bus")
RETAKE = 0.2  # seconds at most between attempts to take a lost shard's channels again
STALL = 2.0  # seconds without an answer on the subscription after which a Cluster bus acts


def cluster_bus(url: str, options: BusOptions | None = None) -> ClusterBus:
    """The Cluster backend the URL asks for: classic pub/sub, or sharded with ``?sharded=1``."""
    query = split_url(url).query
    sharded = query.get("sharded", ["0"])[0].lower() in ("1", "true", "yes")
    return (ShardedClusterBus if sharded else ClusterBus)(url, options)


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
        self._reload: asyncio.Task[None] | None = None
        self._reloaded_at = 0.0
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
        host, port = nodes[next(self._rotation) % len(nodes)]
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
        del old  # its pub/sub connection was already closed by the reader
        return self._node_client

    async def _connect(self) -> PubSub:
        # ClusterPubSub routes SSUBSCRIBE by the slot map: loaded on the first connect, and
        # reloaded on every later one, since a lost shard may have failed over meanwhile.
        if self._loaded:
            await self._cluster.nodes_manager.initialize()
        await self._cluster.initialize()
        self._loaded = True
        return await super()._connect()

    async def stop(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
        await super().stop()

    def _reload_soon(self) -> None:
        """After a publish failed on a node: the slot map may name a master that is gone (the
        cluster client reloaded it on such errors; our publishes bypass it). At most one reload
        a second, in the background: the publishes meanwhile fail fast and truthfully."""
        now = time.monotonic()
        if (self._reload is not None and not self._reload.done()) or now - self._reloaded_at < 1:
            return
        self._reloaded_at = now
        self._reload = asyncio.ensure_future(self._cluster.nodes_manager.initialize())
        self._reload.add_done_callback(lambda task: task.cancelled() or task.exception())

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
                    moved = refusal is not None and str(refusal).startswith(("MOVED", "ASK"))
                    if not moved or attempt == 2:
                        if refusal is None:
                            self._reload_soon()  # a node unreachable or silent: failed over?
                        raise
                # The slot moved: Redis refused it unpublished, so one retry on the new owner
                # cannot duplicate it.
                await self._cluster.nodes_manager.initialize()
                node = await self._owner(channel)

    _verb = "PUBLISH"

    def _answered(self, node: str) -> None:
        """A publish on ``node`` succeeded (the sharded bus takes a lost shard again at once)."""

    async def _stalled(self, seconds: float) -> None:
        """The subscription's node stopped answering while others answer. Redis Cluster forwards
        PUBLISHes to it and drops some while it stands still (an outside pass: events lost behind
        ``recovered: true``): after :data:`STALL` s it moves, as after a lost connection."""
        connection = getattr(self._pubsub, "connection", None)
        transport = getattr(getattr(connection, "_writer", None), "transport", None)
        if seconds < STALL or transport is None or transport.is_closing():
            return
        here = (getattr(connection, "host", None), int(getattr(connection, "port", 0) or 0))
        others = [n for n in self._cluster.get_nodes() if (n.host, int(n.port)) != here]
        if not any([await answers(node) for node in others[:2]]):
            return  # the whole cluster stands still (it drops nothing then): stay
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


class ShardedClusterBus(ClusterBus):
    """Per-account channels hash to slots: SSUBSCRIBE each on the node owning it, and only for
    accounts with local subscribers (the hub drives subscribe/unsubscribe). Each shard connection
    is read by a task of its own (bus/shards.py); a lost one is taken again on its own (below)
    while the others read on."""

    dialect = SHARDED

    def __init__(self, url: str, options: BusOptions | None = None) -> None:
        super().__init__(url, options)
        self._shards: ShardReaders | None = None
        # Channels of a lost shard connection, until they are subscribed again: the reconciler
        # leaves them to _take_again, which says "cut" before their first new SSUBSCRIBE.
        self._lost: set[str] = set()
        self._taking: asyncio.Task[None] | None = None
        self._down: set[str] = set()  # shards logged as lost
        self._back = asyncio.Event()  # a publish reached one of them: try at once

    def _subscriber(self) -> Any:
        return self._cluster  # RedisCluster.pubsub(): one connection per shard owner

    _verb = "SPUBLISH"

    def _readers(self, pubsub: PubSub) -> ShardReaders:
        assert isinstance(pubsub, ClusterPubSub)  # _subscriber() is the cluster client
        if self._shards is None or self._shards.pubsub is not pubsub:
            self._shards = ShardReaders(pubsub, self._reply, self._pongs, self._shard_lost)
        return self._shards

    def _reply(self, msg: dict[str, Any]) -> None:
        assert self._handler is not None  # readers exist only once the bus has started
        self._on_reply(msg, self._handler)

    def _answered(self, node: str) -> None:
        if node in self._down:
            self._back.set()

    def _pongs(self, answered: int) -> None:
        for _ in range(answered):
            self._pong()

    async def _send(self, pubsub: PubSub, subscribe: bool, channels: set[str]) -> None:
        try:
            await super()._send(pubsub, subscribe, channels)
        except Exception:
            if subscribe and self._shards is not None and self._pubsub is pubsub:
                # A shard is unreachable (the others are fine, or the reader would have ended
                # the connection): what was not sent is taken again with the lost channels.
                assert isinstance(pubsub, ClusterPubSub)
                sent = pubsub._shard_channel_to_node
                self._shard_lost_channels(pubsub, {c for c in channels if c.encode() not in sent})
            raise
        finally:
            self._readers(pubsub).watch()  # an SSUBSCRIBE may have opened a new shard's connection

    def _diff(self) -> tuple[set[str], set[str]]:
        add, remove = super()._diff()
        return add - self._lost, remove

    async def subscribe(self, channel: str) -> None:
        """On a shard known lost, no wait: a socket's handshake took the 2 s subscribe timeout
        (the channel is still taken once the shard is back, as on a Redis known down)."""
        if self._down and not self.subs.live(channel):
            try:
                node = self._cluster.get_node_from_key(channel)
            except Exception:  # no node owns the slot right now: the usual bounded wait
                node = None
            if node is not None and node.name in self._down:
                self.subs.want(channel)
                self._dirty.set()
                return
        await super().subscribe(channel)

    async def _stalled(self, seconds: float) -> None:
        """A shard stopped answering. While its master owns its slots SPUBLISHes to it wait
        too (nothing lost): left alone. Once its replica has taken over, its channels are taken
        there (before, deaf for the whole freeze, /healthcheck green: an outside pass, 57 s)."""
        shards = self._shards
        if seconds < STALL or shards is None:
            return
        try:
            await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            log.debug("slot map reload failed: %s", exc)
            return
        for name in shards.unanswered():
            shard = shards.pubsub.node_pubsub_mapping.get(name)
            keys = shard.shard_channels if shard is not None else {}
            if any(self._owner_name(_text(key)) not in (name, None) for key in keys):
                shards.lose(name, BusError(f"not answering for {seconds:.1f} s, failed over"))

    def _owner_name(self, channel: str) -> str | None:
        with contextlib.suppress(Exception):
            return str(self._cluster.get_node_from_key(channel).name)  # type: ignore[union-attr]
        return None

    async def _repair(self, missing: set[str], extra: set[str]) -> None:
        if missing:  # unsubscribed by Redis: a failover moved their slots (ask the new owner)
            try:
                await self._cluster.nodes_manager.initialize()
            except Exception as exc:
                log.debug("slot map reload failed: %s", exc)
        await super()._repair(missing, extra)

    async def _read_loop(self, pubsub: PubSub) -> None:
        readers = self._readers(pubsub)
        readers.watch()
        await readers.failure()

    async def _ping(self, fut: asyncio.Future[None] | None) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise BusError("no pub/sub connection")
        readers = self._readers(pubsub)
        async with self._write_lock:
            shards = readers.subscribed()
            if not shards:
                raise BusError("no shard connection is subscribed")
            self._pings.append((self.subs.barrier(), fut, time.monotonic()))
            await readers.ping(shards)

    async def _drop_pubsub(self) -> None:
        shards, self._shards = self._shards, None
        if self._taking is not None:
            self._taking.cancel()
        self._lost.clear()  # the new connection subscribes everything wanted
        self._down.clear()
        if shards is not None:
            await shards.close()
        await super()._drop_pubsub()

    # --- one shard lost, the others reading on ----------------------------------------------

    def _shard_lost(self, name: str, shard: PubSub, exc: Exception) -> None:
        pubsub = self._pubsub
        if pubsub is None or self._shards is None or self._shards.pubsub is not pubsub:
            return
        (log.debug if name in self._down else log.warning)(  # once until they are back
            "bus shard %s lost: %s; its channels are taken again, the other shards read on",
            name,
            reason(exc),
            extra={"bus_state": "shard_lost", "shard": name},
        )
        self._down.add(name)
        self._shard_lost_channels(pubsub, {_text(key) for key in shard.shard_channels})
        closing = asyncio.ensure_future(shard.aclose())  # type: ignore[no-untyped-call]
        closing.add_done_callback(lambda task: task.cancelled() or task.exception())

    def _shard_lost_channels(self, pubsub: PubSub, channels: set[str]) -> None:
        assert isinstance(pubsub, ClusterPubSub)
        for channel in channels:  # redis-py must not move them itself, unseen by the bookkeeping
            key = channel.encode()
            pubsub.shard_channels.pop(key, None)
            pubsub._shard_channel_to_node.pop(key, None)
        self.subs.lost(channels)
        self._lost |= channels
        if self._taking is None or self._taking.done():
            self._taking = asyncio.ensure_future(self._take_again(pubsub))

    async def _take_again(self, pubsub: PubSub) -> None:
        """Subscribe a lost shard's channels again on whoever owns their slots now, once that
        node answers; the hub hears of the cut just before, so what was published meanwhile is
        marked as lost (docs/recovery.md) and no live event from after it comes first."""
        backoff = 0.05
        while self._lost and self._pubsub is pubsub:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._back.wait(), backoff)
            self._back.clear()
            # At most RETAKE apart: events published on the master once it is back are lost
            # here until its channels are subscribed again (an outside pass: ~40 per account).
            backoff = min(backoff * 2, RETAKE)
            self._lost &= self.subs.wanted | {KEEPALIVE}  # unwanted meanwhile: nothing to take
            try:
                await self._cluster.nodes_manager.initialize()  # failed over meanwhile?
            except Exception as exc:
                log.debug("slot map reload failed: %s", exc)
                continue
            by_node: dict[str, tuple[ClusterNode, set[str]]] = {}
            for channel in self._lost:
                node = self._cluster.get_node_from_key(channel)
                if node is not None:  # else no node owns the slot yet: the next round
                    by_node.setdefault(node.name, (node, set()))[1].add(channel)
            for node, channels in by_node.values():
                if not await answers(node):
                    continue
                self._lost -= channels
                if self._on_cut is not None:
                    self._on_cut(frozenset(channels - {KEEPALIVE}), True)
                with contextlib.suppress(Exception):  # back in _lost: taken on the next round
                    await self._send(pubsub, True, channels)
        if self._pubsub is pubsub:
            log.warning(
                "bus shard channels subscribed again (lost: %s)",
                ", ".join(sorted(self._down)),
                extra={"bus_state": "shard_back"},
            )
            self._down.clear()


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)
