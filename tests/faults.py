"""Fault kit: what a test can do to a private redis-server mid-flight, and how it looks from outside.

Every fault acts on a real process (:class:`tests.helpers.RedisServer`) the way an operator or an
outage would: SIGSTOP/SIGCONT (a frozen Redis: TCP still accepts, nothing answers), CLIENT PAUSE,
CLIENT KILL of the pub/sub connection, kill and restart. Observation helpers read only what a
user can see: HTTP status and body, /metrics text, the service's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import psutil

from .helpers import RedisServer


def freeze(server: RedisServer) -> None:
    assert server.proc is not None, "redis-server is not running"
    server.proc.send_signal(signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    assert server.proc is not None, "redis-server is not running"
    server.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """Redis stopped for the block's duration; always thawed, even when the block fails."""
    freeze(server)
    try:
        yield
    finally:
        thaw(server)


def thaw_later(server: RedisServer, seconds: float) -> threading.Timer:
    """Thaw from another thread after ``seconds``: holds even while the test's loop is busy."""
    timer = threading.Timer(seconds, thaw, (server,))
    timer.daemon = True
    timer.start()
    return timer


@contextlib.contextmanager
def process_stopped(*pids: int) -> Iterator[None]:
    """Processes stood still (SIGSTOP) for the block, as a paused VM, swap or a starved host
    stops them; the block starts once the kernel reports them stopped, and they always go on."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        for pid in pids:
            while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
                time.sleep(0.001)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def client_pause(server: RedisServer, millis: int, mode: str = "ALL") -> None:
    server.client().execute_command("CLIENT", "PAUSE", millis, mode)


def kill_pubsub(server: RedisServer) -> int:
    """Close every pub/sub connection from the server side; returns how many."""
    return int(server.client().execute_command("CLIENT KILL TYPE pubsub"))


def kill_pubsub_of(server: RedisServer, pid: int) -> None:
    """Close, from the server side, the one pub/sub connection of process ``pid`` (a service
    whose other connections, and whose process, live on)."""
    ports = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")}
    admin = server.client()
    ids = [
        c["id"]
        for c in admin.client_list(_type="pubsub")
        if int(c["addr"].rsplit(":", 1)[1]) in ports
    ]
    assert len(ids) == 1, ids
    admin.client_kill_filter(_id=ids[0])


def restart(server: RedisServer) -> None:
    server.restart()


def pubsub_channels(server: RedisServer, pattern: str = "*") -> set[str]:
    return {c.decode() for c in server.client().pubsub_channels(pattern)}


# --- what a user sees ---------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def health(base_url: str) -> tuple[int, Any]:
    status, body = http_get(base_url + "/healthcheck")
    return status, orjson.loads(body)


async def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll a (sync) predicate until true or ``timeout``; returns the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value or loop.time() > deadline:
            return bool(value)
        await asyncio.sleep(interval)
