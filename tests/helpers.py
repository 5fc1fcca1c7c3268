"""Shared test machinery: a private redis-server, the service as a real subprocess, events."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} did not open in {timeout}s")


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``luna-sender ARGS`` in a clean environment (only ``env`` besides PATH), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "luna_sender.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=REPO,
        timeout=30,
        preexec_fn=preexec_fn,
    )


class RedisServer:
    """A private redis-server on a free port that a test may stop, kill and restart."""

    def __init__(
        self, port: int | None = None, extra: list[str] | None = None, transport: str = "tcp"
    ) -> None:
        """``transport``: "tcp", "unix" (a socket file only) or "tls" (TLS only, self-signed)."""
        self.port = port or free_port()
        self.extra = extra or []
        self.transport = transport
        self.dir = tempfile.mkdtemp(prefix="luna-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        self.binary = binary

    @property
    def url(self) -> str:
        if self.transport == "unix":
            return f"unix://{self.dir}/redis.sock"
        if self.transport == "tls":
            return f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=none"
        return f"redis://127.0.0.1:{self.port}/0"

    def _listen(self) -> list[str]:
        if self.transport == "unix":
            sock = f"{self.dir}/redis.sock"
            return ["--port", "0", "--unixsocket", sock, "--unixsocketperm", "700"]
        if self.transport == "tls":
            key, cert = f"{self.dir}/key.pem", f"{self.dir}/cert.pem"
            if not os.path.exists(cert):
                openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
                openssl += ["-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert]
                subprocess.run(openssl, check=True, capture_output=True)
            tls = ["--tls-port", str(self.port), "--tls-auth-clients", "no"]
            tls += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
            return ["--port", "0", "--bind", "127.0.0.1", *tls]
        return ["--port", str(self.port), "--bind", "127.0.0.1"]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                *self._listen(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--protected-mode",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise TimeoutError("redis-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        # Tests drop their admin clients; closing them with the server keeps sockets off the GC.
        self.__dict__.setdefault("_clients", []).append(client)
        return client

    def close(self) -> None:
        for client in self.__dict__.pop("_clients", []):
            client.close()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Service:
    """``luna-sender`` running as a real subprocess on a free port."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        port: int | None = None,
        preexec_fn: Any = None,
    ) -> None:
        self.port = port or free_port()
        # mkstemp's descriptor is the log itself: opening the path again would leak that one.
        fd, path = tempfile.mkstemp(prefix="luna-sender-", suffix=".log")
        self.log_path = Path(path)
        self._log = os.fdopen(fd, "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_SENDER_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "luna_sender.cli",
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(REPO),
            preexec_fn=preexec_fn,  # e.g. a low RLIMIT_NOFILE for the open-file tests
        )
        if wait:
            try:
                wait_port(self.port, 15)
            except BaseException:
                self.terminate()  # a service that never came up must not leave its log open
                raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def close(self) -> None:
        self.terminate()


@contextlib.contextmanager
def running_service(*args: str, env: dict[str, str] | None = None) -> Iterator[Service]:
    svc = Service(*args, env=env)
    try:
        yield svc
    finally:
        svc.close()


def account() -> str:
    return str(uuid.uuid4())


def face_event(**fields: Any) -> dict[str, Any]:
    """A small face event shaped like the spec's example; ``fields`` override top-level keys."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "url": "/6/events/x",
        "source": "cam-1",
        "stream_id": None,
        "tags": [],
        "user_data": "",
        "meta": {},
    }
    event.update(fields)
    return event


def face_message(
    events: list[dict[str, Any]],
    handler_id: str | None = None,
    request_id: str = "1536751345,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
) -> bytes:
    """The luna-handlers ``msg_to_luna_sender`` format."""
    return orjson.dumps(
        {
            "handler_id": handler_id or str(uuid.uuid4()),
            "Luna-Request-Id": request_id,
            "events": events,
            "event_create_time": "2026-11-23T10:00:00.000000+00:00",
            "event_end_time": "2026-11-23T10:00:01.000000+00:00",
        }
    )


async def publish_face(session: Any, base_url: str, acc: str, events: list[dict[str, Any]]) -> None:
    """POST /publish of ``events`` for account ``acc``, as a producer would, expecting the 204."""
    body = {
        "events": events,
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with session.post(
        base_url + "/publish", json=body, headers={"Luna-Account-Id": acc}
    ) as resp:
        assert resp.status == 204, await resp.text()


async def recv_json(ws: Any, timeout: float = 5.0) -> Any:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    if msg.type.name != "TEXT":
        raise AssertionError(f"expected a text frame, got {msg.type.name} {msg.data!r}")
    return orjson.loads(msg.data)


async def assert_silent(ws: Any, timeout: float = 0.3) -> None:
    """No frame arrives within ``timeout`` (used after a barrier event proves delivery order)."""
    with contextlib.suppress(asyncio.TimeoutError):
        msg = await asyncio.wait_for(ws.receive(), timeout)
        raise AssertionError(f"unexpected frame: {msg.type.name} {str(msg.data)[:200]}")


def strict_json(frame: str | bytes) -> Any:
    """The stdlib parser as strict parsers are: NaN/Infinity refused, duplicate keys refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate key in {keys}"
        return dict(pairs)

    return json.loads(frame, parse_constant=refuse, object_pairs_hook=no_duplicates)


