"""One command: start redis-server, each server in turn, clients in separate processes; print a table.

    python -m benchmarks.run [--quick] [--peers luna,naive,...] [--workloads W1,W2,W3,W7]

Workloads (docs/performance.md): W1 broadcast with a stepped offered rate, W2 selective (1% of
subscribers match), W3 latency at a fixed load, W7 RSS per idle connection. Peers are interleaved
(A B C ... A B C) for ``--rounds`` rounds; ratios ours/peer are computed per round and their
median printed. Results are also saved under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from . import procstat
from .loadgen import Sub, client_process, summarize
from .peers.registry import PEERS, SIO_CHANNEL, Peer, channel_for
from .report import render_steps
from .w4 import W4Layout
from .workload import PLACEHOLDER, envelope, face_event, luna_message

RESULTS = Path(__file__).resolve().parent / "results"
ACCOUNT = "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
SRC_PLACEHOLDER = b"__SRC__"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class Pool:
    """Pre-built wire forms of realistic events; only the timestamp and source are patched."""

    def __init__(self, n: int = 16, seed: int = 7, size: tuple[int, int] = (5_000, 20_000)) -> None:
        rng = random.Random(seed)
        self.luna, self.env = [], []
        for _ in range(n):
            event = face_event(rng, "__SRC__", rng.randint(*size))
            self.luna.append(luna_message(event))
            self.env.append(envelope(event))
        self.i = 0

    def next(self, route: str, source: str, ts: float) -> bytes:
        self.i = (self.i + 1) % len(self.luna)
        data = self.luna[self.i] if route == "redis-luna" else self.env[self.i]
        return data.replace(SRC_PLACEHOLDER, source.encode(), 1).replace(
            PLACEHOLDER, b"%.6f" % ts, 1
        )


class Layout:
    """Who subscribes to what. W2: 1,000 filters of 10 sources each; each source is in 10."""

    def __init__(self, workload: str, subscribers: int, filters: int = 1000) -> None:
        self.workload, self.subscribers, self.filters = workload, subscribers, filters
        self.sources = filters

    def sub_sources(self, j: int) -> tuple[list[str] | None, int | None]:
        if self.workload != "W2":
            return None, None
        g = j % self.filters
        step = self.sources // 10
        return [f"cam-{(g + step * k) % self.sources}" for k in range(10)], g

    event_size = (5_000, 20_000)

    def subs(self, peer: Peer) -> list[Sub]:
        return [peer.subscriber(ACCOUNT, *self.sub_sources(j)) for j in range(self.subscribers)]  # type: ignore[arg-type]

    def event(self, rng: random.Random) -> tuple[str, str, list[int], int]:
        source, groups = self.event_source(rng)
        return ACCOUNT, source, groups, self.subscribers if self.workload != "W2" else 0

    def event_source(self, rng: random.Random) -> tuple[str, list[int]]:
        if self.workload != "W2":
            return "cam-0", []
        s = rng.randrange(self.sources)
        step = self.sources // 10
        return f"cam-{s}", sorted({(s - step * k) % self.filters for k in range(10)})


class Publisher:
    def __init__(self, peer: Peer, port: int, redis_url: str, layout: Any) -> None:
        self.peer, self.port, self.layout = peer, port, layout
        self.redis = aioredis.from_url(redis_url)
        self.http: aiohttp.ClientSession | None = None
        self.pool = Pool(size=layout.event_size)
        self.rng = random.Random(3)
        self.expected = 0  # deliveries due for what was published (the layout knows)

    async def batch(self, n: int) -> None:
        """The producer format goes out pipelined: one round trip per tick, not per event, so
        thousands of events/s (W4) cost the publisher little and leave the cores to the server."""
        if self.peer.route != "redis-luna":
            for _ in range(n):
                await self.one()
            return
        pipe = self.redis.pipeline(transaction=False)
        for _ in range(n):
            account, source, _groups, due = self.layout.event(self.rng)
            self.expected += due
            pipe.publish(
                f"luna-sender:{account}", self.pool.next("redis-luna", source, time.time())
            )
        await pipe.execute()

    async def one(self) -> None:
        _account, source, groups, due = self.layout.event(self.rng)
        self.expected += due
        data = self.pool.next(self.peer.route, source, time.time())
        route = self.peer.route
        if route == "redis-raw":
            for g in groups or [None]:
                await self.redis.publish(channel_for(ACCOUNT, g), data)
        elif route == "socketio":
            room = ACCOUNT if not groups else f"{ACCOUNT}:{source}"
            message = (
                b'{"method":"emit","event":"event","data":['
                + data
                + b'],"binary":false,"namespace":"/","room":"'
                + room.encode()
                + b'","skip_sid":null,"callback":null,"host_id":"bench-publisher"}'
            )
            await self.redis.publish(SIO_CHANNEL, message)
        else:
            if self.http is None:
                self.http = aiohttp.ClientSession()
            for g in groups or [None]:
                async with self.http.post(
                    f"http://127.0.0.1:{self.port}/pub/{channel_for(ACCOUNT, g)}", data=data
                ) as resp:
                    await resp.read()

    async def run(self, rate: float, duration: float) -> int:
        start = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic()
            if now - start >= duration:
                return sent
            due = int((now - start) * rate) + 1
            if due > sent:
                await self.batch(due - sent)
                sent = due
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))

    async def close(self) -> None:
        await self.redis.aclose()
        if self.http is not None:
            await self.http.close()


def self_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


class Run:
    """One peer under one workload: server up, clients connected, then measured steps."""

    def __init__(self, peer: Peer, layout: Any, redis_url: str, clients: int) -> None:
        self.peer, self.layout, self.redis_url = peer, layout, redis_url
        self.port = free_port()
        self.server = peer.start(self.port, redis_url)
        wait_port(self.port)
        time.sleep(0.5)
        self.idle_rss = procstat.rss_bytes(self.server.pid)
        subs: list[list[Sub]] = [[] for _ in range(clients)]
        for j, sub in enumerate(layout.subs(peer)):
            subs[j % clients].append(sub)
        ctx = multiprocessing.get_context("spawn")
        self.pipes, self.procs = [], []
        for chunk in subs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(self.port, chunk, child))
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        for pipe in self.pipes:
            kind, arg = pipe.recv()
            if kind != "ready":
                self.close()
                raise RuntimeError(f"{peer.name}: clients failed: {arg}")
        time.sleep(0.5)
        self.loaded_rss = procstat.rss_bytes(self.server.pid)

    def step(self, rate: float, duration: float) -> dict[str, Any]:
        return measure([self], rate, duration)[0]

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop", None))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self.server.terminate()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()


def measure(runs: list[Run], rate: float, duration: float) -> list[dict[str, Any]]:
    """One step for each run, over one window. Runs fed the producer format (``redis-luna``)
    share a redis and one publisher, so they take the very same events; any other run gets a
    publisher of its own, running at the same rate in the same seconds from the same seeded
    event sequence. Several servers' CPU is then read on one host state, not on two minutes
    whose neighbours differ (``--together``)."""
    window = (time.time(), time.time() + duration + 60)
    for run in runs:
        for pipe in run.pipes:
            pipe.send(("window", window))
    time.sleep(0.1)
    publishers: list[Publisher] = []
    feeds: list[Publisher] = []  # runs[i] is fed by feeds[i]
    for run in runs:
        shared = next(
            (p for p in publishers if p.peer.route == run.peer.route == "redis-luna"), None
        )
        if shared is None:
            shared = Publisher(run.peer, run.port, run.redis_url, run.layout)
            publishers.append(shared)
        feeds.append(shared)
    cpu0 = [procstat.cpu_seconds(run.server.pid) for run in runs]
    pub0, wall0 = self_cpu(), time.monotonic()

    async def go() -> list[int]:
        try:
            return list(await asyncio.gather(*(p.run(rate, duration) for p in publishers)))
        finally:
            for p in publishers:
                await p.close()

    sent_by = dict(zip(map(id, publishers), asyncio.run(go()), strict=True))
    time.sleep(1.0)  # let deliveries in flight arrive
    wall = time.monotonic() - wall0
    cpus = [procstat.cpu_seconds(run.server.pid) - c0 for run, c0 in zip(runs, cpu0, strict=True)]
    pub_cpu = self_cpu() - pub0
    out = []
    for run, cpu, feed in zip(runs, cpus, feeds, strict=True):
        sent = sent_by[id(feed)]
        reports = []
        for pipe in run.pipes:
            pipe.send(("report", None))
            reports.append(pipe.recv()[1])
        s = summarize(reports)
        out.append(
            {
                "rate": rate,
                "published": sent,
                "offered": rate * duration,
                "expected": feed.expected,
                "cpu_per_event_us": 1e6 * cpu / sent if sent else float("nan"),
                "deliveries": s["count"],
                "deliveries_per_s": s["count"] / duration,
                "server_cpu_s": cpu,
                "deliveries_per_cpu_s": s["count"] / cpu if cpu > 0 else float("nan"),
                "cpu_per_event_ms": 1000 * cpu / sent if sent else float("nan"),
                "p50_ms": 1000 * s["p50"],
                "p99_ms": 1000 * s["p99"],
                "publisher_cpu_s": pub_cpu,
                "client_saturated": s["client_saturated"],
                "client_cpu_s": s["client_cpu_s"],
                "client_util_max": s["client_util_max"],
                "wall_s": wall,
                "together": [r.peer.name for r in runs] if len(runs) > 1 else None,
            }
        )
    return out


def w1(peer: Peer, redis_url: str, cfg: argparse.Namespace) -> dict[str, Any]:
    run = Run(peer, Layout("W1", cfg.w1_subs), redis_url, cfg.clients)
    try:
        steps, best = [], None
        for rate in cfg.w1_rates:
            st = run.step(rate, cfg.step_seconds)
            st["sustained"] = ok = sustained(st)
            steps.append(st)
            if ok and not st["client_saturated"]:
                best = st
            if not ok:
                break
        return {"steps": steps, "best": best}
    finally:
        run.close()


def sustained(step: dict[str, Any]) -> bool:
    """The one criterion for W1 and W4: the offered rate was really offered (>= 95 % of it
    published), p99 within 100 ms and >= 95 % of the due deliveries arrived.

    The first condition matters for nchan: its HTTP publish answers only after the fan-out, so a
    saturated nchan slows the publisher down and, judged on what was published alone, passed
    steps at a third of their rate (a 640/s step published 204 events in 3 s)."""
    return (
        step["published"] >= 0.95 * step["offered"]
        and step["p99_ms"] <= 100
        and step["deliveries"] >= 0.95 * step["expected"]
    )


def w4(peer: Peer, redis_url: str, cfg: argparse.Namespace) -> dict[str, Any]:
    """Stepped rates until one is not sustained; server CPU per ingested event at each step."""
    if not peer.content_filters:
        return {"error": "skipped: no content filters (see docs/performance.md, W4)"}
    layout = W4Layout(cfg.w4_accounts, cfg.w4_sources, cfg.w4_per_source)
    run = Run(peer, layout, redis_url, cfg.clients)
    try:
        steps, best = [], None
        for rate in cfg.w4_rates:
            st = run.step(rate, cfg.step_seconds)
            st["sustained"] = sustained(st)
            steps.append(st)
            if not st["sustained"]:
                break
            best = st
        return {"steps": steps, "best": best}
    finally:
        run.close()


def together(
    workload: str, peers: list[Peer], redis_url: str, cfg: argparse.Namespace
) -> dict[str, Any]:
    """W1 or W4 with every peer's server fed the same events in the same window. A peer leaves
    after its first step that is not sustained: a saturated server would take the cores from
    the others' higher steps. The rules for "best" are w1's and w4's."""
    if workload == "W4":
        layout: Any = W4Layout(cfg.w4_accounts, cfg.w4_sources, cfg.w4_per_source)
        rates = cfg.w4_rates
    else:
        layout, rates = Layout("W1", cfg.w1_subs), cfg.w1_rates
    live: list[Run] = []
    out: dict[str, Any] = {}
    try:
        for peer in peers:
            if workload == "W4" and not peer.content_filters:
                out[peer.name] = {"error": "skipped: no content filters (see docs/performance.md)"}
                continue
            live.append(Run(peer, layout, redis_url, cfg.clients))
            out[peer.name] = {"steps": [], "best": None}
        for rate in rates:
            if not live:
                break
            for run, st in zip(list(live), measure(live, rate, cfg.step_seconds), strict=True):
                st["sustained"] = ok = sustained(st)
                out[run.peer.name]["steps"].append(st)
                if ok and (workload == "W4" or not st["client_saturated"]):
                    out[run.peer.name]["best"] = st
                if not ok:
                    run.close()
                    live.remove(run)
        return out
    finally:
        for run in live:
            run.close()


