"""The state of the pub/sub connection, and the one log line each change of it deserves.

Kept apart from the reader (redis.py) so the reconnect loop reads as "connect, read, on error
back off" while what an operator sees — ``bus unreachable``, ``bus connection lost``, ``back
after 1.2 s`` and the ``bus_reconnects`` hook — is decided in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("luna_sender.bus")
NOT_CONNECTED_YET = "not connected yet"
STALL = 2.0  # seconds without an answer on the subscription after which Cluster/Sentinel act


def pubsub_link(pubsub: Any) -> tuple[Any, tuple[str, int]] | None:
    """The open transport of a pub/sub connection and its (host, port): what a bus aborts
    to make its reader reconnect elsewhere when the subscription stopped answering."""
    connection = getattr(pubsub, "connection", None)
    transport = getattr(getattr(connection, "_writer", None), "transport", None)
    if transport is None or transport.is_closing():
        return None
    return transport, (
        str(getattr(connection, "host", "")),
        int(getattr(connection, "port", 0) or 0),
    )


class Link:
    def __init__(self, where: str, max_backoff: float) -> None:
        self._where = where
        self._max_backoff = max_backoff
        self.connected = False
        self.last_error: str | None = NOT_CONNECTED_YET
        self.on_reconnect: Callable[[], None] | None = None
        self._ever_connected = False
        self._down_since: float | None = time.monotonic()

    @property
    def known_down(self) -> bool:
        """Down after having tried: waiting for the broker would only stall the caller."""
        return not self.connected and self.last_error != NOT_CONNECTED_YET

    def connecting(self) -> None:
        log.info("bus connecting to %s", self._where, extra={"bus_state": "connecting"})

    def up(self, failures: int) -> None:
        """A fresh connection holds its subscriptions: the reader has just sent them."""
        outage = time.monotonic() - (self._down_since or time.monotonic())
        if not self._ever_connected:
            log.info(
                "bus connected to %s%s",
                self._where,
                f" after {outage:.1f} s" if failures else "",
                extra={"bus_state": "connected", "outage_seconds": round(outage, 3)},
            )
        else:
            log.warning(
                "bus connection back after %.1f s",
                outage,
                extra={"bus_state": "connected", "outage_seconds": round(outage, 3)},
            )
            if self.on_reconnect:
                self.on_reconnect()
        self._ever_connected = True
        self.connected = True
        self._down_since = None
        self.last_error = None

    def lost(self, reason: str, failures: int) -> None:
        """Log each state change once: lost (or unreachable at start), then retrying."""
        if self.connected:
            log.warning(
                "bus connection lost: %s", reason, extra={"bus_state": "lost", "reason": reason}
            )
        elif failures == 1 and not self._ever_connected:
            log.warning(
                "bus unreachable: %s", reason, extra={"bus_state": "unreachable", "reason": reason}
            )
        elif failures == 2:
            log.warning(
                "bus still unreachable, retrying every %.1f s at most: %s",
                self._max_backoff,
                reason,
                extra={"bus_state": "retrying", "reason": reason},
            )
        else:
            log.debug("bus reconnect attempt %d failed: %s", failures, reason)
        self.connected = False
        self.last_error = reason
        if self._down_since is None:
            self._down_since = time.monotonic()

    def reopened_by_client(self) -> None:
        """redis-py reconnected the pub/sub connection on its own while writing."""
        log.warning(
            "bus pub/sub connection re-established by the client", extra={"bus_state": "connected"}
        )
        if self.on_reconnect:
            self.on_reconnect()
