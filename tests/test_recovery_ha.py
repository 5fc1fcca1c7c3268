"""Missed-event recovery (#18) on Sentinel and Cluster buses: real sentinels, a real cluster.

docs/recovery.md "Sentinel and Cluster": the history lives in the bus's own Redis deployment
(the current master; the node owning each channel's slot), so a resume works there as it does
on a single Redis — and a failover between disconnect and reconnect answers ``recovered:
false`` (nobody here heard what was published while the subscriptions were cut), never a
replay with a hole.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster, key_slot

from luna_sender.bus.history import create_history
from luna_sender.web.context import CTX

from .ha import ClusterSetup, SentinelSetup, running
from .helpers import account, face_event, face_message, recv_json
from .test_recovery_e2e import channel, frames, general, publish, resume_case

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with running(ClusterSetup()) as setup:
        yield setup


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSetup]:
    with running(SentinelSetup()) as setup:
        yield setup


@pytest.fixture
def failing_sentinels() -> Iterator[SentinelSetup]:
    """A setup of the test's own: the test kills its master."""
    with running(SentinelSetup()) as setup:
        yield setup


def stream_key(chan: str) -> str:
    return f"luna-sender:history:{{{chan}}}:s"


async def test_cluster_history_runs_each_channel_on_its_slot_and_reloads_scripts(
    cluster: ClusterSetup,
) -> None:
    """The cluster pipeline routes every EVALSHA to the node owning the channel's slot (keys
    hash-tagged), one batch spanning every node; NOSCRIPT on any node is answered by loading the
    scripts there; size() counts across nodes; a second instance gets the same offsets."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    one = create_history(cluster.url, prefix=prefix)
    two = create_history(cluster.url, prefix=prefix)
    chans = [f"luna-sender:{uuid.uuid4()}" for _ in range(12)]
    probe = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster.nodes[0].port)])
    owners = {probe.get_node_from_key(stream_key(c)).name for c in chans}
    probe.close()
    assert len(owners) > 1  # the batch below really spans nodes
    try:
        # One batch: three messages per channel, interleaved across channels.
        pending = [one.append_nowait(c, f"{c}/{n}".encode()) for n in range(3) for c in chans]
        offsets = await asyncio.gather(*pending)
        for i, chan in enumerate(chans):
            mine = [offsets[i], offsets[len(chans) + i], offsets[2 * len(chans) + i]]
            assert [o.seq for o in mine] == [1, 2, 3]
            assert len({o.epoch for o in mine}) == 1
            replay = await two.since(chan, mine[0])
            assert replay.recovered
            assert [e.data for e in replay.entries] == [f"{chan}/{n}".encode() for n in (1, 2)]
            assert [e.offset for e in replay.entries] == mine[1:]
        assert await one.size() == 3 * len(chans)

        # Another instance appending the same message gets the same offset (dedupe per slot).
        assert await two.append(chans[0], f"{chans[0]}/2".encode()) == offsets[2 * len(chans)]

        for node in cluster.nodes:  # every node forgets the scripts
            node.client().script_flush()
        again = await asyncio.gather(*(one.append_nowait(c, b"after flush") for c in chans))
        assert [o.seq for o in again] == [4] * len(chans)
        replay = await one.since(chans[-1], offsets[-1])
        assert replay.recovered and [e.data for e in replay.entries] == [b"after flush"]
    finally:
        await one.close()
        await two.close()


def test_history_keys_of_a_channel_share_its_slot() -> None:
    """Sharded pub/sub: a channel's history lives on the shard its SSUBSCRIBE goes to."""
    chan = channel(account())
    assert key_slot(stream_key(chan).encode()) == key_slot(chan.encode())
    assert key_slot(f"luna-sender:history:{{{chan}}}:m".encode()) == key_slot(chan.encode())