def w2(peer: Peer, redis_url: str, cfg: argparse.Namespace) -> dict[str, Any]:
    run = Run(peer, Layout("W2", cfg.w2_subs), redis_url, cfg.clients)
    try:
        return run.step(cfg.w2_rate, cfg.step_seconds)
    finally:
        run.close()


def w3(peer: Peer, redis_url: str, cfg: argparse.Namespace, rate: float) -> dict[str, Any]:
    run = Run(peer, Layout("W3", cfg.w1_subs), redis_url, cfg.clients)
    try:
        return run.step(rate, cfg.w3_seconds)
    finally:
        run.close()


def w7(peer: Peer, redis_url: str, cfg: argparse.Namespace) -> dict[str, Any]:
    run = Run(peer, Layout("W7", cfg.w7_subs), redis_url, cfg.clients)
    try:
        per = (run.loaded_rss - run.idle_rss) / cfg.w7_subs
        return {
            "rss_idle_mib": run.idle_rss / 2**20,
            "rss_loaded_mib": run.loaded_rss / 2**20,
            "rss_per_connection_kib": per / 1024,
        }
    finally:
        run.close()


def w3_load(w1: dict[str, Any], lowest: float) -> float:
    """Half the slowest peer's W1 capacity. A peer that did not sustain even the lowest step
    counts as capable of that step: the load stays fixed and low, never raised by a failure."""
    caps = []
    for res in w1.values():
        if isinstance(res, dict) and "error" not in res:
            caps.append(res["best"]["rate"] if res.get("best") else lowest)
    return max(1.0, min(caps) / 2) if caps else lowest / 2


