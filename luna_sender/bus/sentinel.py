"""Redis Sentinel backend: ``redis+sentinel://[user:pw@]host:port[,host:port…]/<master>[/db]``.

The client comes from redis-py's ``Sentinel.master_for``: every new connection asks the sentinels
where the master is. So when the master fails over, the pub/sub reader's ordinary reconnect loop
(redis.py) lands on the new master and resubscribes — websockets never notice beyond the gap.
Sentinel credentials: ``?sentinel_username=…&sentinel_password=…``; TLS: ``rediss+sentinel://``.

A master that stands still (SIGSTOP, a hung VM) breaks no connection, and one that wakes after
its replica was promoted still answers as a master until the sentinels demote it (~10 s): Redis
takes PUBLISH there and delivers it to nobody. So the bus learns who the master is from every
sentinel's failover announcements and by asking them every ``audit_interval``
(:class:`SentinelBus`), points every pool of the URL at it (the bus's, the recovery history's:
:func:`follow`) and moves a subscription that is elsewhere.

The recovery history (bus/redis_history.py) gets a client of its own from :func:`master_client`,
so it follows the master through a failover the same way (docs/recovery.md says what survives).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from luna_sender.bus.base import NOT_REACHABLE, BusError, BusOptions, MessageHandler
from luna_sender.bus.link import pubsub_link
from luna_sender.bus.redis import NO_RETRY, RedisBus
from luna_sender.bus.urls import parse_hosts, split_url

log = logging.getLogger("luna_sender.bus")
ANSWERS_WAIT = 0.1  # seconds the other sentinels are waited for after the first valid answer
FIRST = asyncio.FIRST_COMPLETED
# Every pool made for a URL (the bus's, the recovery history's): :func:`follow` moves them all.
_POOLS: dict[str, weakref.WeakSet[Any]] = {}


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
    # No retries: redis-py's default retried a frozen sentinel 3 times, 1 s each, so with the
    # URL's first sentinel frozen every look-up of the master took 4 s, past the watch's 2 s.
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": 1.0,
        "socket_connect_timeout": 1.0,
        "retry": NO_RETRY,
    }
    if "sentinel_username" in parsed.query:
        sentinel_kwargs["username"] = parsed.query["sentinel_username"][0]
    if "sentinel_password" in parsed.query:
        sentinel_kwargs["password"] = parsed.query["sentinel_password"][0]
    # redis-py leaves Sentinel's constructor unannotated.
    sentinel = NewestSentinel(  # type: ignore[no-untyped-call]
        parse_hosts(parsed.hosts, 26379),
        sentinel_kwargs=sentinel_kwargs,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        ssl=parsed.tls,
    )
    client: aioredis.Redis = sentinel.master_for(
        master,
        db=db,
        username=parsed.user,
        password=parsed.password,
        retry=NO_RETRY,
        connection_pool_class=MasterPool,
    )
    _POOLS.setdefault(url, weakref.WeakSet()).add(client.connection_pool)
    return client


class NewestSentinel(Sentinel):
    """Asks every sentinel at once and believes the newest configuration (the highest
    ``config-epoch``) among the answers that come within :data:`ANSWERS_WAIT` of the first
    valid one. redis-py believes the first sentinel in its list that answers: just after a
    failover one that has not heard of it yet still names the old master, so a subscription
    moved by the announcement reconnected to the old master, and a poll moved it back there
    (``--workers 2``: a worker deaf after a manual failover, 1 run in 4). A frozen sentinel
    costs nothing once another has answered (one at a time, it cost 1 s per look-up)."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        asked = [asyncio.ensure_future(s.sentinel_masters()) for s in self.sentinels]
        for task in asked:  # an answer that comes after the choice is not an unretrieved error
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        newest: dict[str, Any] | None = None
        errors: list[str] = []
        pending, until = set(asked), None
        try:
            while pending:
                wait = None if until is None else max(0.0, until - loop.time())
                done, pending = await asyncio.wait(pending, timeout=wait, return_when=FIRST)
                if not done:
                    break
                for task in done:
                    if (error := task.exception()) is not None:
                        errors.append(repr(error))
                        continue
                    masters: Any = task.result()
                    state = masters.get(service_name)
                    if not state or not self.check_master_state(state, service_name):
                        continue
                    if newest is None or state.get("config-epoch", 0) > newest.get(
                        "config-epoch", 0
                    ):
                        newest = state
                    until = until or loop.time() + ANSWERS_WAIT
        finally:
            for task in asked:
                task.cancel()
        if newest is None:
            raise MasterNotFoundError(f"No master found for {service_name!r}: {errors}")
        return str(newest["ip"]), int(newest["port"])