@pytest.mark.parametrize("sharded", [False, True], ids=["classic", "sharded"])
async def test_cluster_resume_on_another_instance(
    live_app_factory: Any, cluster: ClusterSetup, sharded: bool
) -> None:
    url = cluster.url + ("?sharded=1" if sharded else "")
    one = await live_app_factory(redis_url=url)
    two = await live_app_factory(redis_url=url)
    await resume_case(one, two, account())


async def test_cluster_general_events_resume(live_app_factory: Any, cluster: ClusterSetup) -> None:
    app = await live_app_factory(redis_url=cluster.url)
    bus = app.app[CTX].bus
    chan = "luna-sender-general-events"
    async with app.ws("/ws/general", params={"recover": "true", "event_type": "t"}) as ws:
        await bus.publish(chan, general(1))
        last = (await recv_json(ws))["offset"]
    await bus.publish(chan, general(2))
    await bus.publish(chan, general(3, "other"))
    await bus.publish(chan, general(4))
    await asyncio.sleep(0.3)
    async with app.ws("/ws/general", params={"since": last, "event_type": "t"}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 2}}
        assert [f["event"]["n"] for f in await frames(ws, 2)] == [2, 4]


async def test_sentinel_resume_on_another_instance(
    live_app_factory: Any, sentinels: SentinelSetup
) -> None:
    one = await live_app_factory(redis_url=sentinels.url)
    two = await live_app_factory(redis_url=sentinels.url)
    acc = account()
    await resume_case(one, two, acc)
    # The history is on the master the sentinels name, not in the process.
    master = redis.Redis(port=sentinels.current_master_port())
    assert master.xlen(stream_key(channel(acc))) >= 5