def rotate(items: list[Any], rnd: int) -> list[Any]:
    """Round ``rnd``'s peer order: A B C, then B C A, then C A B."""
    k = rnd % len(items) if items else 0
    return items[k:] + items[:k]


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            "60000",
            "--dir",
            tempfile.mkdtemp(prefix="bench-redis-"),
            "--client-output-buffer-limit",
            "pubsub 512mb 256mb 60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round, ~2 min")
    parser.add_argument("--peers", default="luna,naive,socketio,broadcaster,nchan")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W7")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument(
        "--together",
        action="store_true",
        help="W1 and W4: every peer's server fed the same events in the same window",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--w3-seconds",
        type=float,
        default=20.0,
        help="W3 duration: its p99 needs enough events to be more than one event",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=8.0,
        help="one rate step: CPU is read in 1/100 s ticks, so longer steps resolve it finer",
    )
    parser.add_argument("--w1-rates", default="5,10,20,40,80,160,320")
    parser.add_argument("--w1-subs", type=int, default=1000)
    parser.add_argument("--w4-rates", default="250,500,1000,2000,4000,8000,16000,24000,32000,48000")
    parser.add_argument("--w4-accounts", type=int, default=40)
    parser.add_argument("--w4-sources", type=int, default=20)
    parser.add_argument(
        "--w4-per-source", type=int, default=3, help="per account: sockets filtering one source"
    )
    cfg = parser.parse_args(argv)
    cfg.w2_subs, cfg.w7_subs = 10_000, 10_000
    cfg.w1_rates = [float(r) for r in cfg.w1_rates.split(",")]
    cfg.w4_rates = [float(r) for r in cfg.w4_rates.split(",")]
    cfg.w2_rate = 20
    if cfg.quick:  # step and W3 lengths given on the command line are kept (the suite's run)
        cfg.rounds = 1
        for name in ("step_seconds", "w3_seconds"):
            if getattr(cfg, name) == parser.get_default(name):
                setattr(cfg, name, 2.0)
        cfg.w2_subs, cfg.w7_subs = 1000, 1000
        cfg.w1_subs = min(cfg.w1_subs, 200)
        cfg.w1_rates = [10, 40]
        cfg.w4_rates, cfg.w4_accounts, cfg.w4_sources = [100, 400], 8, 10
        cfg.peers = "luna,naive" if cfg.peers == parser.get_default("peers") else cfg.peers
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    peers = []
    for name in cfg.peers.split(","):
        peer = PEERS[name]
        reason = peer.available()
        if reason:
            print(f"skipping {name}: {reason}")
        else:
            peers.append(peer)
    workloads = cfg.workloads.split(",")
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.results_dir / time.strftime("%Y%m%d-%H%M%S.json")
    redis_proc, redis_url = start_redis()
    results: dict[str, Any] = {
        "machine": {"cores": multiprocessing.cpu_count()},
        "config": {k: v for k, v in vars(cfg).items()},
        "rounds": [],
    }
    w3_rate: float | None = None
    try:
        for rnd in range(cfg.rounds):
            round_result: dict[str, Any] = {}
            # The order rotates each round: whoever runs first or last (a warm or busy machine,
            # other helpers' jobs) is a different peer each time, and the spread shows it.
            order = rotate(peers, rnd)
            for workload in workloads:
                if workload == "W3":
                    continue
                if workload in ("W1", "W4") and cfg.together:
                    names = [p.name for p in order]
                    print(f"round {rnd + 1}: {workload} together: {names} ...", flush=True)
                    try:
                        round_result[workload] = together(workload, order, redis_url, cfg)
                    except Exception as exc:  # reported, not fatal, as for one peer
                        round_result[workload] = {p.name: {"error": repr(exc)} for p in order}
                    continue
                for peer in order:
                    print(f"round {rnd + 1}: {workload} {peer.name} ...", flush=True)
                    fn = {"W1": w1, "W2": w2, "W4": w4, "W7": w7}[workload]
                    try:
                        round_result.setdefault(workload, {})[peer.name] = fn(peer, redis_url, cfg)
                    except Exception as exc:  # a peer that fails is reported, not fatal
                        round_result.setdefault(workload, {})[peer.name] = {"error": repr(exc)}
            if "W3" in workloads:
                if w3_rate is None:  # fixed for the whole run, from the first round's W1
                    w3_rate = w3_load(round_result.get("W1", {}), cfg.w1_rates[0])
                rate = w3_rate
                for peer in order:
                    print(f"round {rnd + 1}: W3 {peer.name} at {rate} events/s ...", flush=True)
                    try:
                        round_result.setdefault("W3", {})[peer.name] = w3(
                            peer, redis_url, cfg, rate
                        )
                    except Exception as exc:
                        round_result.setdefault("W3", {})[peer.name] = {"error": repr(exc)}
            results["rounds"].append(round_result)
            path.write_text(json.dumps(results, indent=1, default=str))  # partial results
    finally:
        redis_proc.terminate()
    report(results, [p.name for p in peers])
    print()
    print(render_steps(results), end="")
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nsaved {path}")


