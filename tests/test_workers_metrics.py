"""What the event counters count with ``--workers 2`` (docs/metrics.md, "Event counts").

Each worker is its own bus subscriber, so receipt counters are per worker and sum to more than
the producer's messages; publish and per-socket delivery counters do not. Real processes, a real
redis-server, raw websockets.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .helpers import Service, account
from .rawws import RawWS
from .test_workers import get, ready_pids, sample, start, ws_owner

N = 7


@pytest.fixture
def redis_url(private_redis) -> Iterator[str]:
    yield private_redis.url


def publish(port: int, path: str, body: dict[str, object], acc: str | None = None) -> None:
    headers = {"Content-Type": "application/json"}
    if acc is not None:
        headers["Luna-Account-Id"] = acc
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


async def sockets_on_both_workers(
    svc: Service, path: str, headers: dict[str, str], pids: set[int]
) -> list[RawWS]:
    """Open sockets until the kernel has handed at least one to every worker."""
    sockets: list[RawWS] = []
    while {ws_owner(svc, ws) for ws in sockets} != pids:
        assert len(sockets) < 64, "the kernel never spread the sockets over both workers"
        sockets.append(await RawWS.connect(svc.port, path, headers=headers))
    return sockets


async def test_event_counters_count_receipts_per_worker(redis_url: str) -> None:
    svc = start(redis_url)
    try:
        pids = set(ready_pids(svc))
        watched, unwatched = account(), account()
        general = await sockets_on_both_workers(svc, "/ws/general?event_type=mc", {}, pids)
        face = await sockets_on_both_workers(svc, "/ws", {"Luna-Account-Id": watched}, pids)
        await asyncio.sleep(0.5)  # both workers' face subscriptions confirmed by Redis
        for i in range(N):
            publish(svc.port, "/publish/general", {"event": {"i": i}, "event_type": "mc"})
            for acc in (watched, unwatched):
                publish(
                    svc.port,
                    "/publish",
                    {
                        "events": [{"event_id": f"m{i}"}],
                        "handler_id": "h",
                        "event_create_time": "t",
                        "event_end_time": "t",
                    },
                    acc,
                )
        for ws in general + face:
            for _ in range(N):
                frame = await asyncio.wait_for(ws.recv_data(), 20)
                assert frame.opcode == 0x1
        expected = {
            'events_received_total{kind="general"}': 2 * N,
            'events_received_total{kind="face"}': 2 * N,  # the unwatched account: no worker
            'event_delivery_seconds_count{kind="general"}': 2 * N,
            'event_delivery_seconds_count{kind="face"}': 2 * N,
            'events_published_total{kind="general"}': N,
            'events_published_total{kind="face"}': 2 * N,
            'events_delivered_total{kind="general"}': len(general) * N,
            'events_delivered_total{kind="face"}': len(face) * N,
        }
        deadline = time.monotonic() + 20
        while True:  # the last observation may land just after the client's read
            text = get(svc, "/metrics")[1]
            got = {series: sample(text, series) for series in expected}
            if got == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert got == expected
        for ws in general + face:
            ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


def test_a_killed_supervisors_metrics_folder_is_swept_by_the_next(redis_url: str) -> None:
    """A supervisor killed outright cannot remove its folder of memory-mapped files; the next
    one started with the same TMPDIR does, and leaves every folder it cannot prove dead."""
    tmp = Path(tempfile.mkdtemp(prefix="luna-sweep-"))
    old = time.time() - 3600
    # A live supervisor's folder (its lock held here), and one without a lock file (another
    # program's, or a version before the lock): both older than a minute, both must stay.
    live = tmp / "luna-sender-metrics-live"
    live.mkdir()
    holder = os.open(live / ".supervisor.lock", os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    unknown = tmp / "luna-sender-metrics-unknown"
    unknown.mkdir()
    for folder in (live, unknown):
        os.utime(folder, (old, old))
    first = start(redis_url, env={"TMPDIR": str(tmp)})
    try:
        workers = [psutil.Process(pid) for pid in ready_pids(first)]
        (killed,) = set(tmp.iterdir()) - {live, unknown}
        assert any(p.suffix == ".db" for p in killed.iterdir())  # the workers' files
        first.proc.kill()  # no chance to clean up
        psutil.wait_procs(workers, 20)  # they notice the parent is gone and stop
        assert killed.exists()
        # A minute unchanged: younger folders are left whatever their lock says.
        os.utime(killed, (old, old))
        second = start(redis_url, env={"TMPDIR": str(tmp)})
        try:
            (fresh,) = set(tmp.iterdir()) - {live, unknown}
            assert fresh != killed and not killed.exists()
            assert (
                f"removed 1 metrics folder(s) left by supervisors that were killed: {killed}"
                in (second.log())
            )
            # The live one was older than a minute but locked: it is still whole.
            assert (live / ".supervisor.lock").exists() and unknown.exists()
        finally:
            assert second.terminate() == 0, second.log()[-3000:]
        assert set(tmp.iterdir()) == {live, unknown}  # a clean stop removes its own at once
    finally:
        first.close()
        os.close(holder)
        shutil.rmtree(tmp)
