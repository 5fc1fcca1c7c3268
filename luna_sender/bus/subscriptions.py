"""Subscription bookkeeping of one pub/sub connection, driven by what Redis itself confirms.

Three sets, each with one owner:

- ``wanted``: what the service needs (the hub: accounts with sockets, pinned accounts, the
  general channel). Changes at once when a socket opens or closes.
- ``requested``: what the last SUBSCRIBE/UNSUBSCRIBE sent on this connection asked for.
- ``confirmed``: what Redis said it is subscribed to, from its subscribe/unsubscribe replies
  (each names its channel). Redis answers the commands of one connection in order, so applying
  every reply as it is read gives Redis's real state — however late the replies come, and
  whatever the service wanted meanwhile. A reply never moves ``requested`` or ``wanted``.

``inflight`` counts the replies still owed per channel: a channel is *live* only when Redis
confirmed it and no later command for it is pending (a confirmation followed by a pending
UNSUBSCRIBE is not live). The self-check (see :meth:`audit`) uses a PING as a barrier: once its
PONG is read, every command sent before it has been answered, so any difference between
``requested`` and ``confirmed`` among those channels is real drift, not a late reply.
"""

from __future__ import annotations

import time

KEEPALIVE = "__luna_sender_keepalive__"


class Subscriptions:
    def __init__(self) -> None:
        self.wanted: set[str] = set()
        self.requested: set[str] = set()
        self.confirmed: set[str] = set()
        self.inflight: dict[str, int] = {}
        self.last_seq: dict[str, int] = {}
        self.seq = 0
        # Wanted channels that are not live, with the moment they became so (for the health
        # grace and the log): reset when they go live or stop being wanted.
        self.pending_since: dict[str, float] = {}

    # --- what the service wants ------------------------------------------------------------

    def want(self, channel: str) -> None:
        self.wanted.add(channel)
        self._track(channel)

    def unwant(self, channel: str) -> None:
        self.wanted.discard(channel)
        self._track(channel)

    def live(self, channel: str) -> bool:
        return (
            channel in self.confirmed and channel in self.requested and channel not in self.inflight
        )

    def diff(self) -> tuple[set[str], set[str]]:
        """(to subscribe, to unsubscribe) so that ``requested`` matches ``wanted``."""
        add = self.wanted - self.requested
        remove = self.requested - self.wanted - {KEEPALIVE}
        return add, remove

    def not_live_for(self, seconds: float, now: float | None = None) -> list[str]:
        """Wanted channels that have not been live for more than ``seconds``."""
        now = time.monotonic() if now is None else now
        return sorted(c for c, since in self.pending_since.items() if now - since > seconds)

    # --- the connection --------------------------------------------------------------------

    def reset(self) -> None:
        """A new connection: Redis holds nothing on it yet."""
        self.requested.clear()
        self.confirmed.clear()
        self.inflight.clear()
        self.last_seq.clear()
        for channel in self.wanted:
            self._track(channel)

    def lost(self, channels: set[str]) -> None:
        """These channels' connection is gone (one shard of a sharded Cluster): Redis holds
        nothing of them any more, and no reply to what was sent for them will come."""
        for channel in channels:
            self.requested.discard(channel)
            self.confirmed.discard(channel)
            self.inflight.pop(channel, None)
            self.last_seq.pop(channel, None)
            self._track(channel)

    def sent(self, subscribe: bool, channels: set[str]) -> None:
        """Record a SUBSCRIBE/UNSUBSCRIBE about to be written; Redis answers once per channel."""
        self.seq += 1
        for channel in channels:
            self.inflight[channel] = self.inflight.get(channel, 0) + 1
            self.last_seq[channel] = self.seq
            if subscribe:
                self.requested.add(channel)
            else:
                self.requested.discard(channel)
            self._track(channel)

    def replied(self, subscribe: bool, channel: str) -> bool:
        """Apply one subscribe/unsubscribe reply; True when ``channel`` is now live."""
        left = self.inflight.get(channel, 0) - 1
        if left > 0:
            self.inflight[channel] = left
        else:
            self.inflight.pop(channel, None)
        if subscribe:
            self.confirmed.add(channel)
        else:
            self.confirmed.discard(channel)
        self._track(channel)
        return self.live(channel)

    def barrier(self) -> int:
        """Sequence number of a PING about to be written (see :meth:`audit`)."""
        self.seq += 1
        return self.seq

    def audit(self, barrier: int) -> tuple[set[str], set[str]]:
        """Called when the PONG of ``barrier`` is read: (missing, extra) subscriptions.

        Replies still counted as owed for commands sent before the PING will never come (an
        error reply such as NOPERM answers a whole command once): the counts are dropped.
        """
        for channel in [c for c in self.inflight if self.last_seq.get(c, 0) < barrier]:
            del self.inflight[channel]
            self._track(channel)
        settled = {c for c, s in self.last_seq.items() if s < barrier and c not in self.inflight}
        missing = {c for c in self.requested & settled if c not in self.confirmed}
        extra = {c for c in self.confirmed & settled if c not in self.requested}
        return missing, extra

    def _track(self, channel: str) -> None:
        if channel in self.wanted and not self.live(channel):
            self.pending_since.setdefault(channel, time.monotonic())
        else:
            self.pending_since.pop(channel, None)
