"""The open-file limit: raise it at start-up, derive the websocket capacity, report exhaustion.

Every websocket holds one file descriptor. Under a soft ``RLIMIT_NOFILE`` of 1,024 (the default of
systemd units and most shells) the process ran out of descriptors long before
``ws.max_connections``; accept() then failed, uvloop (libuv) silently closed the surplus
connections, asyncio logged a traceback per attempt, and nothing told the operator why. So:

- the soft limit is raised to the hard limit at start-up (:func:`raise_soft_limit`);
- websockets are capped at ``min(ws.max_connections, soft - open at start - ws.fd_reserve)``
  (:func:`connection_capacity`), so upgrades beyond it get 503/29005 while descriptors remain
  for Redis, /publish, /healthcheck and the rejected upgrades themselves;
- running out anyway (idle TCP connections need descriptors too) is logged, rate-limited, from
  both loops: asyncio's accept error through the loop's exception handler, uvloop's (which never
  reaches Python) by a once-a-second probe for a free descriptor (:class:`FdWatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections import Counter
from typing import Any

from aiohttp import web

from luna_sender.config import WsSettings
from luna_sender.runtime.logs import Throttle

log = logging.getLogger("luna_sender.fdlimit")
CAPACITY: web.AppKey[int] = web.AppKey("luna_sender_ws_capacity", int)
EXHAUSTED = (errno.EMFILE, errno.ENFILE)
# What asyncio's accept loop pauses on (the descriptors, and kernel memory), and for how long a
# Listener answers "nothing waiting" after one: under the loop's own 1 s pause.
RESOURCES = (*EXHAUSTED, errno.ENOBUFS, errno.ENOMEM)
DRY_SPELL = 0.5
LOG_EVERY = 10.0
# Times no descriptor was free, by where it was seen, not yet in ``fd_exhausted_total``:
# Metrics.fold takes them (the log is rate-limited, the count is not).
EXHAUSTIONS: Counter[str] = Counter()

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]


def nofile() -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE, None where unknown or unlimited."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return soft, hard


def raise_soft_limit() -> None:
    """Raise the soft open-file limit to the hard limit (no privilege needed) and say so."""
    limits = nofile()
    if limits is None or resource is None:
        return
    soft, hard = limits
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS caps the soft limit below an "unlimited"
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return
    log.info("open-file limit raised from %d to %d", soft, hard)


def open_fds() -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd")) - 1  # minus the descriptor listdir used
    return 0


def _descriptors(ws: WsSettings) -> tuple[int, int, int] | None:
    """(open-file limit, descriptors open now, what is left for websockets); None without
    a limit to read."""
    limits = nofile()
    if limits is None:
        return None
    in_use = open_fds()
    return limits[0], in_use, limits[0] - in_use - ws.fd_reserve


def no_room(ws: WsSettings) -> str | None:
    """Why no websocket could ever open here, checked before serving: a reserve at or above
    the open-file limit left a service that answered every /ws 503 (an outside tester)."""
    found = _descriptors(ws)
    if found is None or found[2] > 0:
        return None
    return (
        f"invalid setting 'ws.fd_reserve': {ws.fd_reserve} leaves no file descriptor for "
        f"websockets (open-file limit {found[0]}, {found[1]} open at start)"
    )


def connection_capacity(ws: WsSettings) -> int:
    """Websockets this process can hold: the setting, or fewer when descriptors say so."""
    found = _descriptors(ws)
    if found is None:
        return ws.max_connections
    limit, in_use, room = found
    capacity = min(ws.max_connections, max(0, room))
    log.info(
        "websocket capacity %d (ws.max_connections %d, open-file limit %d, "
        "%d open at start, ws.fd_reserve %d)",
        capacity,
        ws.max_connections,
        limit,
        in_use,
        ws.fd_reserve,
    )
    return capacity


class Listener(socket.socket):
    """A listening socket that tells the standard loop's accept loop to stop once it failed.

    asyncio's accept callback, on running out of descriptors, pauses accepting for a second
    but goes on calling accept() up to the listen backlog (4,096 here) in the same pass, and
    each failure schedules a retry of its own, so the retries multiply: ~20,000 failed
    accept() calls a second, a third of a core, for as long as descriptors are gone
    (CPython gh-151615, fixed after 3.11). Here the calls after a failure answer "nothing
    waiting" until the loop's own retry, one a second. uvloop accepts in libuv and never
    calls this."""

    __slots__ = ("_dry_until",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._dry_until = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        now = time.monotonic()
        if now < self._dry_until:
            raise BlockingIOError(errno.EAGAIN, "accepting paused: out of descriptors")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in RESOURCES:
                self._dry_until = now + DRY_SPELL
            raise


class ExhaustionLog:
    """One WARNING when descriptors run out, then at most one per LOG_EVERY seconds."""

    def __init__(self) -> None:
        self._throttle = Throttle(LOG_EVERY)

    def report(self, where: str) -> None:
        EXHAUSTIONS[where] += 1
        held = self._throttle.due()
        if held is None:
            return
        more = f" ({held} more since the last report)" if held else ""
        limits = nofile()
        log.warning(
            "out of file descriptors (open-file limit %s): %s; new connections wait "
            "or are dropped until descriptors free up%s",
            limits[0] if limits else "unknown",
            where,
            more,
        )


LOG = ExhaustionLog()  # one per process: the descriptors are the process's


def check() -> None:
    """Report (rate-limited) when not even one descriptor is free. Run once a second, and for
    every new HTTP connection (two syscalls, against the tens an accepted connection costs
    anyway): the connection that takes the last descriptor sees it. A burst past the capacity
    and the reserve is over before the next once-a-second probe, and uvloop drops what it
    cannot accept without a word (an outside pass: 494 of 1,500 upgrades, then 724-1,524 of
    plain requests, dropped with nothing logged)."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        if exc.errno in EXHAUSTED:
            LOG.report("no descriptor free")


class FdWatch:
    """Reports descriptor exhaustion on either event loop; serving resumes on its own."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._previous: Any = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        self._task = asyncio.create_task(self._probe(), name="fd-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        asyncio.get_running_loop().set_exception_handler(self._previous)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in EXHAUSTED:
            # asyncio's accept(): it pauses accepting for a second and retries by itself.
            LOG.report("accept() failed")
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            check()


FD_WATCH: web.AppKey[FdWatch] = web.AppKey("luna_sender_fd_watch", FdWatch)
