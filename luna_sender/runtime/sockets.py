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
import socket
import struct
from collections import Counter

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
