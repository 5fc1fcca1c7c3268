"""``--workers 2`` as an operator sees it: one port, one /metrics, a supervisor that keeps N alive.

Everything runs as real processes (``python -m luna_sender``) on a real redis-server. Which worker
served a connection is read from the kernel (psutil: the worker process holding the server end of
the client's TCP connection), so nothing process-specific is added to the wire contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import signal
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
from prometheus_client import Gauge

from luna_sender.runtime.metrics import Metrics

from .helpers import Service, account
from .rawws import RawWS

READY = re.compile(r"luna-sender ready: .* pid=(\d+)")


def start(redis_url: str, *args: str, env: dict[str, str] | None = None) -> Service:
    svc = Service("--workers", "2", "--redis-url", redis_url, *args, env=env)
    wait_for(lambda: len(ready_pids(svc)) >= 2, svc, "two workers ready")
    return svc


def ready_pids(svc: Service) -> list[int]:
    return [int(m) for m in READY.findall(svc.log())]


def wait_for(condition: object, svc: Service, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{svc.log()[-3000:]}"
        time.sleep(0.05)


def worker_pids(svc: Service) -> set[int]:
    """Live serving children of the parent (the spawn start method also runs a resource tracker)."""
    return {
        p.pid
        for p in psutil.Process(svc.proc.pid).children()
        if "spawn_main" in " ".join(p.cmdline())
    }


def owner(svc: Service, client: socket.socket | tuple[str, int]) -> int:
    """The pid of the worker holding the server end of this client connection."""
    sockname = client if isinstance(client, tuple) else client.getsockname()
    for pid in worker_pids(svc):
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in psutil.Process(pid).net_connections("tcp"):
                if conn.raddr and (conn.raddr.ip, conn.raddr.port) == tuple(sockname[:2]):
                    return pid
    raise AssertionError(f"no worker holds the connection from {sockname}")


def get(svc: Service, path: str) -> tuple[int, str, int]:
    """One request on a fresh connection: status, body and the pid of the worker that served it."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, body, owner(svc, conn.sock)  # the connection is kept alive
    finally:
        conn.close()


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


VERSION_OK = 'request_count_total{path="GET:/version",status_code="200"}'
METRICS_OK = 'request_count_total{path="GET:/metrics",status_code="200"}'


def scrape_and_check(svc: Service, versions: int, scrapes: list[str], pids: set[int]) -> str:
    """Scrape once; the totals must be exact whichever worker answers."""
    status, text, pid = get(svc, "/metrics")
    assert status == 200
    pids.add(pid)
    # The request counter is updated before the response is sent: scrape k sees k-1 scrapes.
    assert sample(text, VERSION_OK) == versions, text
    assert sample(text, METRICS_OK) == len(scrapes), text
    scrapes.append(text)
    return text


async def open_sockets(svc: Service, n: int, acc: str) -> list[RawWS]:
    return list(
        await asyncio.gather(
            *(RawWS.connect(svc.port, "/ws", headers={"Luna-Account-Id": acc}) for _ in range(n))
        )
    )


def ws_owner(svc: Service, ws: RawWS) -> int:
    return owner(svc, ws.writer.get_extra_info("sockname"))


@pytest.fixture
def redis_url(private_redis) -> Iterator[str]:
    yield private_redis.url


def test_every_gauge_says_how_workers_combine() -> None:
    """A gauge without a live multiprocess mode would show one series per pid, dead ones too."""
    registry = Metrics({"instance": "a"}).registry
    gauges = [c for c in registry._collector_to_names if isinstance(c, Gauge)]
    assert len(gauges) >= 3
    for gauge in gauges:
        mode = gauge._multiprocess_mode
        assert mode.startswith("live"), f"{gauge._name}: multiprocess_mode={mode}"


