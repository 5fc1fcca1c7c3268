"""The event bus protocol: the only door between the service and whatever carries events.

Backends are chosen by URL scheme (``memory://``, ``redis://``, ``rediss://``), in the style of
encode/broadcaster. A bus delivers raw ``(channel, bytes)`` pairs to one callback; decoding is the
hub's business so it happens once per process however many sockets match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MessageHandler = Callable[[str, bytes], None]


class BusError(Exception):
    """The bus cannot do what was asked right now (Redis down, timeout, ...)."""


class Bus(Protocol):
    """What the hub and the publish routes need from a transport."""

    url: str

    async def start(self, on_message: MessageHandler) -> None:
        """Begin delivering messages of subscribed channels to ``on_message``."""

    async def stop(self) -> None:
        """Stop delivery and release connections."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish to every process listening on ``channel`` (this one included)."""

    async def subscribe(self, channel: str) -> None:
        """Start listening on ``channel``; returns once the subscription is live when possible."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop listening on ``channel``."""

    async def flush(self, timeout: float) -> None:
        """Return once every message published before the call has been dispatched."""

    async def check(self) -> None:
        """Raise :class:`BusError` when the bus cannot currently deliver or publish."""


def create_bus(url: str, **options: object) -> Bus:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryBus

        return MemoryBus(url)
    if scheme in {"redis+sentinel", "rediss+sentinel"}:
        from .sentinel import SentinelBus

        return SentinelBus(url, **options)
    if scheme in {"redis+cluster", "rediss+cluster"}:
        from .cluster import ClusterBus

        return ClusterBus(url, **options)
    if scheme in {"redis", "rediss", "unix"}:
        from .redis import RedisBus

        return RedisBus(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"unsupported bus URL scheme: {scheme!r}")
