"""How to start each peer, how its subscribers connect, and how events are routed to it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..loadgen import Sub

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS_PY = REPO / "benchmarks" / ".peers" / "venv" / "bin" / "python"
SIO_CHANNEL = "bench-socketio"


@dataclass
class Peer:
    name: str
    start: Callable[[int, str], subprocess.Popen[bytes]]
    # subscriber for an account and an optional list of sources (None: everything)
    subscriber: Callable[[str, list[str] | None, int], Sub]
    # "redis-luna": PUBLISH producer format to luna-sender:{acc}, filters in the server;
    # "redis-raw": PUBLISH the envelope to a routed channel; "socketio": emit to rooms;
    # "http": POST the envelope to nchan's publisher location.
    route: str
    content_filters: bool
    available: Callable[[], str | None] = lambda: None


def _spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


def _luna_cmd(port: int, redis_url: str, workers: int = 1) -> list[str]:
    """The service's command line; the A/B base runs the same one in its own checkout."""
    extra = [] if workers == 1 else ["--workers", str(workers)]
    return [
        sys.executable,
        "-m",
        "luna_sender.cli",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--redis-url",
        redis_url,
        "--log-level",
        "WARNING",
        *extra,
    ]


def _luna(
    port: int, redis_url: str, loop: str = "auto", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return _spawn(
        _luna_cmd(port, redis_url),
        {"LUNA_SENDER_EVENT_LOOP": loop, **(env or {})},
    )


# The A/B for access control: the same service in auth.mode jwt, every subscriber presenting a
# token. The token is verified once per handshake, so W1 should be within noise of "luna".
JWT_SECRET = "benchmark-secret-0123456789abcdef0123"
JWT_ENV = {"LUNA_SENDER_AUTH__MODE": "jwt", "LUNA_SENDER_AUTH__JWT_SECRET": JWT_SECRET}


def _luna_jwt(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    return _luna(port, redis_url, env=JWT_ENV)


def _jwt_sub(acc: str, src: list[str] | None, _g: int) -> Sub:
    import time

    import jwt

    tok = jwt.encode(
        {"account_id": acc, "exp": int(time.time()) + 86400}, JWT_SECRET, algorithm="HS256"
    )
    return Sub("ws", "/ws" + _filter_query(src), {"Authorization": f"Bearer {tok}"})


# The A/B against an earlier commit: ``LUNA_BENCH_BASE=<folder of a checkout>`` (e.g. made with
# ``git worktree add --detach /tmp/luna-base <commit>``) runs that checkout's code with this venv,
# so a change is measured against its own starting point in the same run.
BASE_ENV = "LUNA_BENCH_BASE"


def _luna_base(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    base = os.environ[BASE_ENV]
    return subprocess.Popen(
        _luna_cmd(port, redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=base,
        env={**os.environ, "PYTHONPATH": base},
    )


def _need_base() -> str | None:
    base = os.environ.get(BASE_ENV)
    if not base or not (Path(base) / "luna_sender").is_dir():
        return f"set {BASE_ENV} to a checkout of the commit to compare against"
    return None


def _luna_w2(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    """Two workers sharing the port (SO_REUSEPORT): procstat sums the whole process tree."""
    return _spawn(_luna_cmd(port, redis_url, workers=2), {"LUNA_SENDER_EVENT_LOOP": "auto"})


def _luna_asyncio(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    """This service on the standard asyncio loop: the A/B for the event loop choice."""
    return _luna(port, redis_url, "asyncio")


def _naive(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    return _spawn(
        [
            sys.executable,
            "-m",
            "benchmarks.peers.naive",
            "--port",
            str(port),
            "--redis-url",
            redis_url,
        ]
    )


def _socketio(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    return _spawn(
        [
            str(PEERS_PY),
            str(HERE / "socketio_peer.py"),
            "--port",
            str(port),
            "--redis-url",
            redis_url,
        ]
    )


def _broadcaster(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    return _spawn(
        [
            str(PEERS_PY),
            str(HERE / "broadcaster_peer.py"),
            "--port",
            str(port),
            "--redis-url",
            redis_url,
        ]
    )


def _nchan(port: int, _redis_url: str) -> subprocess.Popen[bytes]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
    conf = (
        (HERE / "nchan.conf")
        .read_text()
        .replace("{port}", str(port))
        .replace("{dir}", str(workdir))
    )
    (workdir / "nginx.conf").write_text(conf)
    return _spawn(["nginx", "-c", str(workdir / "nginx.conf"), "-p", str(workdir)])


def _filter_query(sources: list[str] | None) -> str:
    return "" if sources is None else "?sources=" + ",".join(sources)


def channel_for(acc: str, group: int | None) -> str:
    return acc if group is None else f"{acc}-g{group}"


def _need_peers_venv() -> str | None:
    return None if PEERS_PY.exists() else "run benchmarks/setup.sh first (peers venv missing)"


def _need_nginx() -> str | None:
    if shutil.which("nginx") is None:
        return "nginx + libnginx-mod-nchan not installed (benchmarks/setup.sh)"
    if not Path("/usr/lib/nginx/modules/ngx_nchan_module.so").exists():
        return "libnginx-mod-nchan not installed"
    return None


def _luna_sub(acc: str, src: list[str] | None, _g: int) -> Sub:
    """luna-sender's own subscription (the naive floor speaks the same protocol)."""
    return Sub("ws", "/ws" + _filter_query(src), {"Luna-Account-Id": acc})


PEERS: dict[str, Peer] = {
    "luna": Peer("luna", _luna, _luna_sub, "redis-luna", True),
    "luna-w2": Peer("luna-w2", _luna_w2, _luna_sub, "redis-luna", True),
    "luna-asyncio": Peer("luna-asyncio", _luna_asyncio, _luna_sub, "redis-luna", True),
    "luna-jwt": Peer("luna-jwt", _luna_jwt, _jwt_sub, "redis-luna", True),
    "luna-base": Peer("luna-base", _luna_base, _luna_sub, "redis-luna", True, _need_base),
    "naive": Peer("naive", _naive, _luna_sub, "redis-luna", True),
    "socketio": Peer(
        "socketio",
        _socketio,
        lambda acc, src, _g: Sub(
            "socketio",
            "/socket.io/?EIO=4&transport=websocket",
            rooms=[acc] if src is None else [f"{acc}:{s}" for s in src],
        ),
        "socketio",
        False,
        _need_peers_venv,
    ),
    "broadcaster": Peer(
        "broadcaster",
        _broadcaster,
        lambda acc, _src, g: Sub(
            "ws", f"/ws?channel={channel_for(acc, g)}", ready_marker=b"subscribed"
        ),
        "redis-raw",
        False,
        _need_peers_venv,
    ),
    "nchan": Peer(
        "nchan",
        _nchan,
        lambda acc, _src, g: Sub("ws", f"/sub/{channel_for(acc, g)}"),
        "http",
        False,
        _need_nginx,
    ),
}
