"""The GC policy: connection state leaves full collections, and churn gives the memory back.

Observed the way an operator would: through /metrics of a real service process holding real
websockets (the policy changes process-wide collector state, so it is not run in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from luna_sender.config.settings import Settings

from .helpers import Service, account
from .rawws import RawWS

SOCKETS = 300
PUBLISH_BODY = {
    "events": [{"k": 1}],
    "handler_id": "h",
    "event_create_time": "2026-01-01T00:00:00Z",
    "event_end_time": "2026-01-01T00:00:00Z",
}


@contextlib.asynccontextmanager
async def _service(**gc: str) -> AsyncIterator[tuple[Service, aiohttp.ClientSession]]:
    """A service process with ``gc.*`` settings, and a session to read its /metrics."""
    svc = Service(env={f"LUNA_SENDER_GC__{k.upper()}": v for k, v in gc.items()})
    try:
        async with aiohttp.ClientSession() as session:
            yield svc, session
    finally:
        assert svc.terminate() == 0


async def _metrics(session: aiohttp.ClientSession, svc: Service) -> dict[str, float]:
    async with session.get(svc.url + "/metrics") as resp:
        text = await resp.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(gc_[a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


async def _wait_for(
    session: aiohttp.ClientSession, svc: Service, what: str, ok: object, timeout: float = 10.0
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        values = await _metrics(session, svc)
        if ok(values):  # type: ignore[operator]
            return values
        if time.monotonic() > deadline:
            shown = {k: v for k, v in values.items() if "bucket" not in k and "created" not in k}
            raise AssertionError(f"{what}: metrics stayed {shown}")
        await asyncio.sleep(0.1)


async def test_connections_are_frozen_then_released_after_churn() -> None:
    acc = account()
    async with _service(freeze_interval="0.2", min_churn="100") as (svc, session):
        base = await _wait_for(
            session, svc, "start-up state frozen", lambda m: m.get("gc_frozen_objects", 0) > 0
        )
        frozen0 = base["gc_frozen_objects"]
        sockets = [
            await RawWS.connect(svc.port, "/ws", {"Luna-Account-Id": acc}) for _ in range(SOCKETS)
        ]
        # Each websocket's protocol, connection and timers (about 14 objects) are frozen.
        loaded = await _wait_for(
            session,
            svc,
            "connection state frozen",
            lambda m: m["gc_frozen_objects"] >= frozen0 + 8 * SOCKETS,
        )
        assert loaded["gc_full_passes_total"] == 0

        # Frozen state does not change delivery.
        async with session.post(
            svc.url + "/publish", headers={"Luna-Account-Id": acc}, json=PUBLISH_BODY
        ) as resp:
            assert resp.status == 204
        for ws in (sockets[0], sockets[-1]):
            frame = await asyncio.wait_for(ws.recv_data(), 5)
            assert orjson.loads(frame.payload)["event"] == {"k": 1}

        for ws in sockets:
            ws.close()
        # 300 closed >= max(min_churn 100, 0.5 x 0 open): one planned full pass, after which
        # the closed sockets' objects are no longer held.
        after = await _wait_for(
            session,
            svc,
            "full pass after churn",
            lambda m: (
                m["gc_full_passes_total"] >= 1 and m["gc_frozen_objects"] < frozen0 + 10 * SOCKETS
            ),
        )
        # Pauses of every generation are measured for operators.
        assert after['gc_pause_seconds_count{generation="2"}'] >= 1
        assert after['gc_pause_seconds_count{generation="0"}'] >= 1


async def test_churn_below_the_threshold_does_not_trigger_a_full_pass() -> None:
    acc = account()
    async with _service(freeze_interval="0.1", min_churn="1000") as (svc, session):
        sockets = [
            await RawWS.connect(svc.port, "/ws", {"Luna-Account-Id": acc}) for _ in range(50)
        ]
        await _wait_for(session, svc, "frozen", lambda m: m["gc_frozen_objects"] > 0)
        for ws in sockets:
            ws.close()
        await asyncio.sleep(1.0)  # ten policy ticks
        assert (await _metrics(session, svc))["gc_full_passes_total"] == 0


async def test_freeze_interval_zero_keeps_cpython_defaults() -> None:
    async with _service(freeze_interval="0") as (svc, session):
        sockets = [await RawWS.connect(svc.port, "/ws/general") for _ in range(20)]
        await asyncio.sleep(0.5)
        values = await _metrics(session, svc)
        assert values["gc_frozen_objects"] == 0
        for ws in sockets:
            ws.close()


@pytest.mark.parametrize(
    "field,value", [("freeze_interval", -1), ("churn_ratio", 0), ("min_churn", 0)]
)
def test_gc_settings_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(gc={field: value})


GC_IN_METRIC_LOCK = """
import asyncio, gc, os
from luna_sender.config.settings import GcSettings
from luna_sender.runtime.gcpolicy import GcPolicy
from luna_sender.runtime.metrics import Metrics

async def main() -> None:
    metrics = Metrics(multiprocess_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    policy = GcPolicy(GcSettings(freeze_interval=0), metrics, live=lambda: 0, closed=lambda: 0)
    policy.start()
    gc.set_threshold(1, 1, 1)  # a collection at nearly every allocation
    for i in range(300):
        metrics.observe_request(f"GET:/r{i}", 200, 0.001, None)  # new children: mmap init
    gc.set_threshold(700, 10, 10)
    await policy.stop()
    text = metrics.render().decode()
    assert 'gc_pause_seconds_count{generation="0"}' in text, text

asyncio.run(main())
"""


def test_gc_pauses_never_observed_inside_a_metric_lock(tmp_path) -> None:
    """Found by the full suite: a --workers worker froze for good. With prometheus-client's
    multiprocess values one lock guards every metric; a collection starting inside a metric's
    initialisation ran the pause callback, which observed the pause histogram and waited on the
    lock its own thread held. Pauses are now recorded by the callback and observed later."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", GC_IN_METRIC_LOCK],
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