async def _wait_replicated(replica: redis.Redis, key: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while replica.xlen(key) < count:
        assert time.monotonic() < deadline, "the replica never received the history"
        await asyncio.sleep(0.05)


async def test_sentinel_failover_between_disconnect_and_reconnect(
    live_app_factory: Any, failing_sentinels: SentinelSetup
) -> None:
    """The promise across a failover: the history follows the new master (it was replicated
    there), but what was published while the subscriptions were cut reached nobody, so an offset
    from before the failover answers ``recovered: false`` — never a replay missing those events.
    Events published after the service resubscribed are recorded and resumable again."""
    setup = failing_sentinels
    app = await live_app_factory(redis_url=setup.url)
    acc = account()
    chan = channel(acc)
    async with app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(app, acc, "1", "2")
        last = (await frames(ws, 2))[-1]["offset"]
    await publish(app, acc, "3")  # missed by the client, recorded (the account lingers)
    await _wait_replicated(setup.replica.client(), stream_key(chan), 2)

    old_port = setup.current_master_port()
    setup.master.kill()
    deadline = time.monotonic() + 30
    new_master = redis.Redis(port=await setup.new_master(old_port))
    assert new_master.xlen(stream_key(chan)) == 2  # the history survived on the replica

    # Publish on the new master until the service hears it: the first ones reach nobody.
    unheard, n = 0, 0
    while True:
        assert time.monotonic() < deadline, "the service never resubscribed"
        n += 1
        message = face_message([face_event(user_data=f"g{n}")])
        try:
            receivers = new_master.publish(chan, message)
        except redis.exceptions.ReadOnlyError:  # promoted, not yet writable
            receivers = -1
        if receivers > 0:
            break
        unheard += receivers == 0
        await asyncio.sleep(0.05)
    # Usually unheard > 0: the hole the answer below must not hide (without the reconnect's
    # gap marker the replay would be "3", g<n>). Either way the subscription was cut.
    print(f"failover: {unheard} event(s) published before the service resubscribed")
    await asyncio.sleep(0.3)  # g<n> is recorded

    async with app.ws(account=acc, params={"since": last}) as ws:
        assert await recv_json(ws, 10) == {"recovery": {"recovered": False, "replayed": 0}}
        await publish(app, acc, "live")
        got = await recv_json(ws, 10)
        assert got["event"]["user_data"] == "live" and "offset" in got
        after_failover = got["offset"]
    await publish(app, acc, "5")
    await asyncio.sleep(0.2)
    async with app.ws(account=acc, params={"since": after_failover}) as ws:
        assert await recv_json(ws, 10) == {"recovery": {"recovered": True, "replayed": 1}}
        assert (await recv_json(ws))["event"]["user_data"] == "5"


async def test_lost_subscription_on_a_live_redis_is_a_gap(
    live_app_factory: Any, private_redis: Any
) -> None:
    """The same hole without any failover: Redis drops the service's pub/sub connection (as it
    does to a subscriber over its output buffer limit) and keeps the history. What was published
    before the service resubscribed was never recorded: ``recovered: false``, not a replay."""
    app = await live_app_factory(redis_url=private_redis.url)
    acc = account()
    chan = channel(acc)
    async with app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(app, acc, "1")
        last = (await recv_json(ws))["offset"]
    await publish(app, acc, "2")
    direct = private_redis.client()
    direct.client_kill_filter(_type="pubsub")
    unheard = 0
    deadline = time.monotonic() + 10
    while (receivers := direct.publish(chan, face_message([face_event(user_data="g")]))) == 0:
        assert time.monotonic() < deadline, "the service never resubscribed"
        unheard += 1
        await asyncio.sleep(0.01)
    assert unheard > 0 and receivers == 1
    await asyncio.sleep(0.3)
    async with app.ws(account=acc, params={"since": last}) as ws:
        assert await recv_json(ws, 10) == {"recovery": {"recovered": False, "replayed": 0}}


async def test_sentinel_manual_failover_replays_everything_or_nothing(
    live_app_factory: Any, failing_sentinels: SentinelSetup
) -> None:
    """``SENTINEL FAILOVER`` with the old master alive: it keeps its clients (the service's
    subscription among them) and is demoted a moment after the replica is promoted. An event
    published on the new master in between reaches no subscriber of the old one. The promise:
    ``recovered: true`` with every event in order, or ``recovered: false`` — never a replay
    missing one."""
    setup = failing_sentinels
    app = await live_app_factory(redis_url=setup.url)
    acc = account()
    chan = channel(acc)
    async with app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(app, acc, "1")
        last = (await recv_json(ws))["offset"]
    await publish(app, acc, "2")
    await _wait_replicated(setup.replica.client(), stream_key(chan), 2)

    old_port = setup.current_master_port()
    sentinel = redis.Redis(port=setup.sentinel_ports[0], socket_timeout=5)
    sentinel.execute_command("SENTINEL", "FAILOVER", setup.master_name)
    deadline = time.monotonic() + 30
    while (new_port := setup.current_master_port()) == old_port:
        assert time.monotonic() < deadline, "no failover"
        await asyncio.sleep(0.01)
    new_master = redis.Redis(port=new_port)
    published = ["2"]
    for n in range(3):  # straight on the new master, as a producer that follows it would
        new_master.publish(chan, face_message([face_event(user_data=f"h{n}")]))
        published.append(f"h{n}")
        await asyncio.sleep(0.02)
    old = redis.Redis(port=old_port)
    while old.execute_command("ROLE")[0] != b"slave":  # the old master is demoted
        assert time.monotonic() < deadline, "the old master was never demoted"
        await asyncio.sleep(0.05)
    for n in range(3):
        while True:
            assert time.monotonic() < deadline, "the service cannot publish after the failover"
            try:
                await publish(app, acc, f"g{n}")
                break
            except Exception:
                await asyncio.sleep(0.05)
        published.append(f"g{n}")
    await asyncio.sleep(0.5)

    async with app.ws(account=acc, params={"since": last}) as ws:
        head = await recv_json(ws, 10)
        if head["recovery"]["recovered"]:
            got = [f["event"]["user_data"] for f in await frames(ws, head["recovery"]["replayed"])]
            assert got == published
        else:
            assert head == {"recovery": {"recovered": False, "replayed": 0}}
    print(f"manual failover: recovered={head['recovery']['recovered']}")
