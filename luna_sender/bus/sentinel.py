"""Redis Sentinel backend: ``redis+sentinel://[user:pw@]host:port[,host:port…]/<master>[/db]``.

The client comes from redis-py's ``Sentinel.master_for``: every new connection asks the sentinels
where the master is. So when the master fails over, the pub/sub reader's ordinary reconnect loop
(redis.py) lands on the new master and resubscribes — websockets never notice beyond the gap.
Sentinel credentials: ``?sentinel_username=…&sentinel_password=…``; TLS: ``rediss+sentinel://``.

A master that stands still (SIGSTOP, a hung VM) breaks no connection: the sentinels promote its
replica and producers follow them, while the subscription would wait on the old master until it
woke. So once the subscription has not answered for :data:`STALL` s, the sentinels are asked who
the master is, and a subscription on another address reconnects.

The recovery history (bus/redis_history.py) gets a client of its own from :func:`master_client`,
so it follows the master through a failover the same way (docs/recovery.md says what survives).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from luna_sender.bus.base import BusOptions
from luna_sender.bus.link import STALL, stalled_link
from luna_sender.bus.redis import NO_RETRY, RedisBus
from luna_sender.bus.urls import parse_hosts, split_url

log = logging.getLogger("luna_sender.bus")


def master_client(url: str) -> aioredis.Redis:
    """A client of the master the sentinels name now, and after every failover.

    Each new connection asks the sentinels for the master, and redis-py drops a connection that
    meets a demoted master (READONLY): callers see a connection error and retry on a fresh one.
    No redis-py retries: they would send a timed-out PUBLISH twice (see publishing.py).
    """
    parsed = split_url(url)
    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        raise ValueError("redis+sentinel:// URL needs a master name: .../<master>[/db]")
    master = unquote(parts[0])  # "my%6Daster": MasterNotFoundError and a 502 for good
    db = int(parts[1]) if len(parts) > 1 else 0
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    if "sentinel_username" in parsed.query:
        sentinel_kwargs["username"] = parsed.query["sentinel_username"][0]
    if "sentinel_password" in parsed.query:
        sentinel_kwargs["password"] = parsed.query["sentinel_password"][0]
    # redis-py leaves Sentinel's constructor unannotated.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        parse_hosts(parsed.hosts, 26379),
        sentinel_kwargs=sentinel_kwargs,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        ssl=parsed.tls,
    )
    client: aioredis.Redis = sentinel.master_for(
        master, db=db, username=parsed.user, password=parsed.password, retry=NO_RETRY
    )
    return client


class SentinelBus(RedisBus):
    def __init__(self, url: str, options: BusOptions | None = None) -> None:
        super().__init__(url, options, client=master_client(url))

    async def _stalled(self, seconds: float) -> None:
        """Before, a frozen master's subscription stayed deaf for the whole freeze, though the
        sentinels had promoted its replica and every producer published there."""
        link = stalled_link(self._pubsub)
        if seconds < STALL or link is None:
            return
        transport, here = link
        pool = self._client.connection_pool
        try:
            host, port = await asyncio.wait_for(
                pool.sentinel_manager.discover_master(pool.service_name), 2.0
            )
        except Exception as exc:  # no sentinel answers, or none knows a master: wait
            log.debug("sentinels not asked who the master is: %s", exc)
            return
        if (str(host), int(port)) == here:
            return  # still the master, only slow or frozen: nothing better to move to
        log.warning(
            "bus subscription not answering for %.1f s and its Redis is no longer the master "
            "(now %s:%s): reconnecting",
            seconds,
            host,
            port,
            extra={"bus_state": "stalled"},
        )
        transport.abort()  # the reader reconnects through the sentinels, to the new master
