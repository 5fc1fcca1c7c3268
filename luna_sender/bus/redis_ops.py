"""The Redis history's queued script calls (bus/redis_history.py runs them in batches).

A :class:`Read` is what a reconnect herd shares: every ``since`` of a channel joins the read of
it still in the queue, the read asks once from the oldest offset per epoch, and each waiter
judges its own offset from the one parsed reply (history.judge, docs/recovery.md "Reconnect
herds").
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import AskError, NoScriptError

from luna_sender.bus.base import BusError
from luna_sender.bus.history import Entry, Offset, Span, parse

WAKE = 64  # waiters of one read woken per loop iteration


class Op:
    __slots__ = ("args", "future", "keys", "script")

    def __init__(self, script: str, keys: list[str], args: list[Any]) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class Read(Op):
    """One queued read of a channel that every ``since`` of it joins until it is sent."""

    __slots__ = ("channel", "span", "starts", "waiters")

    def __init__(self, channel: str, keys: list[str], ttl: int) -> None:
        super().__init__("since", keys, [ttl])
        self.channel = channel
        self.starts: dict[str, tuple[int, int]] = {}  # epoch -> smallest (ms, seq) asked for
        self.span: Span | None = None
        self.waiters: list[asyncio.Future[Span | None]] = []
        self.future.add_done_callback(lambda _: self._release(0))

    def _release(self, start: int) -> None:
        """:data:`WAKE` waiters per loop iteration: each renders its replay, and 2,000 in one
        iteration stall the loop for seconds (appends' replies unread, their waits expiring)."""
        done = self.future
        error: BaseException | None
        span: Span | None = None
        if done.cancelled():
            error = BusError("history closed", "history unavailable")
        elif (error := done.exception()) is None:
            span = self.result(done.result())
        for waiter in self.waiters[start : start + WAKE]:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(span)
        if start + WAKE < len(self.waiters):
            done.get_loop().call_soon(self._release, start + WAKE)

    def join(self, offset: Offset) -> asyncio.Future[Span | None]:
        waiter: asyncio.Future[Span | None] = self.future.get_loop().create_future()
        self.waiters.append(waiter)
        at = (offset.ms, offset.seq)
        known = self.starts.get(offset.epoch)
        if known is None or at < known:
            self.starts[offset.epoch] = at
            self.args = [self.args[0]]
            for epoch, (ms, seq) in self.starts.items():
                self.args += [epoch, f"{ms}-{seq}"]
        return waiter

    def result(self, reply: Any) -> Span | None:
        """The reply parsed once for every waiter (None: no history or another epoch)."""
        if self.span is None and reply is not None and len(reply) == 4:
            epoch = reply[0].decode()
            entries: list[Entry] = []
            gaps: list[int] = []
            for raw_id, fields in reply[3]:
                ms, _, seq = raw_id.decode().partition("-")
                if len(fields) > 4:  # a gap marker: nobody recorded part of what came after
                    gaps.append(int(seq))
                entries.append(Entry(Offset(epoch, int(ms), int(seq)), bytes(fields[1])))
            self.span = Span(epoch, int(reply[2]), int(reply[1]), entries, gaps)
        return self.span


# --- replies ---------------------------------------------------------------------------------


def settle(result: asyncio.Future[Offset], done: asyncio.Future[Any]) -> None:
    if result.done():
        return
    if done.cancelled():
        result.set_exception(BusError("history closed", "history unavailable"))
        return
    error = done.exception()
    if error is not None:
        result.set_exception(error)
        return
    raw = done.result()
    offset = parse(raw.decode() if isinstance(raw, bytes) else raw)
    if offset is None:  # pragma: no cover - the script only returns what parse accepts
        result.set_exception(BusError(f"history append returned {raw!r}", "history unavailable"))
    else:
        result.set_result(offset)


def retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def moved(result: Any) -> bool:
    """A MOVED or ASK refusal: the command did not run. redis-py's parser makes these
    ``AskError``s (``MovedError`` is one) whose text drops the word, so a text check never
    matched them: refused publishes were not retried, nor the history's appends."""
    if isinstance(result, AskError):
        return True
    return isinstance(result, Exception) and str(result).startswith(("MOVED", "ASK"))


def noscript(result: Any) -> bool:
    return isinstance(result, NoScriptError) or (
        isinstance(result, Exception) and str(result).startswith("NOSCRIPT")
    )
