"""W5 recovery: recovering sockets cut at once while events flow, all resuming with ``since``.

    python -m benchmarks.recovery [--sockets 2000] [--rate 20] [--rounds 3] [--quick]

Issue #18's proof at scale: every socket subscribes with ``recover=true``; events (realistic face
events in the luna-handlers producer format, each with a sequence number) are PUBLISHed to
Redis at a steady rate; then every client TCP connection is reset at once (SO_LINGER 0, so
frames in flight are lost to the client like on a real cut), the clients stay away for
``--outage`` seconds while events keep flowing, and all reconnect at once with
``since=<last offset received>``. After a drain (and up to ``--settle`` seconds more while the
last events are still arriving: late is not lost) every socket must hold every sequence number
exactly once. Figures per round: lost, duplicated, the replay size, the time from the start of
the reconnect to the ``{"recovery"}`` frame and to the first replayed event (p50/p99), server
and Redis CPU, and Redis's own time in the history scripts per published event.

luna only: the peers have no recovery. A private redis-server and luna-sender are started on
free ports, the clients run in ``--clients`` processes (docs/performance.md, "Recovery (W5)").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from . import procstat
from .peers.registry import PEERS
from .recclient import client_process
from .run import RESULTS, free_port, start_redis, wait_port
from .workload import PLACEHOLDER, face_event, luna_message


def accounts_for(n: int) -> list[str]:
    rng = random.Random(18)
    return [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]


class Producer:
    """Steady PUBLISH of numbered events, round-robin over the accounts (one counter each)."""

    def __init__(self, redis_url: str, accounts: list[str], size: int) -> None:
        rng = random.Random(5)
        self.redis = redis.Redis.from_url(redis_url)
        self.accounts = accounts
        self.bodies = [luna_message(face_event(rng, "cam-0", size)) for _ in range(8)]
        self.published = [0] * len(accounts)
        self.total = 0

    def one(self) -> None:
        a = self.total % len(self.accounts)
        seq = self.published[a]
        body = self.bodies[self.total % len(self.bodies)].replace(
            PLACEHOLDER, b'%.6f,"bench_seq":%d' % (time.time(), seq), 1
        )
        self.redis.publish(f"luna-sender:{self.accounts[a]}", body)
        self.published[a] += 1
        self.total += 1

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        start = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - start) * rate) + 1
            while self.total < due:
                self.one()
            await asyncio.sleep(max(0.0, start + self.total / rate - time.monotonic()))


def _redis_stats(client: redis.Redis) -> dict[str, float]:
    info = client.info("all")
    out = {"cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"])}
    for name in ("evalsha", "eval", "publish", "xrange", "xadd"):
        stat = info.get(f"cmdstat_{name}", {})
        out[f"{name}_calls"] = float(stat.get("calls", 0))
        out[f"{name}_usec"] = float(stat.get("usec", 0))
    return out


def _pick(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


async def _round(cfg: argparse.Namespace, redis_url: str, redis_pid: int) -> dict[str, Any]:
    port = free_port()
    server = PEERS["luna"].start(port, redis_url)
    accounts = accounts_for(cfg.accounts)
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    try:
        wait_port(port)
        plans: list[list[int]] = [[] for _ in range(cfg.clients)]
        for j in range(cfg.sockets):
            plans[j % cfg.clients].append(j % cfg.accounts)
        for plan in plans:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(port, accounts, plan, child))
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        for pipe in pipes:
            kind, arg = pipe.recv()
            if kind != "ready":
                raise RuntimeError(f"clients failed: {arg}")
        await asyncio.sleep(0.5)  # let every subscription settle before the first event
        producer = Producer(redis_url, accounts, cfg.size)
        stats = redis.Redis.from_url(redis_url)
        stats.config_resetstat()
        r0, s0 = _redis_stats(stats), procstat.cpu_seconds(server.pid)
        stop = asyncio.Event()
        pub = asyncio.create_task(producer.run(cfg.rate, stop))
        await asyncio.sleep(cfg.warm)
        s1, r1, n1 = procstat.cpu_seconds(server.pid), _redis_stats(stats), producer.total
        cut_at = time.monotonic()
        for pipe in pipes:
            pipe.send(("cut", (cfg.outage, cfg.jitter)))
        loop = asyncio.get_running_loop()
        reconnects = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        reconnected = time.monotonic() - cut_at
        await asyncio.sleep(cfg.after)
        stop.set()
        await pub
        await asyncio.sleep(cfg.drain)
        s2, r2, n2 = procstat.cpu_seconds(server.pid), _redis_stats(stats), producer.total
        rows: list[dict[str, Any]] = []
        for pipe in pipes:
            pipe.send(("report", (producer.published, cfg.settle)))
            rows += pipe.recv()[1]
        failed = [f for _kind, arg in reconnects for f in arg["failed"]]
        without = sum(arg["without_offset"] for _kind, arg in reconnects)
        to_first = [r["to_first"] for r in rows if r["to_first"] is not None]
        to_open = [r["to_open"] for r in rows if r["to_open"] is not None]
        to_rec = [r["to_recovery"] for r in rows if r["to_recovery"] is not None]
        steady = n1 or 1
        return {
            "sockets": cfg.sockets,
            "published": producer.total,
            "lost": sum(r["lost"] for r in rows),
            "holes": sum(r["holes"] for r in rows),
            "settle_s": max((r["settle"] for r in rows), default=0.0),
            "duplicated": sum(r["dup"] for r in rows),
            "disorder": sum(r["disorder"] for r in rows),
            "sockets_with_loss": sum(r["lost"] > 0 for r in rows),
            # a gap behind "recovered": true breaks the contract; one behind false is announced
            "recovered_with_loss": sum(r["lost"] > 0 and r["recovered"] is True for r in rows),
            "recovered": sum(r["recovered"] is True for r in rows),
            "not_recovered": sum(r["recovered"] is False for r in rows),
            "no_recovery_frame": sum(r["recovered"] is None for r in rows),
            "reconnect_failed": len(failed),
            "failures": failed[:3],
            "without_offset": without,
            "replayed_total": sum(max(0, r["replayed"]) for r in rows),
            "replayed_median": statistics.median(max(0, r["replayed"]) for r in rows),
            "retried_connects": sum(max(0, r["attempts"] - 1) for r in rows),
            "to_open_p50_ms": _ms(_pick(to_open, 0.5)),
            "to_open_p99_ms": _ms(_pick(to_open, 0.99)),
            "to_recovery_p50_ms": _ms(_pick(to_rec, 0.5)),
            "to_recovery_p99_ms": _ms(_pick(to_rec, 0.99)),
            "to_first_replayed_p50_ms": _ms(_pick(to_first, 0.5)),
            "to_first_replayed_p99_ms": _ms(_pick(to_first, 0.99)),
            "to_first_replayed_max_ms": _ms(max(to_first, default=None)),
            "all_reconnected_s": reconnected - cfg.outage,
            "server_cpu_steady_ms_per_event": 1000 * (s1 - s0) / steady,
            "server_cpu_recovery_s": s2 - s1,
            "redis_cpu_steady_us_per_event": 1e6 * (r1["cpu"] - r0["cpu"]) / steady,
            # appends only (before the cut), then everything including the since reads
            "redis_append_us_per_event": (r1["evalsha_usec"] + r1["eval_usec"]) / steady,
            "redis_script_us_per_event": (r2["evalsha_usec"] + r2["eval_usec"]) / max(n2, 1),
            "redis_publish_us_per_event": r2["publish_usec"] / max(n2, 1),
            "redis_cpu_recovery_s": r2["cpu"] - r1["cpu"],
            "redis_pid_cpu_s": procstat.cpu_seconds(redis_pid),
        }
    finally:
        for pipe in pipes:
            try:
                pipe.send(("stop", None))
            except OSError:
                pass
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        server.terminate()
        server.wait(10)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def run(cfg: argparse.Namespace) -> list[dict[str, Any]]:
    """Every round on a fresh luna-sender and the same private redis-server."""
    redis_proc, redis_url = start_redis()
    try:
        out = []
        for rnd in range(cfg.rounds):
            print(f"round {rnd + 1}: W5 luna, {cfg.sockets} sockets ...", flush=True)
            out.append(asyncio.run(_round(cfg, redis_url, redis_proc.pid)))
        return out
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


COLUMNS = [
    ("published", "published"),
    ("lost", "lost"),
    ("holes", "lost before a later event"),
    ("settle_s", "settle s"),
    ("duplicated", "dup"),
    ("recovered", "recovered"),
    ("replayed_median", "replayed/socket"),
    ("to_open_p50_ms", "->101 p50 ms"),
    ("to_open_p99_ms", "p99 ms"),
    ("to_first_replayed_p50_ms", "->1st replayed p50 ms"),
    ("to_first_replayed_p99_ms", "p99 ms"),
    ("not_recovered", "not recovered"),
    ("recovered_with_loss", "recovered yet lost"),
    ("server_cpu_recovery_s", "server CPU s (cut..end)"),
    ("redis_append_us_per_event", "Redis append µs/event"),
]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery")
    parser.add_argument("--quick", action="store_true", help="200 sockets, 1 round")
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=1, help="sockets spread over accounts")
    parser.add_argument("--rate", type=float, default=20.0, help="events/s published in total")
    parser.add_argument("--size", type=int, default=2000, help="event size, bytes")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of events before the cut")
    parser.add_argument("--outage", type=float, default=1.0, help="seconds every socket stays cut")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="spread the reconnects over this many seconds"
    )
    parser.add_argument("--after", type=float, default=5.0, help="seconds of events after it")
    parser.add_argument("--drain", type=float, default=2.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="then wait up to this long for every socket to hold every event (late is not lost)",
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    cfg = parser.parse_args(argv)
    if cfg.quick:
        cfg.sockets, cfg.rounds = 200, 1
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse(argv)
    rounds = run(cfg)
    print("\n| round | " + " | ".join(label for _k, label in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for i, res in enumerate(rounds, 1):
        cells = [res[k] for k, _label in COLUMNS]
        print(
            f"| {i} | "
            + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells)
            + " |"
        )
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.results_dir / time.strftime("%Y%m%d-%H%M%S-w5-recovery.json")
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()}
    path.write_text(json.dumps({"config": config, "rounds": rounds}, indent=1))
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
