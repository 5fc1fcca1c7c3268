"""The two pub/sub dialects of Redis, as data: a bus speaks one, chosen by its class.

Sharded Cluster mode differs from classic pub/sub only in its command names and reply types (and
in how the cluster client reads them, see cluster.py), so the reader and the bookkeeping stay
the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """Which pub/sub commands a bus speaks, and the reply types that answer them."""

    subscribe: str
    unsubscribe: str
    message: tuple[str | bytes, ...]
    subscribed: tuple[str | bytes, ...]
    unsubscribed: tuple[str | bytes, ...]


# SUBSCRIBE: one connection to any node hears every PUBLISH of the deployment.
CLASSIC = Dialect(
    "subscribe",
    "unsubscribe",
    ("message", b"message"),
    ("subscribe", b"subscribe"),
    ("unsubscribe", b"unsubscribe"),
)
# SSUBSCRIBE (Redis >= 7 Cluster): a channel is heard only on the node owning its slot.
SHARDED = Dialect(
    "ssubscribe",
    "sunsubscribe",
    ("smessage", b"smessage"),
    ("ssubscribe", b"ssubscribe"),
    ("sunsubscribe", b"sunsubscribe"),
)
