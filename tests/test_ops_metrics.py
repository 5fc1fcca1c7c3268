"""Metrics an SRE expects, scraped from a real process fed through a real Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import Service, account, face_event, recv_json


def scrape(svc: Service) -> str:
    with urllib.request.urlopen(svc.url + "/metrics", timeout=5) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    assert found, f"{name}{labels} not in scrape"
    return total


def message(create_time: str | None, events: int = 1) -> bytes:
    return orjson.dumps(
        {
            "handler_id": str(uuid.uuid4()),
            "Luna-Request-Id": "1536751345,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
            "events": [face_event() for _ in range(events)],
            "event_create_time": create_time,
            "event_end_time": create_time,
        }
    )


async def wait_value(svc: Service, name: str, expected: float, **labels: str) -> None:
    deadline = time.monotonic() + 10
    while (value := sample(scrape(svc), name, **labels)) != expected:
        assert time.monotonic() < deadline, f"{name}{labels} = {value}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_latency_histograms_subscriptions_and_reconnects(private_redis) -> None:
    svc = Service(
        "--redis-url", private_redis.url, env={"LUNA_SENDER_METRICS__EXTRA_LABELS": "{env: prod}"}
    )
    acc_a, acc_b, idle = account(), account(), account()
    redis = private_redis.client()
    try:
        async with aiohttp.ClientSession() as http:
            sockets_a = [
                await http.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc_a})
                for _ in range(3)
            ]
            ws_b = await http.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc_b})
            text = scrape(svc)
            assert sample(text, "bus_subscribed_channels", env="prod") == 3  # general + a + b
            assert sample(text, "event_delivery_seconds_count", kind="face") == 0

            # One message to three sockets: one delivery observation, not three.
            two_s_ago = (datetime.now(UTC) - timedelta(seconds=2)).isoformat()
            assert redis.publish(f"luna-sender:{acc_a}", message(two_s_ago)) == 1
            for ws in sockets_a:
                await recv_json(ws)
            text = scrape(svc)
            assert sample(text, "events_delivered_total", kind="face") == 3
            assert sample(text, "event_delivery_seconds_count", kind="face", env="prod") == 1
            assert sample(text, "event_producer_latency_seconds_count", kind="face") == 1
            lag = sample(text, "event_producer_latency_seconds_sum", kind="face")
            assert 2 <= lag < 60
            assert 0 < sample(text, "event_delivery_seconds_sum", kind="face") < 5

            # An offset-less time counts as UTC; an unparsable or future one is skipped.
            naive = (datetime.now(UTC) - timedelta(seconds=3)).replace(tzinfo=None).isoformat()
            future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            for created in (naive, "yesterday", future, None):
                redis.publish(f"luna-sender:{acc_b}", message(created))
                await recv_json(ws_b)
            text = scrape(svc)
            assert sample(text, "event_delivery_seconds_count", kind="face") == 5
            assert sample(text, "event_producer_latency_seconds_count", kind="face") == 2
            assert 5 <= sample(text, "event_producer_latency_seconds_sum", kind="face") < 120
            # A message nobody here listens to is not observed.
            redis.publish(f"luna-sender:{idle}", message(two_s_ago))
            redis.publish(
                "luna-sender-general-events",
                orjson.dumps(
                    {
                        "event": {},
                        "event_type": "x",
                        "account_id": None,
                        "event_create_time": two_s_ago,
                        "event_end_time": two_s_ago,
                    }
                ),
            )
            await asyncio.sleep(0.3)
            text = scrape(svc)
            assert sample(text, "event_delivery_seconds_count") == 5
            assert sample(text, "event_delivery_seconds_count", kind="general") == 0

            await ws_b.close()
            await wait_value(svc, "bus_subscribed_channels", 2)

            assert sample(scrape(svc), "bus_reconnects_total", env="prod") == 0
            private_redis.restart()
            deadline = time.monotonic() + 15
            while sample(scrape(svc), "bus_reconnects_total") < 1:
                assert time.monotonic() < deadline, svc.log()[-2000:]
                await asyncio.sleep(0.1)
            for ws in sockets_a:
                await ws.close()
    finally:
        assert svc.terminate() == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run)")
async def test_promtool_accepts_a_real_scrape(redis_server) -> None:
    svc = Service(
        "--redis-url",
        redis_server.url,
        env={"LUNA_SENDER_METRICS__EXTRA_LABELS": "{env: prod, dc: eu-1}"},
    )
    acc = account()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc})
            redis_server.client().publish(
                f"luna-sender:{acc}", message(datetime.now(UTC).isoformat())
            )
            await recv_json(ws)
            async with http.get(svc.url + "/nope") as resp:
                assert resp.status == 404
            await ws.close()
        text = scrape(svc)
    finally:
        assert svc.terminate() == 0
    assert 'event_delivery_seconds_bucket{dc="eu-1",env="prod",kind="face",le="+Inf"} 1.0' in text
    # What an operator reads beside the number must say what it counts (docs/metrics.md): the
    # counter counts evicted sockets; its help once said "events not delivered".
    assert (
        "# HELP events_dropped_total Subscribers that stopped being fed: one per evicted " in text
    )
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )
    # The check is real: a broken exposition is refused.
    broken = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text + "bad metric{\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert broken.returncode != 0
