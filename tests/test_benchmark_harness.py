"""The measuring stick itself: the quick benchmark runs end to end and counts what it should.

A benchmark that silently miscounts deliveries or latencies would make every ratio in
docs/performance.md meaningless, so its smoke run is part of the suite (luna and the naive floor,
real redis-server, real client processes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import w3_load

from .helpers import REPO

pytestmark = pytest.mark.slow


def test_quick_run_counts_every_delivery(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--peers",
            "luna,naive",
            "--workloads",
            "W1,W3",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (saved,) = tmp_path.glob("*.json")
    data = json.loads(saved.read_text())
    (rnd,) = data["rounds"]
    subscribers = data["config"]["w1_subs"]
    w3 = rnd["W3"]["luna"]
    # luna delivers every published event to every (match-all) subscriber, and the client
    # counted each exactly once.
    assert w3["published"] > 0
    assert w3["deliveries"] == w3["published"] * subscribers
    assert 0 < w3["p50_ms"] <= w3["p99_ms"] < 5000
    assert w3["server_cpu_s"] > 0 and w3["client_cpu_s"] > 0
    # W3's load is half the slowest peer's W1 capacity, fixed from round 1.
    assert w3["rate"] == w3_load(rnd["W1"], data["config"]["w1_rates"][0])
    assert rnd["W3"]["naive"]["rate"] == w3["rate"]
    assert "W3 (p99 ms) luna/naive: median" in result.stdout


def test_w3_load_counts_a_peer_without_a_sustained_step_at_the_lowest() -> None:
    w1 = {"a": {"best": {"rate": 80}}, "b": {"best": {"rate": 10}}, "c": {"best": None}}
    assert w3_load(w1, 5) == 2.5
    assert w3_load({"a": {"best": {"rate": 80}}, "b": {"best": {"rate": 10}}}, 5) == 5
    assert w3_load({"a": {"error": "crashed"}, "b": {"best": {"rate": 40}}}, 5) == 20


def test_luna_jwt_peer_subscribers_are_let_in() -> None:
    """The jwt A/B peer must measure jwt mode, not a wall of 401s."""
    import asyncio

    from benchmarks.peers.registry import JWT_ENV, PEERS

    from .helpers import Service, account
    from .jwtkit import raw_handshake

    sub = PEERS["luna-jwt"].subscriber(account(), ["cam-1"], 0)
    svc = Service(env=JWT_ENV)
    try:
        status, _h, _b = asyncio.run(raw_handshake(svc.port, sub.path, sub.headers))
        refused, _h, _b = asyncio.run(raw_handshake(svc.port, sub.path))
    finally:
        svc.close()
    assert (status, refused) == (101, 401)
