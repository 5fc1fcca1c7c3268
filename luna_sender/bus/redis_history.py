"""The Redis history: one capped Redis Stream per channel, shared by every instance.

Keys (``{channel}`` is a Cluster hash tag, so one channel's keys live in one slot)::

    <prefix>:{<channel>}:s        the stream; entry ids are "<ms>-<seq>", fields "d" (the message)
                                  and "c" (the channel's running byte total after it)
    <prefix>:{<channel>}:m        hash: epoch, seq (last given), ms (last id's ms), total, exp
    <prefix>:{<channel>}:d:<hash> the offset given to a message with this content hash
    <prefix>:{<channel>}:r        zset: the instances recording the channel, scored by when
                                  their registration expires (Redis time, ms)
    <prefix>:{<channel>}:f:<token>:<name>  a fence's answer from recorder <name> (bus/fences.py)

Recorders register (:data:`MARK`) and refresh their registration every :data:`BEAT` seconds
for :data:`BEAT_TTL`; a graceful stop removes it. An instance starting to record a channel that
no live recorder holds writes a gap marker in the same script (history.py's module doc).

Written exactly once per message. Every instance subscribed to a channel receives each message
and calls :meth:`RedisHistory.append`; the append script runs atomically and looks the content
hash up first, so the first call records the message and every later one (any instance, within
``window.dedupe`` seconds) gets the same offset back. Envelopes therefore carry the same offset
whichever instance sent them, and an offset from one instance works on all.

Stream order is bus order. Redis delivers pub/sub messages to every subscriber in publish order,
each instance appends in the order it received them, and one instance's commands run in the
order it issued them (one worker per node, bus/lanes.py). A message's place
is decided by the first append of it to run. Take two messages A before B and the instance X
whose append of B ran first: X received A before B, so X's append of A ran before its append of
B, so the first append of A ran before the first append of B. (The argument needs X to have
received A: an instance that subscribed between A and B and appended B before any append of A
ran could invert them. That takes an instance stalled for longer than another one's subscribe
round trip; docs/recovery.md lists it.)

The ``seq`` half of an id counts without holes (the script assigns it, not Redis), so whether
messages after an offset were trimmed is exact (history.covers). ``ms`` is Redis's clock, made
non-decreasing, and is what ``ttl`` trimming looks at. Trimming is exact: XADD's ``MAXLEN =``
keeps ``size``; then whatever at the front is older than ``ttl`` or beyond ``max_bytes`` goes
(amortised: each entry is read once when removed); the newest message always stays. The stream
and its meta hash expire when idle (the stream after 2 x ttl, the meta after ``meta_ttl`` more),
their expiry refreshed at most once per ttl rather than on every append.

Commands are batched: appends and reads queue in call order and one worker per node
(bus/lanes.py) sends whatever has queued as one pipeline (EVALSHA each), so a busy channel costs
one round trip per batch, not per event; a ``since`` queued after an ``append`` runs after it
(read-your-writes). Reads of one channel coalesce: a ``since`` joins the channel's queued read
and moves it to the tail; that one script returns the span from the smallest offset asked (per
epoch), each offset judged from it in Python (history.judge). A reconnect herd costs one script
and one copy of the span, so appends behind it are not held past the recorder's wait
(delivery/recorder.py: a late append trips the breaker, and the gap marker that follows refuses
every older offset)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from luna_sender.bus import fences, presence
from luna_sender.bus.base import BusError
from luna_sender.bus.history import NOT_RECOVERED, Offset, Replay, Window, judge, new_epoch
from luna_sender.bus.lanes import Lanes
from luna_sender.bus.nodes import SlotMapReload, node_commands, redirected
from luna_sender.bus.redis import NO_RETRY
from luna_sender.bus.redis_ops import Op, Read, moved, noscript, retrieve, settle
from luna_sender.bus.redis_scripts import APPEND, BEAT_SCRIPT, MARK, SINCE

DEFAULT_PREFIX = "luna-sender:history"
BEAT = 0.5
BEAT_TTL = 3.0  # a registration lasts this long unless refreshed
# A registration is believed only when refreshed this recently: a recorder stalled (SIGSTOP, a
# VM pause, a blocked loop) keeps its connections and presence, but stops beating, and what is
# published meanwhile waits unrecorded in its socket (docs/recovery.md "A crashed recorder").
FRESH = 1.5


class RedisHistory:
    shared = True  # every instance appends the messages it receives

    def __init__(
        self,
        url: str,
        window: Window | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_batch: int = 256,
        client: Any | None = None,
        sees_subscribers: bool = True,
        presence: Callable[[], str | None] | None = None,
    ) -> None:
        self.window = window or Window()
        self.prefix = prefix
        self._max_batch = max_batch
        self._client: Any = client or aioredis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, retry=NO_RETRY
        )
        self._bodies = {"append": APPEND, "since": SINCE, "mark": MARK, "beat": BEAT_SCRIPT}
        self._bodies |= {"ack": fences.ACK, "answer": fences.ANSWER_SCRIPT, "proof": fences.PROOF}
        self._sha = {
            name: hashlib.sha1(body.encode()).hexdigest()  # Redis names scripts by SHA1
            for name, body in self._bodies.items()
        }
        self._loaded: set[str] = set()  # lanes whose node has every script (bus/lanes.py)
        self._reads: dict[str, Read] = {}  # channel -> its read still in the queue
        self._slot_map = SlotMapReload(self._client)
        self._cluster = isinstance(self._client, RedisCluster)
        owner = self._owner if self._cluster else None
        self.lanes = Lanes(self._run, max_batch, owner, self._reset, self._sent)
        self._channels: dict[str, float] = {}  # channel -> last append (for size())
        w = self.window
        self._limits = [w.size, int(w.ttl * 1000), w.max_bytes, int(w.dedupe * 1000)]
        self._meta_ttl = int(max(w.meta_ttl, w.ttl) * 1000)
        self._id = new_epoch()  # this instance, as a recorder
        # The bus connection's presence name (bus/presence.py), registered as the recorder: MARK
        # believes a registration only while Redis counts its subscriber, where PUBSUB NUMSUB on
        # the history's server counts every instance's (not in a Cluster).
        self._presence = presence
        self._checks = self.fences = sees_subscribers  # fences reach recorders by presence
        self._recording: dict[str, str] = {}  # channel -> the name it was registered under
        self._starts: dict[str, asyncio.Future[Any]] = {}  # channel -> its start marker's run
        self._beat_task: asyncio.Task[None] | None = None

    def _keys(self, channel: str) -> tuple[str, str]:
        base = f"{self.prefix}:{{{channel}}}"
        return base + ":s", base + ":m"

    # --- the History protocol ------------------------------------------------------------

    async def append(self, channel: str, data: bytes) -> Offset:
        return await self.append_nowait(channel, data)

    def append_nowait(self, channel: str, data: bytes) -> asyncio.Future[Offset]:
        stream, meta = self._keys(channel)
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        dedupe = f"{self.prefix}:{{{channel}}}:d:{digest}"
        args = [data, new_epoch(), *self._limits, self._meta_ttl]
        self._channels[channel] = time.monotonic()
        op = self._enqueue("append", [stream, meta, dedupe], args)
        result: asyncio.Future[Offset] = op.future.get_loop().create_future()
        op.future.add_done_callback(lambda done: settle(result, done))
        return result

    async def since(self, channel: str, offset: Offset) -> Replay:
        """Joins the channel's queued read, moved to the tail so it runs after every append
        queued before this call (read-your-writes); earlier waiters may then see more than
        alone, which recovery's seam drops (it is also delivered live)."""
        read = self._reads.get(channel)
        if read is None:
            read = self._reads[channel] = Read(channel, list(self._keys(channel)), self._limits[1])
            self._push(read)
        else:
            self.lanes.to_tail(read)
        span = await read.join(offset)  # cancelling one waiter leaves the read to the others
        return NOT_RECOVERED if span is None else judge(offset, span)

    def mark_nowait(self, channel: str, start: bool) -> asyncio.Future[bool]:
        """Registering and writing the marker is one script, so two instances starting at once
        cannot both see the other missing, and an instance never sees a recorder that is
        registered but has not yet marked."""
        stream, meta = self._keys(channel)
        recorders = f"{self.prefix}:{{{channel}}}:r"
        # While the bus is down there is no name: one nobody holds, so nobody believes it.
        name = (self._presence and self._presence()) or f"{presence.PREFIX}none:{self._id}"
        old = self._recording.get(channel)
        self._recording[channel] = name
        if old is not None and old != name:  # registered under a name that no longer vouches
            self._enqueue("beat", [recorders], [old, ""]).future.add_done_callback(retrieve)
        if self._beat_task is None or self._beat_task.done():
            self._beat_task = asyncio.create_task(self._beat(), name="history-recorders")
        mode = "start" if start else "gap"
        args = [mode, name, int(BEAT_TTL * 1000), self.window.size, self._limits[1]]
        args += ["1" if self._checks else "", int(FRESH * 1000)]
        op = self._enqueue("mark", [stream, meta, recorders], args)
        if start:
            self._starts[channel] = op.future
        result: asyncio.Future[bool] = op.future.get_loop().create_future()

        def settle(done: asyncio.Future[Any]) -> None:
            if result.done():
                return
            if done.cancelled():
                result.set_exception(BusError("history closed", "history unavailable"))
            elif (error := done.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(done.result() == 1)  # a list: the recorders believed

        op.future.add_done_callback(settle)
        return result

    async def counted_on(self, channel: str, timeout: float) -> set[str]:
        """The other recorders this instance's start marker on ``channel`` believed instead of
        writing a marker: they are to be fenced (bus/fences.py). Cluster: none, it has no
        presence names to reach them by."""
        start = self._starts.pop(channel, None)
        if start is None or not self._checks:
            return set()
        try:  # no answer in time raises: whom it believed is unknown, so the fence fails
            return fences.believed(await asyncio.wait_for(asyncio.shield(start), timeout))
        except BusError:  # failed: the channel owes a marker anyway (delivery/recorder.py)
            return set()

    async def ask_fence(self, name: str, token: str, channel: str) -> bool:
        """False when nobody holds ``name`` or there is no bus connection to be answered on.
        Queued, not on a pooled connection each: a reconnect herd starting 2,000 channels would
        have opened 2,000 connections."""
        reply_to = self._presence() if self._presence is not None else None
        if reply_to is None:
            return False
        op = self._enqueue("ack", [], [name, fences.ask(token, channel, reply_to)])
        return bool(await op.future)

    def answer_nowait(self, channel: str, token: str, reply_to: str) -> asyncio.Future[Any]:
        """A fence's answer, run by Redis after this instance's appends queued so far."""
        name = self._recording.get(channel, "")
        proof = fences.proof_key(self.prefix, channel, token, name)
        args = [reply_to, fences.answer(token, name), fences.PROOF_TTL_MS]
        return self._enqueue("answer", [proof], args).future

    async def proven(self, channel: str, token: str, name: str) -> bool:
        """Whether recorder ``name`` really answered (bus/fences.py: an answer can be forged)."""
        proof = fences.proof_key(self.prefix, channel, token, name)
        return bool(await self._submit("proof", [proof], []) == 1)

    async def release(self, channel: str) -> None:
        self._starts.pop(channel, None)
        name = self._recording.pop(channel, None)
        if name is not None:
            await self._submit("beat", [f"{self.prefix}:{{{channel}}}:r"], [name, ""])

    async def _beat(self) -> None:
        """Keeps this instance's registrations alive while it records (errors: the next beat)."""
        while self._recording:
            await asyncio.sleep(BEAT)
            ttl = int(BEAT_TTL * 1000)
            for channel, name in self._recording.items():
                op = self._enqueue("beat", [f"{self.prefix}:{{{channel}}}:r"], [name, ttl])
                op.future.add_done_callback(retrieve)

    async def size(self) -> int:
        """Messages (gap markers included) held in the channels this instance appended to
        within the window."""
        horizon = time.monotonic() - self.window.ttl
        for channel in [c for c, at in self._channels.items() if at < horizon]:
            del self._channels[channel]
        if not self._channels:
            return 0
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel in self._channels:
                    pipe.xlen(self._keys(channel)[0])
                return int(sum(await pipe.execute()))
        except (RedisError, RedisClusterException, OSError) as exc:  # no node reachable: the latter
            raise BusError(f"history size: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._beat_task is not None:
            self._beat_task.cancel()
        with contextlib.suppress(Exception):  # a graceful stop: others must not count on us
            async with asyncio.timeout(1.0):
                for channel in list(self._recording):
                    await self.release(channel)
        await self.lanes.close()
        self._reads.clear()
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # --- batching --------------------------------------------------------------------------

    async def _submit(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._enqueue(script, keys, args).future

    def _enqueue(self, script: str, keys: list[str], args: list[Any]) -> Op:
        """Queued now, in call order: what the hub's synchronous bus callback relies on."""
        return self._push(Op(script, keys, args))

    def _push(self, op: Op) -> Op:
        return self.lanes.push(op)

    def _sent(self, op: Op) -> None:
        if isinstance(op, Read):  # sent: a later since queues a new read
            self._reads.pop(op.channel, None)

    def _reset(self, lane: str) -> None:
        self._loaded.discard(lane)  # a restarted Redis has no scripts
        if self._cluster:  # a master silent or gone: failed over? (new calls go to the new one)
            self._slot_map.soon()

    def _owner(self, slot: int) -> str:
        """The node owning ``slot`` by the cluster client's map ("" before it is loaded)."""
        try:
            return str(self._client.nodes_manager.slots_cache[slot][0].name)
        except (KeyError, IndexError, AttributeError):
            return ""

    def domain(self, channel: str) -> str:
        if not self._cluster:  # per recorded message: one server is one domain
            return ""
        return self.lanes.lane_of(self._keys(channel)[0])

    async def _load(self, lane: str) -> None:
        """Every script, in one MULTI, before the first batch and after a connection error.

        A batch must find all scripts or none: were MARK missing and APPEND present (another
        instance halfway through loading them one by one), a [MARK, APPEND] batch would run the
        append, then the retried MARK, and put a recorder's start marker after the message it
        recorded (a resume from that message would then answer recovered false). On a Cluster
        (no MULTI across nodes) one by one, on the lane's node (on every primary for keyless
        calls): another master being down is not this lane's business.
        """
        client = self._client
        if isinstance(client, RedisCluster):
            await client.initialize()  # the first batch may come before the slot map
            node = self._node(lane)
            if node is not None:  # one node: one MULTI there, as on a single Redis
                loads = [("SCRIPT", "LOAD", body) for body in self._bodies.values()]
                done = await node_commands(node, [("MULTI",), *loads, ("EXEC",)])
                if isinstance(done[-1], Exception) or done[-1] is None:
                    raise BusError(f"scripts not loaded on {lane}: {done[-1]}")
            for target in [] if node is not None else client.get_primaries():
                for body in self._bodies.values():
                    await client.execute_command("SCRIPT LOAD", body, target_nodes=target)
        else:
            async with client.pipeline(transaction=True) as pipe:
                for body in self._bodies.values():
                    pipe.script_load(body)
                await pipe.execute()
        self._loaded.add(lane)

    def _node(self, lane: str) -> Any:
        """A Cluster lane's node: its batches go on that node's own connections, not through
        the cluster client, whose error handling is shared: a timeout on one frozen master
        marked the client for a slot-map reload that every other master's batch then waited
        for (an outside pass: healthy masters' appends ~1 s late once per long freeze)."""
        return self._client.get_node(node_name=lane) if lane and self._cluster else None

    async def _run(self, lane: str, batch: list[Op]) -> None:
        if lane not in self._loaded:
            await self._load(lane)
        results = await self._pipeline(lane, batch)
        missing = [op for op, res in zip(batch, results, strict=True) if noscript(res)]
        if missing:  # SCRIPT FLUSH (drops all at once): load, then run what did not run
            await self._load(lane)
            retried = await self._pipeline(lane, missing)
            results = [
                retried.pop(0) if noscript(res) else res
                for res in results  # same order: the missing ones, in call order
            ]
        for op, res in zip(batch, results, strict=True):
            if op.future.done():
                continue
            if isinstance(res, Exception):
                op.future.set_exception(
                    BusError(f"history: {type(res).__name__}: {res}", "history unavailable")
                )
            else:
                op.future.set_result(res)

    async def _pipeline(self, lane: str, batch: list[Op]) -> list[Any]:
        node = self._node(lane)
        if node is not None:
            results = await node_commands(
                node,
                [
                    ("EVALSHA", self._sha[op.script], len(op.keys), *op.keys, *op.args)
                    for op in batch
                ],
            )
            if any(moved(res) for res in results):  # a failover moved slots: the map follows
                self._slot_map.soon()
                for i, op in enumerate(batch):  # refused unrun: run once where Redis points,
                    if moved(res := results[i]):  # in order (the slot's later ops queue here)
                        body = self._bodies[op.script]  # EVAL: not loaded there, maybe
                        command = ("EVAL", body, len(op.keys), *op.keys, *op.args)
                        results[i] = await redirected(self._client, command, res)
            return results
        async with self._client.pipeline(transaction=False) as pipe:
            for op in batch:
                pipe.execute_command(
                    "EVALSHA", self._sha[op.script], len(op.keys), *op.keys, *op.args
                )
            return list(await pipe.execute(raise_on_error=False))
