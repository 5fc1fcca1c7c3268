"""Scale-out on Redis's own machinery: Sentinel failover and Redis Cluster, real processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
import redis

from .ha import ClusterSetup, SentinelSetup
from .helpers import Service, account, face_event, face_message, recv_json

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup()
    setup.start()
    yield setup
    setup.close()


@pytest.fixture
def cluster_setup() -> Iterator[ClusterSetup]:
    setup = ClusterSetup()
    setup.start()
    yield setup
    setup.close()


async def _publish_until_received(publish: object, ws: aiohttp.ClientWebSocketResponse,
                                  deadline: float) -> float:
    """Publish a fresh event every 100 ms until one arrives; returns when it did."""
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            await publish(n)  # type: ignore[operator]
        except Exception:
            pass
        try:
            await recv_json(ws, 0.1)
            return time.monotonic()
        except TimeoutError:
            continue
    raise AssertionError("no event received before the deadline")


async def test_sentinel_failover_keeps_sockets(sentinel_setup: SentinelSetup) -> None:
    acc = account()
    one = Service("--redis-url", sentinel_setup.url)
    two = Service("--redis-url", sentinel_setup.url)
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Luna-Account-Id": acc}
            w1 = await session.ws_connect(one.ws_url + "/ws", headers=headers)
            w2 = await session.ws_connect(two.ws_url + "/ws", headers=headers)
            body = {"events": [face_event()], "handler_id": "h",
                    "event_create_time": "2026-01-01T00:00:00Z",
                    "event_end_time": "2026-01-01T00:00:00Z"}
            async with session.post(one.url + "/publish", json=body, headers=headers) as resp:
                assert resp.status == 204
            await recv_json(w1)
            await recv_json(w2)

            old_port = sentinel_setup.current_master_port()
            sentinel_setup.master.kill()
            deadline = time.monotonic() + 30
            while sentinel_setup.current_master_port() == old_port:
                assert time.monotonic() < deadline, "sentinels did not promote the replica"
                await asyncio.sleep(0.2)
            promoted = time.monotonic()
            new_master = redis.Redis(port=sentinel_setup.current_master_port())

            async def publish(n: int) -> None:
                new_master.publish(f"luna-sender:{acc}", face_message([face_event(n=n)]))

            got1 = await _publish_until_received(publish, w1, promoted + 20)
            got2 = await _publish_until_received(publish, w2, promoted + 20)
            print(f"sentinel: delivery resumed {got1 - promoted:.2f}s / {got2 - promoted:.2f}s "
                  "after promotion")
            assert not w1.closed and not w2.closed
            # The publish route follows the new master too.
            async with session.post(two.url + "/publish", json=body, headers=headers) as resp:
                assert resp.status == 204
            await w1.close()
            await w2.close()
    finally:
        assert one.terminate() == 0
        assert two.terminate() == 0


async def test_cluster_any_node_reaches_every_instance(cluster_setup: ClusterSetup) -> None:
    acc = account()
    services = [Service("--redis-url", cluster_setup.url) for _ in range(3)]
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Luna-Account-Id": acc}
            sockets = [await session.ws_connect(s.ws_url + "/ws", headers=headers)
                       for s in services]
            for node in cluster_setup.nodes:
                node.client().publish(f"luna-sender:{acc}",
                                      face_message([face_event(node=node.port)]))
                for ws in sockets:
                    assert (await recv_json(ws))["event"]["node"] == node.port
            # The publish route works in cluster mode.
            body = {"events": [face_event(src="route")], "handler_id": "h",
                    "event_create_time": "2026-01-01T00:00:00Z",
                    "event_end_time": "2026-01-01T00:00:00Z"}
            async with session.post(services[0].url + "/publish", json=body,
                                    headers=headers) as resp:
                assert resp.status == 204
            for ws in sockets:
                assert (await recv_json(ws))["event"]["src"] == "route"

            # Losing one node loses no subscriber: each instance moves to another node.
            cluster_setup.nodes[0].kill()
            survivor = cluster_setup.nodes[1].client()

            async def publish(n: int) -> None:
                survivor.publish(f"luna-sender:{acc}", face_message([face_event(n=n)]))

            deadline = time.monotonic() + 20
            for ws in sockets:
                await _publish_until_received(publish, ws, deadline)
                assert not ws.closed
            for ws in sockets:
                await ws.close()
    finally:
        for svc in services:
            assert svc.terminate() == 0
