"""Healthy readers' latency with stalled readers beside them: the slow-consumer goal.

    python -m benchmarks.slow_consumers --rounds 3 [--out FILE.json]

Goal: with 50 sockets that stopped reading, the healthy readers' p99 stays within 1.2x of their
p99 without them: a figure to measure, not a timed test (tests/test_faults_clients.py keeps the
functional checks). A round: a private redis-server, one service as that test configures it
(1 MiB queue cap, ws.stall_timeout 5 s), ``--n`` readers of one account in loadgen processes,
~``--sample`` of them timing each event (receive minus publish time). After a warm-up, phase A
PUBLISHes ~10 KB events in the producers' format at ``--rate`` for ``--seconds``; ``--stalled``
sockets with a 4 KiB receive buffer then connect and never read, and phase B repeats A. Events
go on until ws_closed_total{reason="slow_consumer"} counts every stalled socket; those then read
what they were sent, to find their Close.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import resource
import socket
import statistics
import time
import urllib.request
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from benchmarks.loadgen import client_process, summarize
from benchmarks.peers.registry import PEERS
from benchmarks.procstat import cpu_seconds
from benchmarks.profile_ingest import Server, start_server
from benchmarks.run import ACCOUNT, Layout, Publisher, start_redis
from luna_sender.delivery.frames import CLOSE, FrameParser

ENV = {
    "LUNA_SENDER_WS__QUEUE_MAX_BYTES": str(1 << 20),
    "LUNA_SENDER_LIMITS__BUS_MESSAGE_MAX_BYTES": str(1 << 20),
    "LUNA_SENDER_LIMITS__PUBLISH_BODY_MAX_BYTES": str(1 << 20),
    "LUNA_SENDER_WS__STALL_TIMEOUT": "5",
}
CLOSED = 'ws_closed_total{reason="slow_consumer"}'
LUNA = PEERS["luna"]


def closed(port: int) -> float:
    """The service's count of sockets closed as slow consumers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(CLOSED + " "))