def _metric(workload: str, result: dict[str, Any]) -> tuple[str, float | None]:
    if "error" in result:
        return "error", None
    if workload == "W1":
        best = result.get("best")
        return "deliveries/CPU-s", best["deliveries_per_cpu_s"] if best else None
    if workload == "W2":
        return "server CPU ms/event", result["cpu_per_event_ms"]
    if workload == "W3":
        return "p99 ms", result["p99_ms"]
    return "RSS KiB/conn", result["rss_per_connection_kib"]


def report(results: dict[str, Any], names: list[str]) -> None:
    print(
        "\n| workload | peer | round | deliveries/s | deliveries/CPU-s | CPU ms/event | "
        "p50 ms | p99 ms | RSS KiB/conn | client saturated |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rnd, rr in enumerate(results["rounds"], 1):
        for workload, per_peer in rr.items():
            if workload == "W4":  # per step, in render_steps' table below
                continue
            for name, res in per_peer.items():
                if "error" in res:
                    print(f"| {workload} | {name} | {rnd} | error: {res['error'][:60]} |")
                    continue
                row = res.get("best") if workload == "W1" else res
                if workload == "W1" and row is None:
                    row = res["steps"][0] if res["steps"] else {}
                if workload == "W7":
                    print(
                        f"| W7 | {name} | {rnd} | | | | | | {fmt(res['rss_per_connection_kib'])} | |"
                    )
                    continue
                print(
                    f"| {workload} | {name} | {rnd} | {fmt(row.get('deliveries_per_s'), 0)} | "
                    f"{fmt(row.get('deliveries_per_cpu_s'), 0)} | "
                    f"{fmt(row.get('cpu_per_event_ms'), 2)} | {fmt(row.get('p50_ms'))} | "
                    f"{fmt(row.get('p99_ms'))} | | {row.get('client_saturated')} |"
                )
    print("\nMedian ratio ours/peer over rounds (higher is better for W1; lower for W2, W3, W7):")
    summary: dict[str, dict[str, float]] = {}
    for workload in ("W1", "W2", "W3", "W7"):
        for peer in names:
            if peer == "luna":
                continue
            ratios = []
            for rr in results["rounds"]:
                ours = _metric(workload, rr.get(workload, {}).get("luna", {"error": ""}))[1]
                theirs = _metric(workload, rr.get(workload, {}).get(peer, {"error": ""}))[1]
                if ours is not None and theirs:
                    ratios.append(ours / theirs)
            if ratios:
                label = _metric(
                    workload,
                    {"rss_per_connection_kib": 0, "cpu_per_event_ms": 0, "p99_ms": 0, "best": None},
                )[0]
                median = statistics.median(ratios)
                summary.setdefault(workload, {})[peer] = median
                print(
                    f"  {workload} ({label}) luna/{peer}: median {median:.2f} "
                    f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
                )
    results["median_ratios"] = summary


if __name__ == "__main__":
    sys.exit(main())