class MasterPool(SentinelConnectionPool):
    """A pool that keeps only connections to the master it knows (``master_address``, kept
    current by :func:`follow`). redis-py's takes any connection back and hands it out again:
    publishes stuck on a frozen master came back to it when that woke, still a master until
    demoted, and later publishes were answered 204 there, for nobody (an outside pass: 30-50 %
    of the events for ~10 s after a failover)."""

    def elsewhere(self, connection: Any) -> bool:
        """Connected to another node than the master this pool knows."""
        known = self.master_address
        return (
            known is not None
            and getattr(connection, "_reader", None) is not None
            and (connection.host, int(connection.port)) != tuple(known)
        )

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        if self.elsewhere(connection):
            await connection.disconnect()
            await connection.connect()  # asks the sentinels for the master
        return connection

    async def release(self, connection: Any) -> None:
        if self.elsewhere(connection):
            await connection.disconnect()
        await super().release(connection)


async def follow(url: str, address: tuple[str, int]) -> None:
    """Point every pool made for ``url`` at the master ``address``: idle connections to a former
    master are closed now, in-use ones when released. redis-py asks the sentinels only for a new
    connection, so the recovery history appended on a woken old master with its pooled ones
    until the sentinels demoted it, and the offsets it gave out then were lost with it."""
    for pool in list(_POOLS.get(url, ())):
        if pool.master_address is not None and tuple(pool.master_address) != address:
            pool.master_address = address
            await pool.disconnect(inuse_connections=False)


class SentinelBus(RedisBus):
    """The Redis bus on the master the sentinels name: announced, and asked every
    ``audit_interval``."""

    def __init__(self, url: str, options: BusOptions | None = None) -> None:
        super().__init__(url, options, client=master_client(url))
        self._named: tuple[str, int] | None = None  # the master the sentinels named last
        self._announced = 0  # failover announcements heard

    async def start(self, on_message: MessageHandler) -> None:
        await super().start(on_message)
        self._tasks.append(asyncio.create_task(self._watch(), name="redis-bus-sentinel-watch"))
        for sentinel in self._client.connection_pool.sentinel_manager.sentinels:
            self._tasks.append(asyncio.create_task(self._switches(sentinel)))

    async def stop(self) -> None:
        await super().stop()
        for sentinel in self._client.connection_pool.sentinel_manager.sentinels:
            with contextlib.suppress(Exception):
                await sentinel.aclose()

    async def _switches(self, sentinel: aioredis.Redis) -> None:
        """Sentinels announce a failover (``+switch-master``) as they make it; acting on it
        rather than at the next poll of the sentinels (an outside pass: ~1 s of events lost
        per manual failover by the instances that did not publish, /healthcheck 200). Each
        sentinel is heard on its own, so a frozen one does not hide the others' news."""
        name = self._client.connection_pool.service_name.encode()
        for failures in itertools.count():
            pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe("+switch-master")
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    words = msg["data"].split() if msg is not None else []
                    if len(words) == 5 and words[0] == name:  # name, old ip, port, new ip, port
                        self._announced += 1
                        await self._act((words[3].decode(), int(words[4])))
            except Exception as exc:
                log.debug("sentinel failover announcements not read: %s", exc)
                await asyncio.sleep(min(0.1 * 2 ** min(failures, 5), 2.0))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _watch(self) -> None:
        pool = self._client.connection_pool
        while True:
            await asyncio.sleep(self._audit_interval)
            announced = self._announced
            try:
                host, port = await asyncio.wait_for(
                    pool.sentinel_manager.discover_master(pool.service_name), 2.0
                )
            except Exception as exc:  # no sentinel answers, or none knows a master: wait
                log.debug("sentinels not asked who the master is: %s", exc)
                continue
            if announced == self._announced:  # else older than the announcement: dropped
                await self._act((str(host), int(port)))

    async def _act(self, named: tuple[str, int]) -> None:
        """``named`` is the master: point the pools there and move a subscription elsewhere.
        An announcement names it itself: asking the sentinels again took 1 s a time with the
        URL's first one frozen (an outside pass: the move 0.3-0.5 s late, 6-9 events lost)."""
        self._named = named
        await follow(self.url, named)
        link = pubsub_link(self._pubsub)
        if link is None or link[1] == named or not self.connected:
            return
        transport, here = link
        log.warning(
            "bus subscription on %s:%s, which is no longer the master (now %s:%s): reconnecting",
            *here,
            *named,
            extra={"bus_state": "not_master"},
        )
        transport.abort()  # the reader reconnects through the sentinels, to the new master

    async def publish(self, channel: str, data: bytes) -> None:
        """Stalls are told apart per master (StallGuard's key): publishes stuck on a frozen old
        master refused every publish to the promoted one for the rest of the freeze (an outside
        pass: 503s for 5 s with the new master answering)."""
        key = str(self._client.connection_pool.master_address)
        async with self._publish_guard(self._publish_slots, self._publish_timeout, key):
            await self._publish_once(channel, data)

    async def _health_probe(self) -> None:
        """502 while the subscription is on another node than the master (deaf: an outside
        pass saw 200 while events published on the new master reached nobody)."""
        link = pubsub_link(self._pubsub)
        if link is not None and self._named is not None and link[1] != self._named:
            raise BusError("the subscription is not on the current master", NOT_REACHABLE)
        await super()._health_probe()
