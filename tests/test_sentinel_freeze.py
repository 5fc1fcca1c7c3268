"""Sentinel failovers as an outside pass made them: a frozen master woken while still a master,
and manual failovers.

An outside pass (2026-11-29): publishes stuck on the frozen master refused every publish to the
promoted one for the rest of the freeze (503 for 5 s, the new master answering); once the old
master woke, still a master until the sentinels demoted it (~10 s), those stuck connections
went back to the pool and 30-50 % of the later publishes were answered 204 there, for nobody,
and a resume from before them answered ``recovered: true`` without them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis

from luna_sender.bus.base import BusOptions
from luna_sender.bus.sentinel import SentinelBus

from .ha import SentinelSetup, running
from .helpers import Service, account, face_event, face_message
from .test_faults_bus import Answers, check_answers, poster, ready, receive_seqs

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    with running(SentinelSetup()) as setup:
        yield setup


async def test_publishes_through_a_frozen_masters_failover_and_wake(
    sentinel_setup: SentinelSetup,
) -> None:
    svc = Service("--redis-url", sentinel_setup.url)
    master = sentinel_setup.master
    assert master.proc is not None
    headers = {"Luna-Account-Id": account()}
    answers: Answers = {}
    sent_at: dict[Any, float] = {}
    try:
        await ready(svc)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            ws = await session.ws_connect(svc.ws_url + "/ws", headers=headers)
            post = poster(session, svc, headers, answers)
            await post("before")
            old_port = sentinel_setup.current_master_port()
            tasks: list[asyncio.Task[None]] = []

            async def publishing(seconds: float) -> None:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    seq = len(sent_at)
                    sent_at[seq] = time.monotonic()
                    tasks.append(asyncio.create_task(post(seq)))
                    await asyncio.sleep(0.05)

            master.proc.send_signal(signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 30
                while sentinel_setup.current_master_port() == old_port:
                    assert time.monotonic() < deadline, "sentinels did not promote the replica"
                    await publishing(0.2)
                promoted = time.monotonic()
                await publishing(3)  # the old master still frozen
            finally:
                master.proc.send_signal(signal.SIGCONT)
            woken = time.monotonic()
            await publishing(3)  # the old master awake, a master until the sentinels demote it
            await asyncio.gather(*tasks)
            await post("after")
            seen = await receive_seqs(ws, until="after", timeout=30)
            outcomes = check_answers(answers, seen, old_port)  # every 204 delivered once
            print(f"\nfrozen master's failover: {dict(outcomes)}")
            refused_late = [
                s
                for s, at in sent_at.items()
                if promoted + 1.5 < at < woken and answers[s][0] != 204
            ]
            assert not refused_late, f"{len(refused_late)} refused with the new master up"
            assert answers["after"][0] == 204
            await ws.close()
    finally:
        assert svc.terminate() == 0


async def test_a_manual_failover_moves_the_subscription_at_once(
    sentinel_setup: SentinelSetup,
) -> None:
    """The sentinels announce a failover (``+switch-master``) as they make it: the subscription
    moves then, not at the next poll of the sentinels (here every 30 s). Before, an instance
    that did not publish lost up to a poll interval's events (an outside pass: ~20 per manual
    failover with the 1 s poll, /healthcheck 200)."""
    got: list[bytes] = []
    bus = SentinelBus(sentinel_setup.url, BusOptions(audit_interval=30))
    await bus.start(lambda channel, data: got.append(data))
    try:
        await bus.subscribe("luna-sender:x")
        assert bus.subs.live("luna-sender:x")
        old_port = sentinel_setup.current_master_port()
        sentinel = redis.Redis(port=sentinel_setup.sentinel_ports[0])
        await asyncio.sleep(1)  # the announcements' subscription is in place
        sentinel.execute_command("SENTINEL", "FAILOVER", sentinel_setup.master_name)
        new = redis.Redis(port=await sentinel_setup.new_master(old_port))
        deadline = time.monotonic() + 5
        while new.pubsub_numsub("luna-sender:x") != [(b"luna-sender:x", 1)]:  # this node's own
            assert time.monotonic() < deadline, "the subscription stayed on the old master"
            await asyncio.sleep(0.1)
        new.publish("luna-sender:x", b"after")
        deadline = time.monotonic() + 5
        while b"after" not in got:
            assert time.monotonic() < deadline, "deaf on the new master"
            await asyncio.sleep(0.05)
    finally:
        await bus.stop()


async def test_a_frozen_sentinel_does_not_hide_a_failover(sentinel_setup: SentinelSetup) -> None:
    """The first sentinel of the URL frozen with the master: the others' failover announcement
    moves the subscription (with the poll at 30 s, only an announcement can). Before, one
    sentinel was listened to, the first, and it said nothing while frozen."""
    bus = SentinelBus(sentinel_setup.url, BusOptions(audit_interval=30))
    await bus.start(lambda channel, data: None)
    master, stale = sentinel_setup.master, sentinel_setup.sentinels[0]
    assert master.proc is not None
    other = redis.Redis(port=sentinel_setup.sentinel_ports[1], socket_timeout=1)
    try:
        await bus.subscribe("luna-sender:x")
        await asyncio.sleep(1)  # the announcements' subscriptions are in place
        old_port = sentinel_setup.current_master_port()
        stale.send_signal(signal.SIGSTOP)
        master.proc.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while (port := int(other.sentinel_get_master_addr_by_name("mymaster")[1])) == old_port:
                assert time.monotonic() < deadline, "the sentinels did not fail over"
                await asyncio.sleep(0.1)
            new = redis.Redis(port=port)
            deadline = time.monotonic() + 5
            while new.pubsub_numsub("luna-sender:x") != [(b"luna-sender:x", 1)]:
                assert time.monotonic() < deadline, "the subscription stayed on the old master"
                await asyncio.sleep(0.1)
        finally:
            master.proc.send_signal(signal.SIGCONT)
            stale.send_signal(signal.SIGCONT)
    finally:
        await bus.stop()


async def test_every_worker_follows_a_manual_failover(sentinel_setup: SentinelSetup) -> None:
    """``--workers 2``: each worker has its own bus, and each follows the failover (the sockets
    land on both workers); every event published on the new master reaches every socket."""
    acc = account()
    svc = Service("--redis-url", sentinel_setup.url, "--workers", "2")
    try:
        await ready(svc)
        async with aiohttp.ClientSession() as session:
            sockets = [
                await session.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc})
                for _ in range(8)
            ]
            old_port = sentinel_setup.current_master_port()
            redis.Redis(port=sentinel_setup.sentinel_ports[1]).execute_command(
                "SENTINEL", "FAILOVER", sentinel_setup.master_name
            )
            new = redis.Redis(port=await sentinel_setup.new_master(old_port))
            await asyncio.sleep(0.5)  # the move itself: a reconnect
            for seq in range(20):
                new.publish(f"luna-sender:{acc}", face_message([face_event(seq=seq)]))
            for ws in sockets:
                seen = await receive_seqs(ws, until=19, timeout=10, quiet=0.2)
                assert sorted(seen) == list(range(20)) and set(seen.values()) == {1}, (
                    seen,
                    svc.log()[-2500:],
                )
                await ws.close()
        assert svc.log().count("no longer the master") == 2, svc.log()[-3000:]
    finally:
        assert svc.terminate() == 0
