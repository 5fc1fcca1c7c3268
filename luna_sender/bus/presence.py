"""A pub/sub connection's sign that it has heard everything since it was named.

The recovery history's recorders register under a name, and a starting recorder believes a
registration only while Redis counts a subscriber of the channel of that name (the MARK script,
bus/redis_scripts.py; docs/recovery.md "A crashed recorder"). The name is subscribed on the bus's
own pub/sub connection, so it dies with everything that makes a recorder miss events:

- the process is killed (Redis drops its connections at once, while a registration outlives it
  by up to 3 s);
- only the pub/sub connection is cut (``CLIENT KILL``, an output-buffer overflow): a separate
  connection would have vouched for a recorder that heard nothing;
- the connection comes back, or the bus's self-check finds a channel unsubscribed: a new name is
  taken, so registrations made before the gap do not come back to life. The recorder registers
  the new name with its gap marker (delivery/recorder.py), not before.

The name is also where other instances reach this one's recorder: fence requests and answers
(bus/fences.py) are published to it, and Redis delivers them in order with the events.

Cluster has no presence: there each node counts its own clients' subscriptions only.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

PREFIX = "__luna_sender_alive__:"


class Announcer:
    """The presence name recorders register under now, and the one held on the connection."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.name: str | None = None  # None while there is no connection
        self._held: str | None = None  # subscribed on the current connection
        self.due = False  # ``name`` is still to be subscribed

    def lost(self) -> None:
        self.name = self._held = None
        self.due = False

    def renew(self, same_connection: bool) -> None:
        """A new name at once (a gap marker written from now on registers it), subscribed by
        the next :meth:`send`; until Redis has read that, a start elsewhere writes a marker."""
        if not same_connection:
            self._held = None
        self.name = PREFIX + uuid.uuid4().hex if self.enabled else None
        self.due = self.enabled

    async def send(self, pubsub: Any, lock: asyncio.Lock) -> None:
        """Raw commands: redis-py re-subscribes what its ``subscribe()`` recorded after a
        reconnect of its own, and an old name must never come back. An ACL refusing the channel
        is logged by the bus reader (``bus subscription command refused``) and costs presence
        only: every start elsewhere then writes a marker."""
        self.due = False
        name, old = self.name, self._held
        if name is None:
            return
        async with lock:
            if old is not None and old != name:
                await pubsub.execute_command("UNSUBSCRIBE", old)
            await pubsub.execute_command("SUBSCRIBE", name)
        self._held = name
