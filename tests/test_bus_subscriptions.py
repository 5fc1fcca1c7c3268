"""The subscription bookkeeping against a model of Redis: replies late, in any interleaving.

Redis answers the commands of one connection in order, one reply per channel; the bookkeeping
only learns Redis's state from those replies. Whatever the service wants meanwhile, and however
late the replies come, once every reply is in and the reconciler has run, what Redis holds is
exactly what is wanted and every wanted channel is live.
"""

from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from luna_sender.bus.subscriptions import KEEPALIVE, Subscriptions

CHANNELS = ["a", "b"]


class FakeRedis:
    """One pub/sub connection: a queue of written commands, processed in order."""

    def __init__(self) -> None:
        self.subscribed: set[str] = set()
        self.queue: collections.deque[tuple[str, list[str]]] = collections.deque()

    def step(self, subs: Subscriptions) -> list[int]:
        """Redis runs the next command; its replies are read. Returns PONG barriers read."""
        kind, args = self.queue.popleft()
        if kind == "ping":
            return [int(args[0])]
        for channel in args:
            if kind == "subscribe":
                self.subscribed.add(channel)
            else:
                self.subscribed.discard(channel)
            subs.replied(kind == "subscribe", channel)
        return []


class Bus:
    """RedisBus's use of the bookkeeping: a dirty flag, a reconciler, PONG audits."""

    def __init__(self) -> None:
        self.subs = Subscriptions()
        self.redis = FakeRedis()
        self.dirty = False
        self.subs.sent(True, {KEEPALIVE})
        self.redis.queue.append(("subscribe", [KEEPALIVE]))

    def subscribe(self, channel: str) -> None:
        self.subs.want(channel)
        if not self.subs.live(channel):  # RedisBus.subscribe returns early when live
            self.dirty = True

    def unsubscribe(self, channel: str) -> None:
        self.subs.unwant(channel)
        self.dirty = True

    def reconcile(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        add, remove = self.subs.diff()
        if add:
            self.subs.sent(True, add)
            self.redis.queue.append(("subscribe", sorted(add)))
        if remove:
            self.subs.sent(False, remove)
            self.redis.queue.append(("unsubscribe", sorted(remove)))

    def step(self) -> None:
        for barrier in self.redis.step(self.subs):
            missing, extra = self.subs.audit(barrier)
            assert not missing and not extra, "drift reported without any fault"
            if self.subs.diff() != (set(), set()):
                self.dirty = True

    def drain(self) -> None:
        while self.redis.queue:
            self.step()


ops = st.lists(
    st.tuples(
        st.sampled_from(["want", "unwant", "reconcile", "step", "ping"]), st.sampled_from(CHANNELS)
    ),
    max_size=60,
)


@settings(max_examples=1000, deadline=None)
@given(ops)
def test_late_and_interleaved_replies_never_leave_a_wanted_channel_unsubscribed(
    script: list[tuple[str, str]],
) -> None:
    bus = Bus()
    subs, redis = bus.subs, bus.redis
    for op, channel in script:
        if op == "want":
            bus.subscribe(channel)
        elif op == "unwant":
            bus.unsubscribe(channel)
        elif op == "reconcile":
            bus.reconcile()
        elif op == "step" and redis.queue:
            bus.step()
        elif op == "ping":
            redis.queue.append(("ping", [str(subs.barrier())]))
        # A channel is never called live while Redis does not hold it.
        for name in CHANNELS:
            if subs.live(name):
                assert name in redis.subscribed, name
    bus.drain()
    bus.reconcile()
    bus.drain()
    assert redis.subscribed - {KEEPALIVE} == subs.wanted
    assert subs.confirmed == redis.subscribed
    assert all(subs.live(c) for c in subs.wanted)
    assert subs.not_live_for(-1.0) == []


def test_audit_finds_drift_once_every_reply_is_in() -> None:
    """A reply that never comes (an error reply answers a whole command once) is drift."""
    subs = Subscriptions()
    subs.want("a")
    subs.sent(True, {"a", "b"})
    subs.replied(True, "b")  # "a" never answered
    barrier = subs.barrier()
    missing, extra = subs.audit(barrier)
    assert missing == {"a"} and extra == set()
    assert subs.not_live_for(-1.0) == ["a"]


def test_resubscribe_while_an_unsubscribe_is_unanswered() -> None:
    """The field case: a socket closes (UNSUBSCRIBE written, no reply yet: Redis is frozen),
    another socket of the account opens. The channel must not count as live."""
    bus = Bus()
    bus.subscribe("a")
    bus.reconcile()
    bus.drain()
    assert bus.subs.live("a")
    bus.unsubscribe("a")
    bus.reconcile()
    bus.subscribe("a")
    assert not bus.subs.live("a")  # confirmed, but an UNSUBSCRIBE is still owed a reply
    bus.step()  # Redis wakes: the UNSUBSCRIBE runs
    bus.reconcile()
    bus.drain()
    assert bus.redis.subscribed == {KEEPALIVE, "a"} and bus.subs.live("a")


def test_subscribe_and_unsubscribe_both_unanswered() -> None:
    """Open and close during a freeze: SUBSCRIBE then UNSUBSCRIBE, replies after the thaw."""
    bus = Bus()
    bus.drain()
    bus.subscribe("a")
    bus.reconcile()
    bus.unsubscribe("a")
    bus.reconcile()
    bus.drain()  # thaw: both replies arrive, the late subscribe confirmation first
    assert not bus.subs.live("a") and "a" not in bus.subs.confirmed
    bus.subscribe("a")  # the next socket
    assert bus.dirty
    bus.reconcile()
    bus.drain()
    assert bus.redis.subscribed == {KEEPALIVE, "a"} and bus.subs.live("a")
