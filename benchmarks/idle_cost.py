"""What open but quiet websockets cost the server: CPU and wake-ups per second, A/B in one run.

    flock /tmp/bench.lock python -m benchmarks.idle_cost --src /tmp/luna-base --src . \
        --n 1000 --seconds 30 --rounds 3 [--heartbeat 20]

Every ``--src`` gets its own service on one private redis-server, all measured over the same
window, so an A/B shares the machine's noise. Each server gets ``--n`` sockets from this
process, the W1 subscriber (one account, no filter), that answer the heartbeat's pings as
clients do; nothing is published. What the server then spends is its timers: heartbeats, the
stall sweep, gauges. At low event rates that is a share of every event's cost (W1 at 5 events/s,
W4 at 250/s), and it is what a deployment of idle dashboards pays all day.

CPU is utime + stime from /proc over the window; wake-ups are the server's voluntary context
switches (each one an epoll return after sleeping).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from benchmarks.procstat import cpu_seconds, switches
from benchmarks.profile_ingest import Client, Server, connect, start_server
from benchmarks.run import ACCOUNT, start_redis


async def one_round(args: argparse.Namespace, order: list[str]) -> dict[str, tuple[float, float]]:
    redis, redis_url = start_redis()
    env = {"LUNA_SENDER_WS__HEARTBEAT": str(args.heartbeat)} if args.heartbeat else {}
    servers: list[Server] = []
    try:
        for src in order:
            servers.append(start_server(src, redis_url, env))
        clients: list[Client] = []
        for server in servers:
            for _ in range(args.n):
                clients.append(await connect(server.port, ACCOUNT, "", "idle"))
        await asyncio.sleep(args.settle)
        pids = [s.proc.pid for s in servers]
        cpu0, wake0, t0 = (
            [cpu_seconds(p) for p in pids],
            [switches([p])[0] for p in pids],
            time.time(),
        )
        await asyncio.sleep(args.seconds)
        wall = time.time() - t0
        out = {}
        for src, pid, c0, w0 in zip(order, pids, cpu0, wake0, strict=True):
            out[src] = ((cpu_seconds(pid) - c0) / wall * 1e3, (switches([pid])[0] - w0) / wall)
        lost = sum(1 for c in clients if c.transport is None or c.transport.is_closing())
        if lost:
            raise RuntimeError(f"{lost} sockets closed while idle: pings not answered?")
        for c in clients:
            assert c.transport is not None
            c.transport.close()
        return out
    finally:
        for server in servers:
            server.proc.terminate()
            server.proc.wait(10)
        redis.terminate()
        redis.wait(10)


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, float]]] = {src: [] for src in args.src}
    for r in range(args.rounds):
        order = args.src if r % 2 == 0 else args.src[::-1]
        found = await one_round(args, order)
        for src, (cpu, wakes) in found.items():
            results[src].append((cpu, wakes))
            print(f"round {r + 1} {src}: {cpu:.2f} ms CPU/s, {wakes:.1f} wake-ups/s", flush=True)
    print(
        f"\n{args.n} answering sockets per server, heartbeat {args.heartbeat or 'default'}, "
        f"{args.seconds:.0f} s x {args.rounds} rounds; median (min-max)"
    )
    for src, rows in results.items():
        cpu = [c for c, _ in rows]
        wakes = [w for _, w in rows]
        print(
            f"{src}: {statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) ms CPU/s, "
            f"{statistics.median(wakes):.1f} ({min(wakes):.1f}-{max(wakes):.1f}) wake-ups/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", action="append", help="checkout to run (repeat for A/B)")
    parser.add_argument("--n", type=int, default=1000, help="sockets per server")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=3.0, help="after the sockets open")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=0.0, help="ws.heartbeat (0: default)")
    args = parser.parse_args()
    args.src = args.src or ["."]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
