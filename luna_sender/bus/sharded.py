"""Sharded Redis Cluster pub/sub (``redis+cluster://…?sharded=1``, Redis >= 7): each channel is
SSUBSCRIBEd on the master owning its slot, one connection per shard (bus/shards.py reads them),
and one shard's loss, stall or failover is that shard's business alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPubSub

from luna_sender.bus.base import NOT_REACHABLE, BusError, BusOptions
from luna_sender.bus.cluster import RETAKE, ClusterBus
from luna_sender.bus.dialect import SHARDED
from luna_sender.bus.link import STALL
from luna_sender.bus.nodes import answers, leads, reload_slot_map, role
from luna_sender.bus.publishing import reason
from luna_sender.bus.redis_ops import moved
from luna_sender.bus.shards import REFUSED, ShardReaders
from luna_sender.bus.subscriptions import KEEPALIVE

log = logging.getLogger("luna_sender.bus")
OWNERS_WAIT = 3.0  # seconds a repair waits for a slot map naming real masters


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
        if msg["type"] == REFUSED:
            # An SSUBSCRIBE sent by a map older than a slot move: checked now, not at the next
            # self-check (an outside pass: each slot move deaf for 0.75-0.8 s).
            if moved(msg["error"]) and not self._pings:
                task = asyncio.get_running_loop().create_task(self._ping(None))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return
        moved_channel = None
        if msg["type"] in SHARDED.unsubscribed:
            channel = _text(msg["channel"])
            subs = self.subs
            if channel in subs.requested and not subs.inflight.get(channel):
                moved_channel = channel  # no SUNSUBSCRIBE of ours owes a reply: Redis's own
        self._on_reply(msg, self._handler)
        if moved_channel is not None:
            # A master that loses a slot (a failover, a resharding) unsubscribes its channels
            # itself: repaired now, on the slot's new owner, rather than when the self-check
            # finds them up to ``audit_interval`` later (the events of that second were lost
            # behind 204s: 9 of 10 a second on a manual failover). No PING barrier is needed
            # to tell this from a late reply: no command of ours awaits one.
            task = asyncio.get_running_loop().create_task(self._repair({moved_channel}, set()))
            self._repairs_running.add(task)
            task.add_done_callback(self._repairs_running.discard)

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
        if not self.subs.live(channel):
            await self._first_on_its_shard(channel)
        await super().subscribe(channel)

    async def _first_on_its_shard(self, channel: str) -> None:
        """The first channel on a shard: its master checked (ROLE) first. A failover of a
        shard this instance reads nothing from leaves its map naming the demoted master until
        the next routes check, and Redis 7 lets the replica take the SSUBSCRIBE (an outside
        pass: 3 runs of 4 subscribed there 1 s after a failover, recovering sockets then cut
        when the self-check moved it). A shard already read from hears of a failover itself."""
        pubsub = self._pubsub
        try:
            node = self._cluster.get_node_from_key(channel)
        except Exception:
            return
        if not isinstance(pubsub, ClusterPubSub) or node is None:
            return
        # Only a node that says it is a replica is worth the wait: a silent one (frozen) gets
        # the usual bounded subscribe, as before, rather than this wait on top of it.
        if node.name not in pubsub.node_pubsub_mapping and await role(node, 0.3) == "slave":
            await self._owners_lead({channel})

    async def _stalled(self, seconds: float) -> None:
        """A shard stopped answering. While its master owns its slots SPUBLISHes to it wait
        too (nothing lost): left alone. Once its replica has taken over, its channels are taken
        there (before, deaf for the whole freeze, /healthcheck green: an outside pass, 57 s)."""
        shards = self._shards
        if seconds < STALL or shards is None:
            return
        try:
            await reload_slot_map(self._cluster)
        except Exception as exc:
            log.debug("slot map reload failed: %s", exc)
            return
        for name in shards.unanswered():
            shard = shards.pubsub.node_pubsub_mapping.get(name)
            keys = shard.shard_channels if shard is not None else {}
            if any(self._owner_name(_text(key)) not in (name, None) for key in keys):
                shards.lose(name, BusError(f"not answering for {seconds:.1f} s, failed over"))

    async def _health_probe(self) -> None:
        """PING every subscribed shard's master (see ClusterBus): a master this instance does
        not read from leaves it ready."""
        shards = self._shards
        names = (
            [n for n, ps in shards.pubsub.node_pubsub_mapping.items() if ps.subscribed]
            if shards
            else []
        )
        nodes = [node for node in map(self._node_named, names) if node is not None]
        if not nodes:
            raise BusError("no shard connection is subscribed", NOT_REACHABLE)
        answered = await asyncio.gather(*(answers(node) for node in nodes))
        silent = sorted(node.name for node, ok in zip(nodes, answered, strict=True) if not ok)
        if silent:
            self._slot_map.soon()  # failed over? (its channels are then taken on the new master)
            raise BusError(f"no answer to a PING from {', '.join(silent)}", NOT_REACHABLE)

    def _node_named(self, name: str) -> ClusterNode | None:
        return self._cluster.get_node(node_name=name)

    def _owner_name(self, channel: str) -> str | None:
        with contextlib.suppress(Exception):
            return str(self._cluster.get_node_from_key(channel).name)  # type: ignore[union-attr]
        return None

    async def _repair(self, missing: set[str], extra: set[str]) -> None:
        if missing:  # unsubscribed by Redis: a failover moved their slots (ask the new owner)
            await self._owners_lead(missing)
        await super()._repair(missing, extra)

    async def _owners_lead(self, channels: set[str]) -> None:
        """The slot map reloaded until it names, for each channel, a node that says it is a
        master (:func:`leads`), for at most :data:`OWNERS_WAIT` s: just after a failover the
        node asked may not know of it yet."""
        deadline = time.monotonic() + OWNERS_WAIT
        while True:
            try:
                await reload_slot_map(self._cluster)
                owners = {self._cluster.get_node_from_key(c) for c in channels}
                if all(await asyncio.gather(*(leads(n) for n in owners if n is not None))):
                    return
            except Exception as exc:
                log.debug("slot map reload failed: %s", exc)
            if time.monotonic() > deadline:
                return  # the self-check repairs what this leaves wrong
            await asyncio.sleep(0.05)

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
                await reload_slot_map(self._cluster)  # failed over meanwhile?
            except Exception as exc:
                log.debug("slot map reload failed: %s", exc)
                continue
            by_node: dict[str, tuple[ClusterNode, set[str]]] = {}
            for channel in self._lost:
                node = self._cluster.get_node_from_key(channel)
                if node is not None:  # else no node owns the slot yet: the next round
                    by_node.setdefault(node.name, (node, set()))[1].add(channel)
            for node, channels in by_node.values():
                if not await leads(node):  # silent, or a demoted master the map still names
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
