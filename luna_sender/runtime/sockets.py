"""Two socket options every connection the service cuts or holds needs, in one place.

A connection the service gives up on (a stalled HTTP answer, a websocket that never reads, a
peer the heartbeat found dead, a client that never answers the Close) is **reset**, not closed:
a close (asyncio's ``abort`` too) leaves the unread bytes in the kernel, which keeps sending them
after the descriptor is gone. An outside pass counted 3.8 MB per dropped HTTP client held that
way, still readable, for minutes; a websocket held up to its whole send buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import select
import socket
import struct
import termios
from collections import Counter
from typing import cast

# SO_LINGER on, zero seconds: close() resets the connection and the kernel frees its buffers.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
# Resets not yet counted in ``connections_reset_total``, by reason. The cuts happen deep in
# protocol callbacks that hold no metrics object; Metrics.fold takes these (runtime/metrics.py).
RESETS: Counter[str] = Counter()


def set_send_buffer(transport: asyncio.BaseTransport, size: int) -> None:
    sock = transport.get_extra_info("socket")
    if size and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def reset(transport: asyncio.Transport, reason: str) -> None:
    """Aborted with an RST: whatever the peer has not read is dropped by the kernel at once.

    A transport whose descriptor is already closed (aborted, its ``connection_lost`` not yet
    run) is left alone and not counted: uvloop's socket then raises ValueError, which stopped
    the hub's stall sweep for good in a full test run."""
    sock = transport.get_extra_info("socket")
    try:
        if sock is not None:
            if sock.fileno() < 0:
                return
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    except (OSError, ValueError):
        return
    RESETS[reason] += 1
    transport.abort()


# A deadline checked right after the process itself stood still (SIGSTOP, a paused VM, swap,
# a CPU-starved host) ran before the loop had read its sockets (uvloop runs due timers before it
# polls), so what the peer sent or read meanwhile was not seen yet: requests whose heads had
# arrived were reset, pongs that had arrived did not count (docs/reliability.md). A deadline
# about to cut a connection asks the kernel first (a syscall, on that path only).


def _fd(transport: asyncio.BaseTransport) -> int:
    sock = transport.get_extra_info("socket")
    try:
        return -1 if sock is None else int(sock.fileno())
    except (OSError, ValueError):
        return -1


def unread(transport: asyncio.BaseTransport) -> bool:
    """Bytes from the peer wait in the kernel, and would have been read had this process run:
    the peer did its part. Not while reading is paused on purpose (an evicted ping flooder
    that never reads kept sending, and its Close wait was restarted for good)."""
    fd = _fd(transport)
    if fd < 0 or not cast(asyncio.ReadTransport, transport).is_reading():
        return False
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return False
    return int(struct.unpack("i", buf)[0]) > 0


def sendable(transport: asyncio.BaseTransport) -> bool:
    """The kernel would take more bytes now: the peer read what it had been sent."""
    fd = _fd(transport)
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        return any(mask & select.POLLOUT for _, mask in poller.poll(0))
    except OSError:
        return False


def stirred(transport: asyncio.WriteTransport) -> bool:
    """The peer sent bytes not read yet, or took some of a backlog: it did its part."""
    return unread(transport) or bool(transport.get_write_buffer_size() and sendable(transport))
