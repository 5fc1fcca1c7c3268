"""The bus contract: the only door between the service and whatever carries events.

Backends are chosen by URL scheme, in the style of encode/broadcaster (config's BUS_SCHEMES
lists the same eight):

- ``memory://`` — in-process (memory.py): one process only, the single-node default;
- ``redis://``, ``rediss://`` (TLS), ``unix://`` (socket path) — one Redis (redis.py);
- ``redis+sentinel://``, ``rediss+sentinel://`` — Redis behind Sentinel (sentinel.py);
- ``redis+cluster://``, ``rediss+cluster://`` — Redis Cluster, ``?sharded=1`` for sharded
  pub/sub (cluster.py).

A bus delivers raw ``(channel, bytes)`` pairs to one callback; decoding is the hub's business so
it happens once per process however many sockets match. What every backend promises, whatever it
runs on, is written on :class:`Bus`; the hub and the publish routes rely on nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MessageHandler = Callable[[str, bytes], None]
Repaired = Callable[[int, int], None]  # channels re-subscribed, released (SelfHealing)
# These channels' subscription was cut and is being taken again; True: a connection came back
Cut = Callable[[frozenset[str], bool], None]


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
    only ever see ``public``, which never does: :data:`NOT_PUBLISHED` or :data:`OUTCOME_UNKNOWN`
    from :meth:`Bus.publish`, :data:`NOT_REACHABLE` or :data:`NOT_SUBSCRIBED` from
    :meth:`Bus.check` (the in-process bus says ``not running`` before start and after stop).
    ``published`` is False when the bus knows the message was not published — resending it
    cannot duplicate it — and None when it cannot know (see :meth:`Bus.publish`).
    """

    def __init__(
        self, reason: str, public: str = NOT_REACHABLE, published: bool | None = False
    ) -> None:
        super().__init__(reason)
        self.public = public
        self.published = published


@dataclass(frozen=True)
class BusOptions:
    """Timing of the networked backends (seconds); the in-process bus has none to tune."""

    publish_timeout: float = 10.0
    subscribe_timeout: float = 2.0
    max_backoff: float = 1.0
    audit_interval: float = 1.0
    health_grace: float = 5.0


class Bus(Protocol):
    """What the hub, the publish routes and the service routes need from a transport.

    Delivery is **at most once**: a message reaches each process subscribed to its channel
    once, or not at all. Pub/sub keeps no history, so a message published while this process's
    subscription is down (Redis restarting, the connection being re-established) is lost for
    it — nothing is replayed after a reconnect. The bus never resends a publish that may have
    reached the broker, so no duplicate comes from it either.

    Ordering: of two publishes to the same channel, one returning before the other begins, every
    subscriber gets the first before the second. Concurrent publishes have no defined order, and
    nothing is promised between different channels (sharded Cluster reads each shard apart).

    Loop rules: a bus belongs to the event loop that called :meth:`start`; every method is called
    from that loop's thread, none is thread-safe. ``on_message`` runs on that loop, synchronously,
    one message at a time: it must neither block nor await; an exception it raises is logged and
    the next message is delivered as usual.
    """

    url: str

    @property
    def connected(self) -> bool:
        """Whether messages can arrive right now (the subscription connection is up).

        No I/O, cheap enough for every scrape (``bus_connected``); :meth:`check` is the thorough
        question. The in-process bus is connected from :meth:`start` to :meth:`stop`.
        """

    async def start(self, on_message: MessageHandler) -> None:
        """Begin delivering messages of subscribed channels to ``on_message``.

        Returns at once: connecting happens in the background and goes on until it succeeds, so
        a service whose broker is down still starts (and :meth:`check` fails until it is up).
        """

    async def stop(self) -> None:
        """Stop delivery and release connections; nothing is read from the broker afterwards."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish to every process listening on ``channel`` (this one included), at most once.

        Returning means the broker accepted the message exactly once. A publish is never
        retried once it may have reached the broker. :class:`BusError` with ``published=False``
        means it was not published (nothing was written, or the broker refused it);
        ``published=None`` is the one case the bus cannot know: the command was written and no
        reply came within the publish timeout — the broker may still deliver it.
        """

    async def subscribe(self, channel: str) -> None:
        """Want ``channel`` from now on, until :meth:`unsubscribe`. Never raises.

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
        """Stop wanting ``channel``; the broker is told in the background (never blocks).

        Messages of ``channel`` may still arrive until the broker has confirmed: ``on_message``
        must tolerate channels nobody wants any more.
        """

    async def flush(self, timeout: float) -> None:
        """Return once every message published before the call has been dispatched.

        Best effort and bounded by ``timeout``; never raises, and returns at once when the bus
        is down (nothing more can arrive). Shutdown uses it before closing sockets.
        """

    async def check(self) -> None:
        """Raise :class:`BusError` when the bus cannot currently deliver or publish.

        That includes a wanted channel (an account with open sockets, the general channel)
        that the broker has not confirmed for longer than the health grace: a socket that
        would silently receive nothing makes the service unhealthy.
        """


@runtime_checkable
class SelfHealing(Protocol):
    """Optional: a bus whose connection can drop reports what it did about it (for metrics).

    ``reconnected`` is called each time the subscription connection is back after a loss;
    ``repaired`` with the numbers of channels its self-check re-subscribed (they heard nothing
    for a while) and released (nothing was lost); ``cut`` with the channels that heard nothing
    for a while, just before they are subscribed again (those a repair asks again, or a lost
    shard's of a sharded Cluster while the others read on, then with True): what was published
    on them meanwhile reached no one here.
    All run on the bus's loop and must not block. Every Redis backend has it; ``memory://``
    does not.
    """

    def observe(
        self, *, reconnected: Callable[[], None], repaired: Repaired, cut: Cut | None = None
    ) -> None: ...


def create_bus(url: str, options: BusOptions | None = None) -> Bus:
    """The backend for ``url``'s scheme; ``options`` tune the networked ones only."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from luna_sender.bus.memory import MemoryBus

        return MemoryBus(url)
    if scheme in {"redis+sentinel", "rediss+sentinel"}:
        from luna_sender.bus.sentinel import SentinelBus

        return SentinelBus(url, options)
    if scheme in {"redis+cluster", "rediss+cluster"}:
        from luna_sender.bus.cluster import cluster_bus

        return cluster_bus(url, options)
    if scheme in {"redis", "rediss", "unix"}:
        from luna_sender.bus.redis import RedisBus

        return RedisBus(url, options)
    raise ValueError(f"unsupported bus URL scheme: {scheme!r}")
