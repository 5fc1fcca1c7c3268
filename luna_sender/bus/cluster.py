"""Redis Cluster backend: ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://``).

Plain PUBLISH in a Redis Cluster reaches every node, so one ordinary SUBSCRIBE connection to any
node hears every producer. The reader therefore subscribes through one node at a time and, when
that node goes away, the reconnect loop (redis.py) moves on to the next known node — the startup
list plus whatever the cluster reported. Publishing goes through redis-py's cluster client.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from luna_sender.bus.base import NOT_PUBLISHED, OUTCOME_UNKNOWN, BusError
from luna_sender.bus.redis import NO_RETRY, RedisBus
from luna_sender.bus.sentinel import parse_hosts, split_url


class ClusterBus(RedisBus):
    def __init__(self, url: str, **options: Any) -> None:
        scheme, user, password, hosts, _path, query = split_url(url)
        self.sharded = query.get("sharded", ["0"])[0].lower() in ("1", "true", "yes")
        self._tls = scheme.startswith("rediss")
        self._auth = {"username": user, "password": password}
        self._nodes: list[tuple[str, int]] = parse_hosts(hosts, 6379)
        self._rotation = itertools.count()
        client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self._nodes],
            ssl=self._tls,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            # No cluster-level retries: a retried PUBLISH after a timeout is a duplicate event.
            retry=NO_RETRY,
            **self._auth,
        )
        self._node_client: Any = None
        super().__init__(url, client=client, **options)
        if self.sharded:
            # Per-account channels hash to slots: SSUBSCRIBE each on the node owning it, and
            # only for accounts with local subscribers (the hub drives subscribe/unsubscribe).
            for name in (
                "SUBSCRIBE",
                "UNSUBSCRIBE",
                "MESSAGE_TYPES",
                "SUBSCRIBED_TYPES",
                "UNSUBSCRIBED_TYPES",
            ):
                setattr(self, name, getattr(_Sharded, name))

    def _known_nodes(self) -> list[tuple[str, int]]:
        known = list(self._nodes)
        try:
            for node in self._client.get_nodes():
                pair = (node.host, int(node.port))
                if pair not in known:
                    known.append(pair)
        except Exception:  # topology not loaded yet: the startup list will do
            pass
        return known

    def _subscriber(self) -> Any:
        if self.sharded:
            return self._client  # RedisCluster.pubsub(): one connection per shard owner
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
                **self._auth,
            ),
        )
        del old  # its pub/sub connection was already closed by the reader
        return self._node_client

    async def _connect(self) -> Any:
        # ClusterPubSub routes SSUBSCRIBE by the slot map, which a fresh client has not loaded.
        await self._client.initialize()
        return await super()._connect()

    async def _publish_once(self, channel: str, data: bytes) -> None:
        # The cluster client hides whether the command was written: a timeout is undecidable,
        # an error reply is a refusal, and any other failure (no node reachable) is taken as
        # not published — the client raises those before or instead of writing.
        try:
            if self.sharded:
                await asyncio.wait_for(self._client.spublish(channel, data), self._publish_timeout)
            else:
                await asyncio.wait_for(self._client.publish(channel, data), self._publish_timeout)
        except (TimeoutError, RedisTimeout) as exc:
            raise BusError(
                f"outcome unknown, no reply: {type(exc).__name__}: {exc}",
                OUTCOME_UNKNOWN,
                published=None,
            ) from exc
        except ResponseError as exc:
            raise BusError(f"refused: {type(exc).__name__}: {exc}", NOT_PUBLISHED) from exc
        except Exception as exc:
            raise BusError(f"not sent: {type(exc).__name__}: {exc}", NOT_PUBLISHED) from exc

    async def _next_message(self, pubsub: Any) -> dict[str, Any] | None:
        if not self.sharded:
            return await super()._next_message(pubsub)
        # Polls each shard's connection in turn; a short timeout keeps every shard served.
        return await pubsub.get_sharded_message(timeout=0.02)


class _Sharded:
    """Names of the sharded pub/sub commands and message types (Redis >= 7)."""

    SUBSCRIBE = "ssubscribe"
    UNSUBSCRIBE = "sunsubscribe"
    MESSAGE_TYPES = ("smessage", b"smessage")
    SUBSCRIBED_TYPES = ("ssubscribe", b"ssubscribe")
    UNSUBSCRIBED_TYPES = ("sunsubscribe", b"sunsubscribe")