def metric_sum(text: str, name: str) -> float:
    """The sum of every series of ``name`` in a Prometheus scrape, 0 when absent; a ``name``
    with its whole label set (``ws_closed_total{reason="slow_consumer"}``) picks one series."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def scrape(base_url: str, timeout: float = 5.0) -> str:
    """The /metrics text of a running service (a blocking read: tests poll it between steps)."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=timeout) as resp:
        return resp.read().decode()


def metric(base_url: str, name: str) -> float:
    """:func:`metric_sum` of a fresh scrape of the service at ``base_url``."""
    return metric_sum(scrape(base_url), name)


async def assert_poison_skipped(
    app: Any,
    redis_server: RedisServer,
    kind: str,
    poison: list[bytes],
    good: Any,
    caplog: Any,
    params: dict[str, str] | None = None,
) -> None:
    """Each poison message, published straight to Redis, is skipped: the good message behind it
    (``good(i)``, an event carrying ``"ok": i``) arrives at a socket with filter ``params``, the
    poison counter grows by one and one WARNING without a traceback is logged — never the poison
    itself."""
    acc = account()
    channel = f"luna-sender:{acc}" if kind == "face" else "luna-sender-general-events"
    async with app.session.get(app.url("/metrics")) as resp:
        before = metric_sum(await resp.text(), "bus_poison_messages_total")
    admin = redis_server.client()
    path = "/ws" if kind == "face" else "/ws/general"
    async with app.ws(path, account=acc, params=params) as ws:
        for i, body in enumerate(poison):
            admin.publish(channel, body)
            admin.publish(channel, good(i))
            msg = await ws.receive(timeout=10)
            assert strict_json(msg.data)["event"]["ok"] == i  # the poison was skipped, not sent
    async with app.session.get(app.url("/metrics")) as resp:
        after = metric_sum(await resp.text(), "bus_poison_messages_total")
    assert after - before == len(poison)
    warnings = [r for r in caplog.records if "skipped undecodable" in r.getMessage()]
    assert len(warnings) == len(poison)
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in warnings)


async def http_receiver(handler: Callable[[web.Request], Awaitable[web.Response]]) -> TestServer:
    """A loopback HTTP server answering every POST with ``handler``: the outside end a plugin
    writes to (webhook, InfluxDB). The caller closes it."""
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


class FakeInflux:
    """An InfluxDB v2 write endpoint keeping the line protocol it is sent, and the path, query
    and Authorization header of the last write: the request-monitoring plugin's peer."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: dict[str, Any] = {}
        self._server: TestServer | None = None

    async def __aenter__(self) -> FakeInflux:
        self._server = await http_receiver(self._write)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.close()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.port is not None
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _write(self, request: web.Request) -> web.Response:
        self.seen.update(
            path=request.path, query=dict(request.query), auth=request.headers.get("Authorization")
        )
        self.lines.extend((await request.text()).splitlines())
        return web.Response(status=204)

    async def wait_line(self, prefix: str, timeout: float = 5.0) -> None:
        """Until a line starting with ``prefix`` has arrived, or ``timeout``: the plugin flushes
        on its own period, and the caller's assertions say what was missing."""
        deadline = time.monotonic() + timeout
        while not any(x.startswith(prefix) for x in self.lines) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


# The headers of a websocket upgrade sent as a plain GET, to read a refused handshake's body
# (aiohttp's ws_connect raises on a non-101 and drops it).
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


# 1,000 sources of ~110 characters: a ~110 KB query at the list limit, the costliest handshake
LARGE_SOURCES = ",".join(f"camera-{i:04d}-" + "x" * 100 for i in range(1000))


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The test process's own collector off for a timed block, its garbage collected first.
    After the in-process fuzz tests this process held 1.6 M objects, and a full collection in
    the middle of a burst stood the client still for 2.3 s: the service then rightly closed
    1,300 connections that had sent no head for over its 1 s deadline (a red CI run)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def upgrade_head(query: str, acc: str, path: str = "/ws") -> bytes:
    """A raw websocket upgrade request, as the bursts of the outside passes sent it."""
    headers = "".join(f"{k}: {v}\r\n" for k, v in {**UPGRADE, "Luna-Account-Id": acc}.items())
    return f"GET {path}?{query} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()


async def raw_upgrade(
    port: int, head: bytes, timeout: float = 60
) -> tuple[bytes, asyncio.StreamWriter]:
    """``head`` on a new connection: the answer's status line (``closed unanswered`` when the
    server closed first) and the connection, left open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    try:
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError:
        return b"closed unanswered", writer
    return answer.split(b"\r\n")[0], writer
