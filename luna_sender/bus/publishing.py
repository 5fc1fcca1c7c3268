"""PUBLISH at most once: the one place that decides what a failed publish means.

redis-py's retries resend a command after a timeout, and a PUBLISH that timed out may well have
run (a frozen Redis runs it when it wakes): one event, delivered twice. So the clients are built
without retries and a publish here is written once. What a failure means depends on where it
happened:

- before the PUBLISH is written (no connection, handshake failed, connection found dead) or
  refused by an error reply: **not published** (``published=False``);
- after it was written, no reply within the publish timeout (or the connection broke while
  waiting): **undecidable** (``published=None``) — Redis may still run it. Never retried.

A frozen Redis would otherwise turn every publish arriving during the freeze into an undecidable
one: :class:`StallGuard` refuses new publishes at once (not published) while an earlier one has
waited over ``stall_after`` seconds, so only the publishes already written when the stall began
are undecidable. docs/reliability.md ("Publishing during a Redis stall") documents it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from luna_sender.bus.base import NOT_PUBLISHED, NOT_REACHABLE, OUTCOME_UNKNOWN, BusError
from luna_sender.bus.urls import MIN_CONNECTIONS


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class StallGuard:
    """Wraps each publish (``async with guard(slots, wait, key):``); refuses while Redis is stuck.

    Stuck means: a PUBLISH has been written and unanswered for over ``stall_after`` seconds, and
    no publish has had its answer in that time either. Only the time a PUBLISH spends written
    and unanswered counts: with a small ``max_connections`` a publish may queue for a connection
    for longer while Redis answers each one at once (an outside pass: 400 publishers behind one
    connection, every publish refused with Redis fine). And a Redis that keeps answering is not
    stalled even when each answer waits long for the service's own loop: 10,000 concurrent
    publishes had most refused as "Redis stalled" with Redis idle (an outside pass). ``key``
    keeps stalls apart: a Cluster guards each node on its own, so one frozen master does not
    refuse the publishes to the others (bus/cluster.py).
    """

    def __init__(self, stall_after: float = 1.0) -> None:
        self.stall_after = stall_after
        self._started: dict[object, tuple[str, float]] = {}
        self._answered: dict[str, float] = {}  # key -> when a publish there last ended
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _refuse_if_stalled(self, key: str) -> None:
        now = time.monotonic()
        if now - self._answered.get(key, 0.0) <= self.stall_after:
            return
        if any(k == key and now - t > self.stall_after for k, t in self._started.values()):
            raise BusError(
                f"not sent: a PUBLISH has had no reply from Redis for over {self.stall_after} s",
                NOT_PUBLISHED,
                published=False,
            )

    @contextlib.asynccontextmanager
    async def __call__(
        self, slots: asyncio.Semaphore, wait: float, key: str = ""
    ) -> AsyncIterator[None]:
        self._refuse_if_stalled(key)
        # Queued publishes count for drained(): a 204 answered during shutdown is delivered.
        self._pending += 1
        self._idle.clear()
        try:
            try:
                await asyncio.wait_for(slots.acquire(), wait)
            except TimeoutError:
                raise BusError("not sent: no free connection", NOT_PUBLISHED, False) from None
            try:
                self._refuse_if_stalled(key)  # a stall may have begun while this one queued
                token = object()
                self._started[token] = (key, time.monotonic())
                try:
                    yield
                except BusError as exc:
                    if isinstance(exc.__cause__, ResponseError):  # an answer all the same
                        self._answered[key] = time.monotonic()
                    raise
                else:
                    self._answered[key] = time.monotonic()
                finally:
                    del self._started[token]
            finally:
                slots.release()
        finally:
            self._pending -= 1
            if not self._pending:
                self._idle.set()

    async def drained(self, timeout: float) -> None:
        """Wait (bounded) until no publish is in flight.

        A publish whose reply has arrived ran in Redis before anything sent afterwards: the
        shutdown flush waits for these so a 204 answered during shutdown is delivered too.
        """
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


async def fresh(conn: Any) -> None:
    """Reopen a pooled connection whose peer has gone (a Redis restart) before writing on it.

    redis-py's own check is skipped when maintenance notifications are on; a PUBLISH written to
    a dead connection would be an undecidable outcome instead of a clean "not published".
    """
    try:
        stale = await conn.can_read()
    except (OSError, RedisConnectionError, RedisTimeout):
        stale = True
    if stale:
        await conn.disconnect()
        await conn.connect()


async def publish_once(
    pool: Any, channel: str, data: bytes, timeout: float, command: str = "PUBLISH"
) -> None:
    try:
        # Connect and handshake only: nothing of the PUBLISH has been written yet.
        conn = await asyncio.wait_for(pool.get_connection(), timeout)
    except Exception as exc:
        raise BusError(f"not sent: {reason(exc)}", NOT_PUBLISHED, published=False) from exc
    try:
        try:
            await fresh(conn)
        except Exception as exc:
            raise BusError(f"not sent: {reason(exc)}", NOT_PUBLISHED, published=False) from exc
        try:
            await conn.send_command(command, channel, data)
            # With an explicit timeout redis-py answers None instead of raising; PUBLISH's
            # reply is an integer, so None can only mean no reply in time.
            if await conn.read_response(timeout=timeout) is None:
                raise RedisTimeout(f"no reply within {timeout} s")
            elsewhere = getattr(pool, "elsewhere", None)  # Sentinel (bus/sentinel.py)
            if elsewhere is not None and elsewhere(conn):  # published where few may listen
                raise RedisConnectionError("answered by a former master (failed over)")
        except ResponseError as exc:  # Redis answered with an error: it did not publish
            raise BusError(f"refused: {reason(exc)}", NOT_PUBLISHED, published=False) from exc
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()  # a late reply must not be read by the next command
            if not isinstance(exc, Exception):
                raise
            raise BusError(
                f"outcome unknown, PUBLISH was written: {reason(exc)}",
                OUTCOME_UNKNOWN,
                published=None,
            ) from exc
    finally:
        await pool.release(conn)


async def health_ping(client: Any) -> None:
    """PING through the pool the publishes use (the health check's proof that they can work);
    retried once, since a pooled connection may date from before a Redis restart."""
    for attempt in (1, 2):
        try:
            await asyncio.wait_for(client.ping(), 1.0)
            return
        except RedisConnectionError as exc:
            if attempt == 2:
                raise BusError(reason(exc), NOT_REACHABLE) from exc
        except Exception as exc:
            raise BusError(reason(exc), NOT_REACHABLE) from exc


# PUBLISHes in flight at once; more wait (within the publish timeout). redis-py's pools refuse
# a 101st connection: 150 concurrent publishes got 503s and the health check's PING a 502.
PUBLISH_SLOTS = 64


def slots(client: Any) -> int:
    """Publishes in flight at once: a URL's ``?max_connections=`` leaves room for them after the
    pub/sub and health connections; past the pool's limit redis-py fails a publish at once
    ("Too many connections", 39 of 40 concurrent publishes answered 503 at 2), where waiting for
    a slot makes them queue."""
    limit = getattr(getattr(client, "connection_pool", None), "max_connections", None)
    if not isinstance(limit, int) or limit >= PUBLISH_SLOTS + MIN_CONNECTIONS - 1:
        return PUBLISH_SLOTS
    return max(1, limit - (MIN_CONNECTIONS - 1))
