"""A recorder's sign of life that Redis withdraws by itself the moment the process is gone.

A registration in a channel's recorders set (bus/redis_history.py) outlives a recorder killed
without a stop (SIGKILL, the OOM killer) by up to its ttl, and events published in that time
would be lost behind ``recovered: true`` if a starting recorder believed it. What a killed
process cannot keep is a connection: Redis drops it, and every subscription on it, at once. So
each recorder holds one pub/sub subscription to a channel named after itself
(``<prefix>:alive:<instance id>``), and the MARK script believes a registration only while
``PUBSUB NUMSUB`` of that channel counts a subscriber. Listening to the event channel itself
would not do: an instance serving only ordinary sockets of the account listens to it too, and
records nothing.

Cluster is left out (its nodes count only their own clients' subscriptions): there the
registration's ttl alone decides, as docs/recovery.md says.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.exceptions import RedisError


class Presence:
    def __init__(self, client: Any, prefix: str, instance: str) -> None:
        self._client = client
        self.prefix = f"{prefix}:alive:"
        self.channel = self.prefix + instance
        self._pubsub: Any | None = None
        self.confirmed = False  # Redis counted the subscription at the last look
        self._lock = asyncio.Lock()  # the beat and a MARK's batch may both ask at once

    async def ensure(self) -> None:
        """Subscribed and counted by Redis on return, or raises (RedisError, OSError).

        Looks with ``PUBSUB NUMSUB`` rather than at the connection: a connection cut by a Redis
        restart or ``CLIENT KILL`` shows nothing until read, and Redis's own count is what MARK
        will read. Costs one round trip per call (one per second from the history's beat).
        """
        async with self._lock:  # two at once would open two connections and leak one
            await self._ensure()

    async def _ensure(self) -> None:
        if self._pubsub is not None:
            counted = await self._client.pubsub_numsub(self.channel)
            if counted and int(counted[0][1]) > 0:
                self.confirmed = True
                await self._drain()
                return
            await self.close()
        self.confirmed = False
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        await pubsub.subscribe(self.channel)
        # SUBSCRIBE is only written: MARK from another connection could run before Redis reads
        # it, so the confirmation is awaited.
        while (reply := await pubsub.get_message(timeout=2.0)) is not None:
            if reply.get("type") == "subscribe":
                self.confirmed = True
                return
        raise RedisError("presence subscription not confirmed")

    async def _drain(self) -> None:
        """Whatever someone published to the presence channel, read and dropped, so Redis never
        holds an output buffer for it (nobody should publish there)."""
        assert self._pubsub is not None
        for _ in range(100):
            if await self._pubsub.get_message(timeout=0) is None:
                return

    async def close(self) -> None:
        self.confirmed = False
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
