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
from typing import Any

import pytest

from benchmarks.run import rotate, sustained, w3_load

from .helpers import REPO


def _bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``benchmarks.run`` with ``args`` for luna and the naive floor: its output and the
    results file it saved."""
    command = [sys.executable, "-m", "benchmarks.run", "--peers", "luna,naive"]
    result = subprocess.run(
        [*command, *args, "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (saved,) = tmp_path.glob("*.json")
    return result, json.loads(saved.read_text())


@pytest.mark.slow
def test_quick_run_counts_every_delivery(tmp_path: Path) -> None:
    result, data = _bench(
        tmp_path, "--quick", "--workloads", "W1,W3,W4", "--step-seconds=1", "--w3-seconds=1"
    )
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
    # W4: filtered sockets over many accounts; every due delivery counted, none extra, and
    # each peer's CPU per ingested event reported at each common rate.
    for peer in ("luna", "naive"):
        steps = rnd["W4"][peer]["steps"]
        assert steps and all(st["deliveries"] == st["expected"] > 0 for st in steps)
        assert all(st["cpu_per_event_us"] > 0 for st in steps)
    assert "W4 x naive" in result.stdout and "| highest sustained |" in result.stdout


@pytest.mark.slow
def test_together_feeds_every_server_the_same_events_in_one_window(tmp_path: Path) -> None:
    """``--together``: one publisher, one window, so both servers' CPU is read over the same
    seconds and the same events; each still counts only its own deliveries."""
    result, data = _bench(
        tmp_path,
        *("--rounds=1", "--step-seconds=2", "--w4-accounts=8", "--w4-sources=10"),
        *("--workloads", "W4", "--together", "--w4-rates", "100,100"),
    )
    (rnd,) = data["rounds"]
    luna, naive = rnd["W4"]["luna"]["steps"], rnd["W4"]["naive"]["steps"]
    assert [st["rate"] for st in luna] == [st["rate"] for st in naive] == [100, 100]
    for a, b in zip(luna, naive, strict=True):
        assert a["published"] == b["published"] > 0
        assert a["expected"] == b["expected"] > 0
        assert a["wall_s"] == b["wall_s"] and a["together"] == b["together"]
        assert a["deliveries"] == a["expected"] and b["deliveries"] == b["expected"]
        assert a["server_cpu_s"] != b["server_cpu_s"]  # each server's own CPU, not one figure
    # the repeated rate gives a ratio per repetition, so the spread has two values
    assert "- luna: 100/s: " in result.stdout and "-" in result.stdout.split("- luna: 100/s: ")[1]


def test_w3_load_counts_a_peer_without_a_sustained_step_at_the_lowest() -> None:
    w1 = {"a": {"best": {"rate": 80}}, "b": {"best": {"rate": 10}}, "c": {"best": None}}
    assert w3_load(w1, 5) == 2.5
    assert w3_load({"a": {"best": {"rate": 80}}, "b": {"best": {"rate": 10}}}, 5) == 5
    assert w3_load({"a": {"error": "crashed"}, "b": {"best": {"rate": 40}}}, 5) == 20


@pytest.mark.slow
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


def test_w4_layout_counts_the_deliveries_each_event_is_due() -> None:
    """Unfiltered socket always, per-source sockets when they watch it, never-matching never."""
    import random

    from benchmarks.peers.registry import PEERS
    from benchmarks.w4 import NEVER, W4Layout

    layout = W4Layout(accounts=3, sources=4, per_source=2)
    subs = layout.subs(PEERS["luna"])
    assert len(subs) == layout.subscribers == 3 * 4
    assert sum(NEVER in s.path for s in subs) == 3
    assert sum(s.path == "/ws" for s in subs) == 3
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        account, source, _groups, due = layout.event(rng)
        mine = [s for s in subs if s.headers["Luna-Account-Id"] == account]
        matching = [s for s in mine if s.path == "/ws" or s.path.endswith("=" + source)]
        assert due == len(matching)
        seen.add(due)
    assert seen == {1, 2}


def test_count_only_client_counts_frames_split_anywhere_and_answers_pings() -> None:
    """The cheap client path must count exactly what the parsing path would, whatever the chunking."""
    import asyncio

    from benchmarks.loadgen import Stats, WSClient
    from luna_sender.delivery.frames import PING, PONG, TEXT

    def server_frame(opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + n.to_bytes(2, "big")
        else:
            head += bytes([127]) + n.to_bytes(8, "big")
        return head + payload

    stream = (
        b"".join(server_frame(TEXT, b"x" * size) for size in (3, 125, 126, 3000, 70_000, 0, 10))
        + server_frame(PING, b"hi")
        + server_frame(TEXT, b"y" * 200)
    )

    class Sink:
        def __init__(self) -> None:
            self.out: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.out.append(data)

    async def feed(chunk: int) -> tuple[int, list[bytes]]:
        stats = Stats()
        stats.window = (0.0, 1.0)
        client = WSClient(stats, timed=False)
        client.setup = None
        sink = Sink()
        client.transport = sink  # type: ignore[assignment]
        for i in range(0, len(stream), chunk):
            client.data_received(stream[i : i + chunk])
        return stats.count, sink.out

    for chunk in (1, 2, 7, 1000, 4096, len(stream)):
        count, out = asyncio.run(feed(chunk))
        assert count == 8, chunk
        (pong,) = out

        # the pong is a masked client frame carrying the ping's payload
        assert pong[0] & 0x0F == PONG and len(pong) == 2 + 4 + 2


def test_render_steps_compares_common_rates_with_spread_and_x_naive() -> None:
    from benchmarks.report import render_steps

    def step(rate: float, us: float, ok: bool = True) -> dict[str, object]:
        return {"rate": rate, "cpu_per_event_us": us, "sustained": ok, "client_util_max": 0.5}

    rounds = [
        {
            "W4": {
                "luna": {"steps": [step(250, 20), step(500, 30, False)], "best": step(250, 20)},
                "naive": {"steps": [step(250, 80, False)], "best": None},
            }
        },
        {
            "W4": {
                "luna": {"steps": [step(250, 40), step(500, 30)], "best": step(500, 30)},
                "naive": {"steps": [step(250, 120)], "best": step(250, 120)},
            }
        },
    ]
    text = render_steps({"rounds": rounds})
    assert "| 250 | 30.0 (20.0-40.0) [2/2, 50 %] | 100.0 (80.0-120.0) [1/2, 50 %] |" in text
    assert "| 500 | 30.0 (30.0-30.0) [1/2, 50 %] | — |" in text
    assert "| highest sustained | 375 (250-500) | 125 (0-250) |" in text
    assert "- luna: 250/s: 3.50 (3.00-4.00)" in text


def test_a_repeated_rate_gives_a_ratio_per_repetition() -> None:
    from benchmarks.report import render_steps

    def step(rate: float, us: float) -> dict[str, object]:
        return {"rate": rate, "cpu_per_event_us": us, "sustained": True, "client_util_max": 0.1}

    rounds = [
        {
            "W4": {
                "luna": {"steps": [step(250, 10), step(250, 20), step(500, 5)], "best": None},
                "naive": {"steps": [step(250, 30), step(250, 100)], "best": None},
            }
        }
    ]
    text = render_steps({"rounds": rounds})
    # 30/10 and 100/20: both repetitions count, the k-th against the k-th; 500/s has no pair
    assert "- luna: 250/s: 4.00 (3.00-5.00)" in text
    assert "500/s:" not in text.split("W4 x naive")[1]


@pytest.mark.slow
def test_luna_w2_runs_two_workers_and_cpu_counts_the_whole_tree() -> None:
    from benchmarks import procstat
    from benchmarks.peers.registry import PEERS
    from benchmarks.run import free_port, start_redis, wait_port

    redis_proc, url = start_redis()
    port = free_port()
    server = PEERS["luna-w2"].start(port, url)
    try:
        wait_port(port)
        import time

        deadline = time.monotonic() + 20
        while len(procstat.tree(server.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(procstat.tree(server.pid)) >= 3  # the supervisor and two workers
        assert procstat.cpu_seconds(server.pid) > 0
    finally:
        server.terminate()
        server.wait(20)
        redis_proc.terminate()
        redis_proc.wait(10)


def test_peer_order_rotates_each_round() -> None:
    assert [rotate(["a", "b", "c"], r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert rotate([], 2) == []


def test_a_step_whose_rate_the_publisher_could_not_offer_is_not_sustained() -> None:
    ok = {"offered": 1000.0, "published": 1000, "expected": 5000, "deliveries": 5000, "p99_ms": 9}
    assert sustained(ok)
    assert not sustained({**ok, "published": 320, "expected": 1600, "deliveries": 1600})
    assert not sustained({**ok, "deliveries": 4700})
    assert not sustained({**ok, "p99_ms": 101})
