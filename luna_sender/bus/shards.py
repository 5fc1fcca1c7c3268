"""Reading a sharded Cluster subscription: one reader per shard connection, none waiting on another.

Why: redis-py's ``ClusterPubSub.get_sharded_message(timeout=t)`` polls the shard connections in
turn and waits up to ``t`` on each idle one before it looks at the next. With the keepalive
channel on one shard and an account on another, every message cost a 20 ms wait on the idle
shard: about 50 messages a second in all, so a burst of 3,000 publishes took a minute to come
out and every later event queued behind it (an outside pass saw delivery "stop for good").

Here each shard connection has a task blocked on its own socket, and its replies go to the bus's
reply handler the moment they are read. Replies of one shard keep their order (one task reads
it); shards were never ordered against each other. A shard connection appears when the first
channel of its slot range is subscribed, so the bus calls :meth:`ShardReaders.watch` after every
subscription command. A PING goes to every shard, and counts as answered when each has answered:
only then are all replies written before it in (the subscription audit's barrier).

One shard's connection failing is that shard's business: its reader reports it to ``on_lost``
(the bus then takes that shard's channels again, bus/sharded.py) and the other shards read on.
Before, any shard's failure dropped every shard's subscriptions: an outside pass killing one of
three masters for 4.5 s lost ~900 events published meanwhile on the two healthy ones. Only when
no other shard connection is left does the failure end the whole connection (the bus then
reconnects from scratch, as for a single Redis).
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import ResponseError

log = logging.getLogger("luna_sender.bus")
REFUSED = "refused"  # the type of the reply-like record of an error reply


class ShardReaders:
    """The reader tasks of one ClusterPubSub (a new one per bus connection)."""

    def __init__(
        self,
        pubsub: ClusterPubSub,
        on_reply: Callable[[dict[str, Any]], None],
        on_pongs: Callable[[int], None],
        on_lost: Callable[[str, PubSub, Exception], None],
    ) -> None:
        self.pubsub = pubsub
        self._on_reply = on_reply
        self._on_pongs = on_pongs
        self._on_lost = on_lost
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Per PING, the shards that have not answered it yet; a shard answers its PINGs in order.
        self._pongs_due: deque[set[str]] = deque()

    def watch(self) -> None:
        """Start a reader for each shard connection that has none (a new shard was subscribed)."""
        if self._failed.done():
            return
        for name in list(self.pubsub.node_pubsub_mapping):
            task = self._tasks.get(name)
            if task is None or task.done():
                self._tasks[name] = asyncio.ensure_future(self._read(name))

    async def failure(self) -> None:
        """Returns never; raises the first shard connection's error (the bus then reconnects).
        Meanwhile looks for new shard connections every second: when the slot map is reloaded
        (bus/sharded.py, after a failover) redis-py moves a channel to its new owner itself."""
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self._failed), 1.0)
            except TimeoutError:
                self.watch()

    def subscribed(self) -> list[PubSub]:
        """The shard connections a PING must reach (the keepalive channel keeps one)."""
        return [ps for ps in self.pubsub.node_pubsub_mapping.values() if ps.subscribed]

    async def ping(self, shards: list[PubSub]) -> None:
        """PING these shards; ``on_pongs`` is told when the last one has answered."""
        names = {name for name, ps in self.pubsub.node_pubsub_mapping.items() if ps in shards}
        self._pongs_due.append(names)
        for shard in shards:
            await shard.ping()

    def _answered(self, name: str) -> None:
        """Shard ``name`` answered the oldest PING it owed."""
        for due in self._pongs_due:
            if name in due:
                due.discard(name)
                break
        self._settle()

    def _settle(self) -> None:
        done = 0
        while self._pongs_due and not self._pongs_due[0]:
            self._pongs_due.popleft()
            done += 1
        if done:
            self._on_pongs(done)

    def unanswered(self) -> set[str]:
        """The shards that have not answered the oldest PING."""
        return set(self._pongs_due[0]) if self._pongs_due else set()

    def lose(self, name: str, exc: Exception, shard: PubSub | None = None) -> None:
        """Shard ``name``'s connection is lost (``shard``: the one its reader read)."""
        mapping = self.pubsub.node_pubsub_mapping
        if shard is not None and mapping.get(name) is not shard:
            return  # already handled: the name may be a new connection's by now
        shard = mapping.get(name)
        others = [n for n, ps in mapping.items() if n != name and _alive(ps)]
        if shard is None or not others:
            if not self._failed.done():  # the last one: the whole connection is gone
                self._failed.set_exception(exc)
            return
        del mapping[name]  # redis-py must not route anything to it any more
        for due in self._pongs_due:  # it answers none of its PINGs: the others settle them
            due.discard(name)
        self._settle()
        self._on_lost(name, shard, exc)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if not self._failed.done():
            self._failed.cancel()

    async def _read(self, name: str) -> None:
        pubsub = self.pubsub
        # Only the name is read; a node gone from the slot map still names its connection.
        node: Any = pubsub.cluster.get_node(node_name=name) or types.SimpleNamespace(name=name)
        forever: Any = None  # blocks until a reply (redis-py annotates the timeout as float)
        shard: PubSub | None = None
        try:
            # A shard left with no channel is closed and dropped by redis-py (sunsubscribe).
            while (shard := pubsub.node_pubsub_mapping.get(name)) is not None:
                try:
                    msg = await pubsub.get_sharded_message(target_node=node, timeout=forever)
                except ResponseError as exc:  # answers one command; the connection is fine
                    log.warning("bus subscription command refused: %s", exc)
                    self._on_reply({"type": REFUSED, "error": exc})
                    continue
                if msg is None:
                    continue
                if msg["type"] in ("pong", b"pong"):
                    self._answered(name)
                else:
                    self._on_reply(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.lose(name, exc, shard)


def _alive(shard: PubSub) -> bool:
    connection = shard.connection
    return connection is not None and bool(connection.is_connected)
