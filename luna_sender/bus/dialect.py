"""The two pub/sub dialects of Redis, as data: a bus speaks one, chosen by its class.

Sharded Cluster mode differs from classic pub/sub only in its command names and reply types (and
in how the cluster client reads them, see cluster.py), so the reader and the bookkeeping stay
the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = [
    "NOT_ENOUGH_DATA",
    "ChannelNames",
    "Dialect",
    "finish_reply",
    "hiredis_parser",
]


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


# --- reading replies past redis-py (the reader's fast path, feed.py) ---------------------------

# Decoded channel names kept: only subscribed channels deliver, so this bound is for safety.
CHANNEL_NAMES_MAX = 65536


class ChannelNames(dict[Any, str]):
    """Channel names as the hub wants them (str), each decoded once: a look-up per message."""

    def __missing__(self, raw: Any) -> str:
        if type(raw) is not bytes:
            return str(raw)
        if len(self) >= CHANNEL_NAMES_MAX:
            self.clear()
        name = self[raw] = raw.decode("utf-8", "replace")
        return name


def hiredis_parser(pubsub: PubSub) -> Any:
    """The hiredis parser of a plain pub/sub connection that is up, or None where redis-py
    must read itself: the pure-Python parsers, a cluster pub/sub, a connection that is down
    (redis-py's ``get_message`` then reconnects it or raises, as it always did).

    A Sentinel-managed connection qualifies: its own ``read_response`` only turns a
    ReadOnlyError reply into a reconnect, and SUBSCRIBE/UNSUBSCRIBE/PING never get one.
    """
    if type(pubsub) is not PubSub:
        return None
    connection = pubsub.connection
    parser = getattr(connection, "_parser", None)
    if type(parser) is not _AsyncHiredisParser or not getattr(parser, "_connected", False):
        return None
    if not getattr(connection, "is_connected", False):
        return None
    return parser


async def finish_reply(pubsub: PubSub, reply: Any) -> dict[str, Any] | None:
    """What redis-py's ``get_message`` does with a reply once its parser has read it
    (hiredis.py ``read_response``, then ``Connection.read_response``, then ``handle_message``),
    for the replies the fast path does not take itself: subscribe confirmations, pongs, errors,
    push notifications."""
    if isinstance(reply, RedisConnectionError):
        raise reply
    connection: Any = pubsub.connection
    parser: Any = connection._parser
    push = parser._hiredis_PushNotificationType
    if push is not None and isinstance(reply, push):
        reply = await parser.handle_push_response(reply)
    elif isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]
    if isinstance(reply, ResponseError):
        raise reply
    if not reply:
        return None
    message: dict[str, Any] | None = await pubsub.handle_message(reply)  # type: ignore[no-untyped-call]
    return message
