"""W4, the platform's load shape: many accounts, many sources, a few filtered sockets each.

W1 (one account, every socket unfiltered) measures fan-out; the platform instead carries tens of
accounts of tens of cameras, and most sockets filter. Per account: one unfiltered socket, a few
``sources=<one camera>`` sockets, and one whose filter never matches (it still costs the server
a filter check per event). Events (~3 KB, luna-handlers' producer format) go to a random account
and camera, so each event has a known number of due deliveries (``expected``).

Only peers with content filters run it (luna, luna-base, luna-w2, naive): nchan, broadcaster and
socketio would need the publisher to do the filtering, which measures the publisher, not them.
"""

from __future__ import annotations

import random
import uuid

from .loadgen import Sub
from .peers.registry import Peer

NEVER = "no-such-camera"


class W4Layout:
    workload = "W4"
    event_size = (2_500, 3_500)  # bytes of one event: "a few KB"

    def __init__(
        self, accounts: int = 40, sources: int = 20, per_source: int = 3, seed: int = 11
    ) -> None:
        rng = random.Random(seed)
        self.accounts = [
            str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(accounts)
        ]
        self.sources = [f"cam-{k}" for k in range(sources)]
        # account index -> the cameras its per-source sockets watch (distinct, fixed by seed)
        self.watched = [rng.sample(range(sources), per_source) for _ in range(accounts)]
        self.per_source = per_source

    @property
    def subscribers(self) -> int:
        return len(self.accounts) * (2 + self.per_source)

    def subs(self, peer: Peer) -> list[Sub]:
        out = []
        for acc, watched in zip(self.accounts, self.watched, strict=True):
            out.append(peer.subscriber(acc, None, 0))
            out += [peer.subscriber(acc, [self.sources[k]], 0) for k in watched]
            out.append(peer.subscriber(acc, [NEVER], 0))
        return out

    def event(self, rng: random.Random) -> tuple[str, str, list[int], int]:
        """(account, source, deliveries due): the unfiltered socket plus watchers of the source."""
        a = rng.randrange(len(self.accounts))
        s = rng.randrange(len(self.sources))
        return self.accounts[a], self.sources[s], [], 1 + self.watched[a].count(s)
