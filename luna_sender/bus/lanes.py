"""The history's command queues: one per Redis node, each sent by a worker of its own.

Why: on a single Redis there is one lane and nothing changes. In a Cluster the history's
channels live on different masters, and one lane for all made one master's trouble everyone's:
a frozen master held every batch behind its own for the socket timeout, and a dead one failed
batches that carried other masters' channels too. An outside pass (2026-11-29) saw recovering
sockets of accounts on healthy masters get events without offsets for the whole outage of
another master, and their resumes answered ``recovered: false`` over nothing lost.

Order: what the history promises (bus order per channel, read-your-writes, a fence's answer
after the appends before it) is per channel, and a channel's keys share one slot. So every
operation of a slot goes to one lane while any of its operations is still pending there, even
if the slot map has moved the slot meanwhile: a later append cannot overtake an earlier one
stuck on a frozen master that is being failed over. Within a lane, batches go out one after
the other, as the single queue did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from luna_sender.bus.base import BusError
from luna_sender.bus.redis_ops import Op

# A lane's name: "" on a single Redis (and for keyless operations), else the node owning the slot
Owner = Callable[[int], str]


class _Held:
    __slots__ = ("lane", "pending")

    def __init__(self, lane: str) -> None:
        self.lane = lane
        self.pending = 0


class _Lane:
    __slots__ = ("queue", "task", "wake")

    def __init__(self) -> None:
        self.queue: deque[Op] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Lanes:
    def __init__(
        self,
        run: Callable[[str, list[Op]], Awaitable[None]],
        max_batch: int,
        owner: Owner | None,
        on_connection_error: Callable[[str], None],
        on_sent: Callable[[Op], None],
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._owner = owner  # None: one lane (a single Redis)
        self._on_connection_error = on_connection_error
        self._on_sent = on_sent
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[int, _Held] = {}  # slot -> its lane while operations are pending
        self._where: dict[Op, str] = {}  # a queued operation -> its lane (to move a read)

    def lane_of(self, key: str) -> str:
        """The lane the next operation on ``key``'s slot goes to (the recorder's breaker is
        kept per lane: one master's failure is not another's)."""
        if self._owner is None:
            return ""
        slot = key_slot(key.encode())
        held = self._held.get(slot)
        return held.lane if held is not None else self._owner(slot)

    def push(self, op: Op) -> Op:
        name = ""
        if self._owner is not None and op.keys:
            slot = key_slot(op.keys[0].encode())
            held = self._held.get(slot)
            if held is None:
                held = self._held[slot] = _Held(self._owner(slot))
            name = held.lane
            held.pending += 1
            op.future.add_done_callback(lambda _: self._done(slot))
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane()
        lane.queue.append(op)
        self._where[op] = name
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._worker(name, lane), name=f"history {name}")
        lane.wake.set()
        return op

    def to_tail(self, op: Op) -> None:
        """Move a queued operation behind everything queued in its lane so far."""
        lane = self._lanes[self._where[op]]
        if lane.queue[-1] is not op:
            lane.queue.remove(op)
            lane.queue.append(op)

    def _done(self, slot: int) -> None:
        held = self._held.get(slot)
        if held is not None:
            held.pending -= 1
            if held.pending <= 0:
                del self._held[slot]

    async def _worker(self, name: str, lane: _Lane) -> None:
        """The lane's only sender: its batches go out one after the other, in call order."""
        while True:
            await lane.wake.wait()
            lane.wake.clear()
            while lane.queue:
                count = min(len(lane.queue), self._max_batch)
                batch = [lane.queue.popleft() for _ in range(count)]
                for op in batch:
                    self._where.pop(op, None)
                    self._on_sent(op)
                try:
                    try:
                        await self._run(name, batch)
                    except (RedisConnectionError, RedisTimeoutError, OSError):
                        # A pooled connection left over from before a Redis restart: once more
                        # on a fresh one. Safe: a repeated append is deduplicated, reads are reads.
                        self._on_connection_error(name)
                        await self._run(name, [op for op in batch if not op.future.done()])
                except Exception as exc:  # still failing: every op in the batch fails
                    error = BusError(f"history: {type(exc).__name__}: {exc}", "history unavailable")
                    for op in batch:
                        if not op.future.done():
                            op.future.set_exception(error)

    async def close(self) -> None:
        """Stop the workers; whatever is still queued fails."""
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            for op in lane.queue:
                if not op.future.done():
                    op.future.set_exception(BusError("history closed", "history unavailable"))
            lane.queue.clear()
        self._where.clear()
