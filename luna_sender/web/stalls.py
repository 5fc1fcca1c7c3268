"""A client that stops reading what the service sends it.

The head and body deadlines (web/httpd.py) only cover what a client sends. An outside pass
pipelined 100 ``/docs/spec`` requests and never read: its descriptor and ~3.8 MB of answers
were held for as long as it liked. Here an HTTP connection whose transport stops taking
writes is reset once a whole ``limits.http_send_timeout`` passes in which the client took none
of what waits (nginx's ``send_timeout``), and at once when the service stops.

The kernel reports a socket writable again only once a good share of its send buffer is free,
and left to itself it grows that buffer to megabytes on a fast link: a client steadily reading
a few KB a second then showed no progress for minutes, and one that stopped reading held
megabytes. So every connection starts with a fixed buffer (``limits.http_send_buffer``; an
upgrade to a websocket sets ``ws.socket_send_buffer``).
"""

from __future__ import annotations

import asyncio
import logging

from luna_sender.runtime.sockets import reset, sendable

log = logging.getLogger("luna_sender.web")

# Transports whose send deadline is armed now (see reset_stalled).
STALLED: set[asyncio.Transport] = set()
# The deadline is checked this many times per period: a reset comes between 1 and 1 + 1/CHECKS
# periods after the client last took bytes.
CHECKS = 4


def reset_stalled() -> int:
    """At shutdown: a client that is not taking its answer will not take it within the grace
    either, and aiohttp waited for each such answer twice over (6 s per stop with any stalled
    client, measured). Reset them at once; returns how many."""
    stalled = list(STALLED)
    STALLED.clear()
    for transport in stalled:
        reset(transport, "http_stopping")
    return len(stalled)


class SendDeadline:
    """Armed when a transport stops taking writes (``pause_writing``), disarmed when it takes
    them again. Meanwhile the bytes still to send are sampled ``CHECKS`` times a period, and the
    connection is reset once a whole period has passed with none taken: a resume needs most of
    an answer sent (aiohttp writes each whole), and a client steadily reading a 150 KB
    ``/docs/spec`` at 40 KB/s was cut with a 3 s deadline when only a resume counted. (One
    check at the period's end measured from the pause, when the kernel was still filling, and
    reset an idle client only at twice the period.)"""

    __slots__ = ("_handle", "_last_progress", "_left", "_loop", "_timeout", "_transport")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._handle: asyncio.TimerHandle | None = None
        self._left = 0
        self._last_progress = 0.0
        self._transport: asyncio.Transport | None = None

    def paused(self, transport: asyncio.Transport) -> None:
        if self._timeout > 0 and self._handle is None:
            self._left = transport.get_write_buffer_size()
            self._last_progress = self._loop.time()
            self._transport = transport
            STALLED.add(transport)
            self._handle = self._loop.call_later(self._timeout / CHECKS, self._check, transport)

    def resumed(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._transport is not None:
            STALLED.discard(self._transport)
            self._transport = None

    def _check(self, transport: asyncio.Transport) -> None:
        self._handle = None
        now, left = self._loop.time(), transport.get_write_buffer_size()
        if not left:  # all taken; a closing transport then ends (connection_lost disarms too)
            self.resumed()
            return
        if left < self._left:  # the client took some
            self._left, self._last_progress = left, now
        elif sendable(transport):  # it read while this process stood still (runtime/sockets.py)
            self._last_progress = now
        elif now - self._last_progress >= self._timeout:
            log.debug("client read nothing for %g s, resetting its connection", self._timeout)
            self.resumed()
            reset(transport, "http_send_timeout")
            return
        self._handle = self._loop.call_later(self._timeout / CHECKS, self._check, transport)
