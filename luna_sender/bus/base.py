"""The event bus protocol: the only door between the service and whatever carries events.

Backends are chosen by URL scheme (``memory://``, ``redis://``, ``rediss://``), in the style of
encode/broadcaster. A bus delivers raw ``(channel, bytes)`` pairs to one callback; decoding is the
hub's business so it happens once per process however many sockets match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MessageHandler = Callable[[str, bytes], None]


# What clients see after "Event bus is unavailable: " (error 29006): never an address.
NOT_REACHABLE = "not reachable"
NOT_PUBLISHED = "the event was not published"
OUTCOME_UNKNOWN = "no reply in time, the event may still be delivered"
NOT_SUBSCRIBED = "subscriptions not confirmed"


def log_address(url: str) -> str:
    """A bus URL as a log line may show it: no userinfo, and query credentials
    (``?password=``, ``?sentinel_password=``) masked by the same rule as ``/config``."""
    from luna_sender.config import mask_url

    return mask_url(url).split("@")[-1]


class BusError(Exception):
    """The bus cannot do what was asked right now (Redis down, timeout, ...).

    ``str(exc)`` is the real reason, for the service's log: it may name Redis's address. Clients
    only ever see ``public``, which never does. ``published`` is False when the bus knows the
    message was not published and None when it cannot know (see :meth:`Bus.publish`).
    """

    def __init__(
        self, reason: str, public: str = NOT_REACHABLE, published: bool | None = False
    ) -> None:
        super().__init__(reason)
        self.public = public
        self.published = published


class Bus(Protocol):
    """What the hub and the publish routes need from a transport."""

    url: str

    async def start(self, on_message: MessageHandler) -> None:
        """Begin delivering messages of subscribed channels to ``on_message``."""

    async def stop(self) -> None:
        """Stop delivery and release connections."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish to every process listening on ``channel`` (this one included), at most once.

        Returning means the broker accepted the message exactly once. A publish is never
        retried once it may have reached the broker. :class:`BusError` with ``published=False``
        means it was not published (nothing was written, or the broker refused it);
        ``published=None`` is the one case the bus cannot know: the command was written and no
        reply came within the publish timeout — the broker may still deliver it.
        """

    async def subscribe(self, channel: str) -> None:
        """Want ``channel`` from now on, until :meth:`unsubscribe`.

        Promises: returns once the broker has confirmed the subscription (live: every message
        published afterwards is delivered), or after a bounded wait (``subscribe_timeout``)
        when the broker is slow, or at once when the bus is known to be down. In the last two
        cases the subscription still comes: the bus keeps what is wanted apart from what the
        broker confirmed, re-subscribes after every reconnect, repairs any drift it finds, and
        :meth:`check` fails while a wanted channel stays unconfirmed beyond a short grace. A
        late or out-of-order confirmation can never leave a wanted channel unsubscribed.
        Calling it for a channel already live is cheap (no broker round trip).
        """

    async def unsubscribe(self, channel: str) -> None:
        """Stop wanting ``channel``; the broker is told in the background (never blocks)."""

    async def flush(self, timeout: float) -> None:
        """Return once every message published before the call has been dispatched."""

    async def check(self) -> None:
        """Raise :class:`BusError` when the bus cannot currently deliver or publish.

        That includes a wanted channel (an account with open sockets, the general channel)
        that the broker has not confirmed for longer than the health grace: a socket that
        would silently receive nothing makes the service unhealthy.
        """


def create_bus(url: str, **options: object) -> Bus:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from luna_sender.bus.memory import MemoryBus

        return MemoryBus(url)
    if scheme in {"redis+sentinel", "rediss+sentinel"}:
        from luna_sender.bus.sentinel import SentinelBus

        return SentinelBus(url, **options)
    if scheme in {"redis+cluster", "rediss+cluster"}:
        from luna_sender.bus.cluster import ClusterBus

        return ClusterBus(url, **options)
    if scheme in {"redis", "rediss", "unix"}:
        from luna_sender.bus.redis import RedisBus

        return RedisBus(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"unsupported bus URL scheme: {scheme!r}")