def start_readers(port: int, n: int, procs: int) -> tuple[list[BaseProcess], list[Connection]]:
    """``n`` unfiltered subscribers in ``procs`` loadgen processes (LUNA_BENCH_SAMPLE picks the
    timed ones); returns once every socket is subscribed."""
    ctx = multiprocessing.get_context("spawn")
    sub = LUNA.subscriber(ACCOUNT, None, 0)
    pipes = [ctx.Pipe() for _ in range(procs)]
    workers: list[BaseProcess] = [
        ctx.Process(target=client_process, args=(port, [sub] * (n // procs + (k < n % procs)), c))
        for k, (_, c) in enumerate(pipes)
    ]
    for proc in workers:
        proc.start()
    for parent, _ in pipes:
        kind, arg = parent.recv()
        if kind != "ready":
            raise RuntimeError(f"readers failed: {arg}")
    return workers, [parent for parent, _ in pipes]


def stall(port: int) -> socket.socket:
    """A subscriber with a 4 KiB receive buffer (set before connect) that reads its upgrade
    response byte by byte and then nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nLuna-Account-Id: {ACCOUNT}\r\n\r\n"
        ).encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n") and (byte := sock.recv(1)):
        head += byte
    if not head.startswith(b"HTTP/1.1 101 "):
        raise ConnectionError(head.decode(errors="replace"))
    return sock


class Closes(FrameParser):
    """The frames a stalled socket finds when it reads again; keeps the Close's code and reason."""

    def __init__(self) -> None:
        self.buf, self.close = bytearray(), ""

    def on_frame(self, opcode: int, payload: bytearray, stamp: float) -> None:
        if opcode == CLOSE:
            self.close = f"{int.from_bytes(payload[:2], 'big')} {payload[2:].decode()}"


def drain(sock: socket.socket) -> str:
    """Read a stalled socket to its end: "<close code> <reason>", "reset" or "no close"."""
    parser = Closes()
    sock.settimeout(5)
    try:
        while not parser.close and (data := sock.recv(1 << 16)):
            parser.buf += data
            parser.parse_frames(0.0)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        pass
    return parser.close or "no close"


async def publish(args: argparse.Namespace, server: Server, url: str, seconds: float) -> int:
    """~``--size`` B face events in the producers' format, PUBLISHed to the readers' account;
    returns the deliveries due (every reader takes every event)."""
    layout = Layout("W1", args.n)
    layout.event_size = (args.size, args.size)
    publisher = Publisher(LUNA, server.port, url, layout)
    try:
        await publisher.run(args.rate, seconds)
    finally:
        await publisher.close()
    return publisher.expected


async def phase(
    args: argparse.Namespace, server: Server, redis_url: str, pipes: list[Connection]
) -> dict[str, float]:
    """Publish for ``--seconds`` at ``--rate``, let a second drain, collect the readers' stats."""
    for pipe in pipes:
        pipe.send(("window", (time.time(), time.time() + args.seconds + 60)))
    await asyncio.sleep(0.1)
    cpu0, wall0 = cpu_seconds(server.proc.pid), time.monotonic()
    due = await publish(args, server, redis_url, args.seconds)
    await asyncio.sleep(1.0)
    cpu, wall = cpu_seconds(server.proc.pid) - cpu0, time.monotonic() - wall0
    for pipe in pipes:
        pipe.send(("report", None))
    s = summarize([pipe.recv()[1] for pipe in pipes])
    return {
        "p50_ms": 1e3 * s["p50"],
        "p99_ms": 1e3 * s["p99"],
        "delivered": s["count"] / due,
        "server_cpu_pct": 100 * cpu / wall,
        "client_util_max": s["client_util_max"],
    }


async def one_round(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:  # undone in reverse: sockets, readers, service, redis
        redis, redis_url = start_redis()
        stack.callback(redis.wait, 10)
        stack.callback(redis.terminate)
        server = start_server(".", redis_url, ENV)
        stack.callback(server.proc.wait, 10)
        stack.callback(server.proc.terminate)
        workers, pipes = start_readers(server.port, args.n, 2)
        for proc in workers:  # stop, join, then kill any that did not exit
            stack.callback(proc.kill)
            stack.callback(proc.join, 10)
        for pipe in pipes:
            stack.callback(pipe.send, ("stop", None))
        await asyncio.sleep(1.0)  # subscriptions confirmed
        await phase(args, server, redis_url, pipes)  # warm-up, not reported
        out: dict[str, Any] = {"A": await phase(args, server, redis_url, pipes)}
        out["closed_after_A"] = closed(server.port)
        stalled = [stack.enter_context(stall(server.port)) for _ in range(args.stalled)]
        t0 = time.monotonic()
        out["B"] = await phase(args, server, redis_url, pipes)
        out["closed_after_B"] = closed(server.port)
        out["ratio"] = out["B"]["p99_ms"] / out["A"]["p99_ms"]
        # As the test: events go on (an overflow evicts on a write) until all are closed.
        while (gone := closed(server.port) - out["closed_after_A"]) < args.stalled and (
            time.monotonic() < t0 + 30
        ):
            await publish(args, server, redis_url, 0.5)
        out["all_closed_s"] = time.monotonic() - t0 if gone >= args.stalled else None
        ends = [drain(sock) for sock in stalled]
        out["stalled_ends"] = {end: ends.count(end) for end in sorted(set(ends))}
        return out


def show(r: int, res: dict[str, Any]) -> str:
    rows = [
        f"round {r} {k}: p50 {p['p50_ms']:.1f} p99 {p['p99_ms']:.1f} ms, delivered "
        f"{100 * p['delivered']:.1f}%, server CPU {p['server_cpu_pct']:.0f}%, readers' CPU max "
        f"{100 * p['client_util_max']:.0f}%\n"
        for k, p in (("A", res["A"]), ("B", res["B"]))
    ]
    when = f"by {res['all_closed_s']:.1f} s" if res["all_closed_s"] else "NOT"
    return "".join(rows) + (
        f"round {r}: p99 B/A {res['ratio']:.2f}; slow_consumer closes {res['closed_after_A']:.0f} "
        f"after A, {res['closed_after_B']:.0f} after B, all {when} after the stall began; "
        f"the stalled sockets read {res['stalled_ends']}"
    )


async def main_async(args: argparse.Namespace) -> None:
    rounds = []
    for r in range(args.rounds):
        rounds.append(await one_round(args))
        print(show(r + 1, rounds[-1]), flush=True)
    ratios = [res["ratio"] for res in rounds]
    summary = {f"p99_{k}_ms": statistics.median(res[k]["p99_ms"] for res in rounds) for k in "AB"}
    summary.update(ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
    print(
        f"\nmedians of {args.rounds} rounds: p99 A {summary['p99_A_ms']:.1f} ms, B "
        f"{summary['p99_B_ms']:.1f} ms; p99 B/A {summary['ratio']:.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f}; goal <= 1.2)"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": vars(args), "rounds": rounds, "summary": summary}, f, indent=1)
        print(f"saved {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=950, help="healthy readers")
    parser.add_argument("--sample", type=int, default=50, help="readers that time events")
    parser.add_argument("--stalled", type=int, default=50, help="readers that never read")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=4.0, help="publishing per phase")
    parser.add_argument("--size", type=int, default=10_000, help="event size (bytes)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args()
    # loadgen times one socket in LUNA_BENCH_SAMPLE of each process (read as it imports)
    os.environ["LUNA_BENCH_SAMPLE"] = str(max(1, args.n // args.sample))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