async def test_scrapes_describe_the_whole_service(redis_url: str) -> None:
    svc = start(redis_url, env={"LUNA_SENDER_METRICS__EXTRA_LABELS": "{instance: s1}"})
    try:
        # Twenty requests on twenty connections, all kept open so the kernel says who served them.
        conns = []
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
            conn.request("GET", "/version")
            assert conn.getresponse().read()
            conns.append(conn)
        served = {owner(svc, c.sock) for c in conns}
        for conn in conns:
            conn.close()
        assert served == set(ready_pids(svc)), "requests were not spread over both workers"

        # Websockets on both workers: the connection gauge is their sum.
        sockets = await open_sockets(svc, 16, account())
        assert {ws_owner(svc, ws) for ws in sockets} == served

        answered_by: set[int] = set()
        version = VERSION_OK.replace("{", '{instance="s1",')
        for k in range(16):
            status, text, pid = get(svc, "/metrics")
            assert status == 200
            answered_by.add(pid)
            assert sample(text, version) == 20, text
            assert sample(text, METRICS_OK.replace("{", '{instance="s1",')) == k, text
            assert sample(text, 'ws_connections{instance="s1",kind="face"}') == len(sockets), text
            assert sample(text, 'bus_connected{instance="s1"}') == 1, text
            assert 'pid="' not in text  # gauges are combined, not listed per process
        assert answered_by == served, "every scrape went to the same worker"
        for ws in sockets:
            ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


@pytest.mark.slow
async def test_killed_worker_is_logged_and_replaced(redis_url: str) -> None:
    svc = start(redis_url)
    try:
        first = set(ready_pids(svc))
        for _ in range(10):
            assert get(svc, "/version")[0] == 200
        scrapes: list[str] = []
        pids: set[int] = set()
        scrape_and_check(svc, 10, scrapes, pids)
        sockets = await open_sockets(svc, 16, account())
        by_worker = {pid: [ws for ws in sockets if ws_owner(svc, ws) == pid] for pid in first}
        assert all(by_worker.values()), "sockets were not spread over both workers"

        victim = min(first)
        survivor = max(first)
        psutil.Process(victim).send_signal(signal.SIGKILL)
        wait_for(lambda: len(ready_pids(svc)) >= 3, svc, "a replacement worker")
        log = svc.log()
        assert re.search(
            rf"worker \d \(pid {victim}\) was killed by signal SIGKILL; "
            r"restarting it in",
            log,
        ), log
        replacement = ready_pids(svc)[-1]
        assert replacement not in first
        assert svc.proc.poll() is None
        assert worker_pids(svc) == {survivor, replacement}

        # The replacement serves: keep connecting until the kernel hands it a connection.
        served_by_new = 0
        versions = 10
        for _ in range(200):
            status, _body, pid = get(svc, "/version")
            assert status == 200
            versions += 1
            if pid == replacement:
                served_by_new += 1
                if served_by_new == 3:
                    break
        assert served_by_new == 3, "the replacement worker never served a request"

        # The killed worker's counts stay in the totals; its sockets leave the gauge.
        pids.clear()
        for _ in range(10):
            text = scrape_and_check(svc, versions, scrapes, pids)
            assert sample(text, 'ws_connections{kind="face"}') == len(by_worker[survivor]), text
        assert pids == {survivor, replacement}
        for ws in sockets:
            ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


async def _close_code(ws: RawWS) -> int | None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            frame = await asyncio.wait_for(ws.recv_data(), 20)
            if frame.opcode == 0x8:
                return frame.close_code
    return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_sigterm_closes_sockets_of_every_worker_with_1001(
    redis_url: str, signum: int
) -> None:
    svc = start(redis_url)
    try:
        sockets = await open_sockets(svc, 40, account())
        sockets += [await RawWS.connect(svc.port, "/ws/general") for _ in range(10)]
        assert {ws_owner(svc, ws) for ws in sockets} == set(ready_pids(svc))
        waits = [asyncio.create_task(_close_code(ws)) for ws in sockets]
        svc.proc.send_signal(signum)
        codes = await asyncio.gather(*waits)
        assert codes == [1001] * len(sockets)
        assert await asyncio.to_thread(svc.proc.wait, 20) == 0, svc.log()[-3000:]
        assert f"{signal.Signals(signum).name} received: stopping 2 workers" in svc.log()
        for ws in sockets:
            ws.close()
    finally:
        svc.close()


def test_sigterm_during_restart_backoff_starts_no_worker(redis_url: str) -> None:
    svc = start(redis_url)
    try:
        workers = worker_pids(svc)
        psutil.Process(min(workers)).send_signal(signal.SIGKILL)
        svc.proc.send_signal(signal.SIGTERM)  # well inside the 0.5 s restart delay
        assert svc.proc.wait(30) == 0, svc.log()
        assert svc.log().count("started worker") == 2, svc.log()
        assert not any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in workers
        )
    finally:
        svc.close()


