"""What the publish path takes for a stalled Redis (bus/publishing.py StallGuard).

The guard refuses new publishes ("not published") while Redis is stuck, so that only the
publishes already written into a freeze can end undecidable. Two outside passes found it
refusing with Redis fine: 10,000 concurrent publishes kept each reply waiting for the service's
own loop for over a second (66-95 % refused, Redis idle), and on a Cluster one frozen master
refused the publishes to every other master. The end-to-end freezes are in test_faults_bus.py
and test_cluster_bus.py; these pin the rule itself.
"""

from __future__ import annotations

import asyncio

import pytest

from luna_sender.bus.base import BusError
from luna_sender.bus.publishing import StallGuard


class _Publishes:
    """Publishes through one guard: ``held`` ones wait until released, others end at once."""

    def __init__(self, guard: StallGuard) -> None:
        self.guard = guard
        self.slots = asyncio.Semaphore(64)
        self.release = asyncio.Event()

    def held(self, key: str = "") -> asyncio.Future[None]:
        async def run() -> None:
            async with self.guard(self.slots, 5.0, key):
                await self.release.wait()

        return asyncio.ensure_future(run())

    async def quick(self, key: str = "") -> None:
        async with self.guard(self.slots, 5.0, key):
            pass


async def test_a_redis_that_keeps_answering_is_not_taken_for_stalled() -> None:
    publishes = _Publishes(StallGuard(stall_after=1.0))
    slow = publishes.held()
    for _ in range(15):  # answers keep coming while the slow one waits 1.5 s
        await asyncio.sleep(0.1)
        await publishes.quick()
    publishes.release.set()
    await slow


async def test_nothing_answered_while_one_waits_is_a_stall() -> None:
    publishes = _Publishes(StallGuard(stall_after=0.3))
    await publishes.quick()
    slow = publishes.held()
    await asyncio.sleep(0.5)
    with pytest.raises(BusError, match=r"no reply from Redis for over 0\.3 s") as refused:
        await publishes.quick()
    assert refused.value.published is False
    publishes.release.set()
    await slow
    await publishes.quick()  # answered again: no longer refused


async def test_a_stall_on_one_node_does_not_refuse_another() -> None:
    publishes = _Publishes(StallGuard(stall_after=0.3))
    slow = publishes.held("node-a")
    await asyncio.sleep(0.5)
    await publishes.quick("node-b")
    with pytest.raises(BusError):
        await publishes.quick("node-a")
    publishes.release.set()
    await slow
