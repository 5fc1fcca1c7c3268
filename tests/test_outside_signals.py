"""Process life as an outside tester attacked it: SIGHUP, a busy port, repeated and early signals.

Every test runs ``luna-sender`` as a real process (one, or a supervisor with workers on a real
redis-server) and judges it by what an operator sees: exit status, log lines, close codes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from .helpers import RedisServer, Service
from .rawws import RawWS
from .test_workers import _close_code, start, wait_for


def wait_log(svc: Service, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in svc.log():
        assert time.monotonic() < deadline, (text, svc.log()[-3000:])
        time.sleep(0.05)


async def _sockets(svc: Service, n: int) -> tuple[aiohttp.ClientSession, list]:
    http = aiohttp.ClientSession()
    sockets = [await http.ws_connect(f"{svc.ws_url}/ws/general?sources=cam-{i}") for i in range(n)]
    return http, sockets


async def _codes(sockets: list) -> list[object]:
    codes: list[object] = []
    for ws in sockets:
        msg = await ws.receive(timeout=20)
        codes.append(msg.data if msg.type == aiohttp.WSMsgType.CLOSE else msg.type)
        await ws.close()
    return codes


async def test_sighup_stops_one_process_gracefully() -> None:
    svc = Service("--log-format", "json")
    try:
        http, sockets = await _sockets(svc, 3)
        async with http:
            wait_log(svc, "cam-2")
            svc.proc.send_signal(signal.SIGHUP)
            assert await _codes(sockets) == [1001] * 3
        assert await asyncio.to_thread(svc.proc.wait, 20) == 0
    finally:
        svc.close()
    records = [json.loads(line) for line in svc.log().splitlines()]
    assert any(r["message"] == "SIGHUP received: stopping" for r in records), svc.log()
    assert any(r["message"].startswith("shutdown finished") for r in records)


async def test_sighup_stops_workers_gracefully_and_removes_the_metrics_folder(
    private_redis,
) -> None:
    tmp = tempfile.mkdtemp(prefix="luna-sighup-")
    svc = start(private_redis.url, env={"TMPDIR": tmp})
    try:
        assert next(p.name for p in Path(tmp).iterdir()).startswith("luna-sender-metrics-")
        sockets = [await RawWS.connect(svc.port, "/ws/general") for _ in range(6)]
        waits = [asyncio.create_task(_close_code(ws)) for ws in sockets]
        svc.proc.send_signal(signal.SIGHUP)
        assert await asyncio.gather(*waits) == [1001] * 6
        assert await asyncio.to_thread(svc.proc.wait, 30) == 0, svc.log()[-3000:]
        for ws in sockets:
            ws.close()
    finally:
        svc.close()
    assert "SIGHUP received: stopping 2 workers" in svc.log()
    assert svc.log().count("SIGHUP received: stopping\n") == 2, svc.log()  # each worker
    assert list(Path(tmp).iterdir()) == []
    os.rmdir(tmp)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_busy_port_is_one_error_line_and_no_ready(fmt: str) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        svc = Service("--log-format", fmt, port=blocker.getsockname()[1], wait=False)
        assert svc.proc.wait(30) == 1
        svc.close()
    finally:
        blocker.close()
    log = svc.log()
    assert "Traceback" not in log and "luna-sender ready" not in log, log
    lines = log.splitlines()
    failed = [line for line in lines if "cannot listen on 127.0.0.1" in line]
    assert len(failed) == 1 and "ERROR" in failed[0], log
    assert "in use" in failed[0]
    if fmt == "json":
        assert json.loads(failed[0])["level"] == "ERROR"
        assert all(json.loads(line) for line in lines)


async def test_second_sigterm_during_shutdown_is_logged_and_ignored() -> None:
    svc = Service()
    try:
        # Clients that never answer the Close keep the stop going for ws.shutdown_timeout.
        mute = [await RawWS.connect(svc.port, "/ws/general") for _ in range(3)]
        http, sockets = await _sockets(svc, 5)
        async with http:
            wait_log(svc, "cam-4")
            svc.proc.send_signal(signal.SIGTERM)
            wait_log(svc, "shutdown started")
            svc.proc.send_signal(signal.SIGTERM)
            svc.proc.send_signal(signal.SIGINT)
            assert await _codes(sockets) == [1001] * 5
        assert await asyncio.to_thread(svc.proc.wait, 20) == 0
        for ws in mute:
            ws.close()
    finally:
        svc.close()
    log = svc.log()
    assert "SIGTERM received again: already stopping" in log, log
    assert "SIGINT received again: already stopping" in log, log
    assert "shutdown finished" in log and "Traceback" not in log


def test_a_stop_that_outruns_its_deadline_exits_1_with_an_error_line() -> None:
    """A plugin's stop() that swallows its cancellation would keep the process alive until
    someone kills it; the watchdog ends it at ws.shutdown_timeout + 10 s, and says so."""
    svc = Service(
        env={
            "LUNA_SENDER_PLUGINS": '["tests.plugin_samples:Stubborn"]',
            "LUNA_SENDER_WS__SHUTDOWN_TIMEOUT": "0.5",
        }
    )
    try:
        wait_log(svc, "ready")
        started = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.proc.wait(30)
        took = time.monotonic() - started
    finally:
        svc.close()
    log = svc.log()
    assert code == 1, log
    assert 9.0 < took < 14, (took, log)  # the deadline is 0.5 + 1 + 2 + 5 + 1 s
    assert "stop() did not return within the 5 s all plugins share" in log, log
    assert "shutdown did not finish within 10 s: exiting now" in log, log


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_during_start_up_is_a_quiet_logged_exit(signum: int) -> None:
    svc = Service("--log-format", "json", wait=False)
    try:
        # As soon as the process handles SIGTERM at all — while it is still importing.
        wait_for(
            lambda: svc.proc.poll() is not None or _catches_sigterm(svc.proc.pid),
            svc,
            "a SIGTERM handler",
            timeout=30,
        )
        svc.proc.send_signal(signum)
        assert svc.proc.wait(30) == 0, svc.log()
    finally:
        svc.close()
    log = svc.log()
    assert "Traceback" not in log and "luna-sender ready" not in log, log
    name = signal.Signals(signum).name
    assert [json.loads(line)["message"] for line in log.splitlines()] == [
        f"{name} received during start-up: exiting"
    ]


def test_a_repeated_stop_signal_after_a_quick_stop_still_exits_0(redis_server: RedisServer) -> None:
    """Workers stopped just after their start are gone within tens of milliseconds, and the
    parent was already finalizing when a second signal 50 ms after the first came: CPython had
    put the default handler back, and the parent died of it with exit -15 (an outside pass: 5
    of 5; 2 of 3 rounds here before the fix)."""
    for _ in range(4):
        svc = Service("--redis-url", redis_server.url, "--workers", "2", wait=False)
        try:
            wait_log(svc, "started worker 1")
            svc.proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
            assert svc.proc.wait(30) == 0, svc.log()
        finally:
            svc.close()


def test_sigint_while_the_workers_still_import_is_a_quiet_exit_0(redis_server: RedisServer) -> None:
    """The supervisor forwarded SIGINT as it came, and a worker still importing (no handler
    yet) died of a KeyboardInterrupt traceback with status 1: the stop exited 1 (an outside
    pass: 4 of 8). It is forwarded as SIGTERM, which such a worker ends on quietly."""
    for _ in range(3):
        svc = Service("--redis-url", redis_server.url, "--workers", "2", wait=False)
        try:
            wait_log(svc, "started worker 1")
            svc.proc.send_signal(signal.SIGINT)
            assert svc.proc.wait(30) == 0, svc.log()
        finally:
            svc.close()
        log = svc.log()
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


def test_ctrl_c_to_the_whole_group_while_the_workers_still_import_is_quiet(
    redis_server: RedisServer,
) -> None:
    """Ctrl-C in a terminal signals the whole process group, so a worker still importing got
    SIGINT directly, before any handler of ours, and printed a KeyboardInterrupt traceback. A
    worker now starts with SIGINT blocked and takes it once its stop handlers are in place."""
    for _ in range(4):
        svc = Service(
            "--redis-url", redis_server.url, "--workers", "2", wait=False, preexec_fn=os.setpgrp
        )
        try:
            wait_log(svc, "started worker 1")
            os.killpg(svc.proc.pid, signal.SIGINT)
            assert svc.proc.wait(30) == 0, svc.log()
        finally:
            svc.close()
        log = svc.log()
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


def test_one_signal_late_in_start_up_is_not_reported_twice() -> None:
    """A SIGTERM that came while the port was being bound was recorded, and the event loop
    then saw it again through its wake-up descriptor: "SIGTERM received again: already
    stopping" for a signal sent once (an outside pass: 7 of 8 stops at 0.3-0.4 s). Stops are
    sent across the start-up window; none may log a second signal."""
    doubled = []
    for delay in (0.25, 0.3, 0.33, 0.36, 0.4, 0.45, 0.5):
        svc = Service(wait=False)
        try:
            time.sleep(delay)
            svc.proc.send_signal(signal.SIGTERM)
            assert svc.proc.wait(30) == 0, svc.log()
        finally:
            svc.close()
        if "received again" in svc.log():
            doubled.append(delay)
    assert not doubled, f"one SIGTERM reported twice after {doubled} s"