@pytest.mark.slow
def test_workers_that_cannot_start_make_the_parent_fail(redis_url: str) -> None:
    """A port held by another program: every worker dies at once; the parent gives up, exit 1."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    svc = Service("--workers", "2", "--redis-url", redis_url, port=port, wait=False)
    try:
        assert svc.proc.wait(90) == 1, svc.log()
        log = svc.log()
        assert "exited with status 1; restarting it in 0.5 s" in log
        assert "exited with status 1; restarting it in 1.0 s" in log
        assert re.search(r"workers died 6 times within 60 s; giving up", log), log
        # Each dying worker says why in one line, no traceback (and never claims to be ready).
        assert "Traceback" not in log and "luna-sender ready" not in log, log
        assert log.count(f"cannot listen on 127.0.0.1:{port}: Address already in use") == 6
    finally:
        blocker.close()
        svc.close()


async def test_max_connections_applies_per_worker(redis_url: str) -> None:
    """ws.max_connections=2 with 2 workers: the service holds 4 sockets, 2 on each worker."""
    svc = start(redis_url, env={"LUNA_SENDER_WS__MAX_CONNECTIONS": "2"})
    try:
        acc = account()
        accepted: list[RawWS] = []
        refused = 0
        for _ in range(200):
            try:
                accepted.append(
                    await RawWS.connect(svc.port, "/ws", headers={"Luna-Account-Id": acc})
                )
            except ConnectionError as exc:
                assert str(exc).startswith("HTTP/1.1 503"), exc
                refused += 1
            if len(accepted) == 4:
                break
        assert len(accepted) == 4
        owners = [ws_owner(svc, ws) for ws in accepted]
        assert sorted(owners.count(pid) for pid in set(owners)) == [2, 2]
        for _ in range(10):  # both workers are full now
            with pytest.raises(ConnectionError, match="503"):
                await RawWS.connect(svc.port, "/ws", headers={"Luna-Account-Id": acc})
        for ws in accepted:
            ws.close()
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


@pytest.mark.slow
def test_bus_connected_is_current_for_every_worker(private_redis) -> None:
    """``livemin``: 0 while any worker's subscription is down; back to 1 without a scrape of each."""
    svc = start(private_redis.url)
    gauge = "bus_connected"
    try:
        assert sample(get(svc, "/metrics")[1], gauge) == 1
        private_redis.kill()
        down_seen: set[int] = set()
        deadline = time.monotonic() + 30
        while down_seen != set(ready_pids(svc)):  # each worker has answered a scrape with 0
            assert time.monotonic() < deadline, svc.log()[-3000:]
            _status, text, pid = get(svc, "/metrics")
            if sample(text, gauge) == 0:
                down_seen.add(pid)
        private_redis.start()
        healthy: set[int] = set()
        while healthy != set(ready_pids(svc)):  # both workers resubscribed
            assert time.monotonic() < deadline + 30, svc.log()[-3000:]
            status, _text, pid = get(svc, "/healthcheck")
            if status == 200:
                healthy.add(pid)
        time.sleep(3)  # each worker refreshes its own value every second
        for _ in range(6):
            assert sample(get(svc, "/metrics")[1], gauge) == 1
    finally:
        assert svc.terminate() == 0, svc.log()[-3000:]


async def test_workers_stop_when_the_supervisor_is_killed(redis_url: str) -> None:
    """SIGKILL to the parent must not leave unsupervised workers holding the port."""
    svc = start(redis_url)
    workers = [psutil.Process(pid) for pid in worker_pids(svc)]
    try:
        sockets = await open_sockets(svc, 16, account())
        assert {ws_owner(svc, ws) for ws in sockets} == {w.pid for w in workers}
        waits = [asyncio.create_task(_close_code(ws)) for ws in sockets]
        svc.proc.kill()
        codes = await asyncio.gather(*waits, return_exceptions=True)
        assert codes == [1001] * len(sockets), svc.log()[-3000:]
        gone, alive = await asyncio.to_thread(psutil.wait_procs, workers, 20)
        assert not alive and len(gone) == 2, svc.log()[-3000:]
        assert svc.log().count("is gone: stopping this worker") == 2, svc.log()[-3000:]
        for ws in sockets:
            ws.close()
    finally:
        svc.close()
        for worker in workers:  # no orphan is left behind, even when the test failed
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
