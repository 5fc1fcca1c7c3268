"""Server CPU per ingested event on the platform's real load shape (issue #19, item 1).

Many accounts x many camera sources, a handful of sockets per account (one unfiltered, a few
per-source, one whose filter never matches), ~3 KB events in the producers' format PUBLISHed to
``luna-sender:{account}`` at a fixed rate. What is measured is the server's CPU from /proc
(procstat.py) over the publishing window, divided by the events published: the cost of taking an
event in, not of a large fan-out.

Every ``--src`` folder gets its own luna-sender process, all on one private redis-server and fed
the same events at the same time, so an A/B shares its noise (the other helpers' load on the two
cores) instead of comparing runs minutes apart. Each socket hashes the frames it receives; the
same socket shape on every server must end with the same digest, which checks on this load that
a change keeps the wire output byte-identical.

``--floor read|forward`` (repeatable) also runs benchmarks/floor.py subscribers on the same redis:
the least any Python process on this machine pays to be woken for this stream (``read``) and to
turn each event into one websocket frame on a socket (``forward``). Their CPU per event is taken
the same way in the same run, so luna's figure is read as a multiple of the floor: at this VM's
scale the cost per event depends mostly on how many events share a wake-up (``--tick``, the
publisher's batch interval), which moves the floor as much as luna.

    flock /tmp/bench.lock python -m benchmarks.profile_ingest --src /tmp/luna-base --src .
    ... --py-spy /tmp/prof   # py-spy on each server while publishing: top self/inclusive
    ... --attach "strace -c -f -p {pid} -o /tmp/st-{i}.txt"   # any tool, per server
    ... --src . --floor read --floor forward --tick 0.001   # luna beside the machine's floor
    ... --wrap "valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg-%p" \
        --attach "callgrind_control -i on {pid}" --detach "callgrind_control -d {pid}" \
        --rate 20 --tick 0.04   # instructions per event, the same on every run

Run from the repository root (``PYTHONPATH=$PWD``); the servers use this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procstat import cpu_seconds
from benchmarks.run import free_port, start_redis, wait_port
from benchmarks.workload import face_event, luna_message, stamp
from luna_sender.delivery.frames import PING, PONG, FrameParser, client_frame

NEVER = "no-such-camera"
SERVER = [sys.executable, "-m", "luna_sender.cli", "--host", "127.0.0.1", "--log-level", "WARNING"]
PY_SPY = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "250", "--nonblocking"]
FLOOR = [sys.executable, "-m", "benchmarks.floor"]
ROOT = str(Path(__file__).resolve().parents[1])


@dataclass
class Server:
    src: str
    port: int
    proc: subprocess.Popen[bytes]
    clients: list[Client] = field(default_factory=list)
    spy: subprocess.Popen[bytes] | None = None
    tools: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class Floor:
    mode: str
    proc: subprocess.Popen[bytes]

    def counts(self) -> tuple[int, int]:
        """(messages, events) the floor has taken in so far."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        words = self.proc.stdout.readline().split()
        return int(words[1]), int(words[3])


def spawn_floor(*args: str, wrap: list[str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [*(wrap or []), *FLOOR, *args], stdout=subprocess.PIPE, cwd=ROOT, env=env
    )


def start_floor(
    mode: str, redis_port: int, sink_port: int | None, wrap: list[str] | None = None
) -> Floor:
    args = ["--mode", mode, "--redis-port", str(redis_port)]
    if sink_port is not None:
        args += ["--sink-port", str(sink_port)]
    proc = spawn_floor(*args, wrap=wrap)
    assert proc.stdout is not None
    if b"ready" not in proc.stdout.readline():
        raise RuntimeError(f"floor {mode} did not start")
    return Floor(mode, proc)


def start_sink() -> subprocess.Popen[bytes]:
    """The listener a forward floor writes its frames to (reads and discards; not measured)."""
    return spawn_floor("--mode", "sink")


class Client(FrameParser, asyncio.Protocol):
    """A raw websocket that only counts and hashes what it receives: the cheapest reader."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.buf = bytearray()
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.digest = hashlib.sha1()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.receive(data, 0.0)

    def on_frame(self, opcode: int, payload: bytearray, stamp: float) -> None:
        if opcode == PING:  # unanswered, the server's heartbeat closes the socket (~30 s)
            assert self.transport is not None
            self.transport.write(client_frame(PONG, payload))
            return
        self.frames += 1
        self.digest.update(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("closed during handshake"))


async def connect(port: int, account: str, query: str, label: str) -> Client:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(lambda: Client(label), "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        (
            f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Luna-Account-Id: {account}\r\n\r\n"
        ).encode()
    )
    head = await client.head
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.decode(errors="replace"))
    return client


def start_server(
    src: str, redis_url: str, env: dict[str, str] | None = None, wrap: list[str] | None = None
) -> Server:
    port = free_port()
    root = str(Path(src).resolve())
    proc = subprocess.Popen(
        [*(wrap or []), *SERVER, "--port", str(port), "--redis-url", redis_url],
        stdout=subprocess.DEVNULL,
        cwd=root,
        env={**os.environ, **(env or {}), "PYTHONPATH": root},
    )
    wait_port(port, 600 if wrap else 20)  # under valgrind the imports alone take a minute
    return Server(root, port, proc)


def accounts(n: int) -> list[str]:
    rng = random.Random(11)
    return [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]


def messages(accs: list[str], sources: int, size: int) -> list[tuple[bytes, bytes]]:
    """One pre-built PUBLISH per (account, source), interleaved as many cameras would be."""
    rng = random.Random(7)
    out = []
    for s in range(sources):
        for acc in accs:
            event = face_event(rng, f"camera-{s}", size)
            data = stamp(luna_message(event), 1700000000.0 + len(out))
            out.append((f"luna-sender:{acc}".encode(), data))
    return out


def resp(channel: bytes, data: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel,
        len(data),
        data,
    )


async def publish(
    redis_url: str, commands: list[bytes], total: int, rate: float, tick: float = 0.005
) -> None:
    """``total`` commands (cycling) at ``rate`` per second, a batch per ``tick``."""
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def drain_replies() -> None:
        while await reader.read(65536):
            pass

    replies = asyncio.create_task(drain_replies())
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            writer.write(b"".join(commands[i % len(commands)] for i in range(sent, due)))
            sent = due
            await writer.drain()
        await asyncio.sleep(tick)
    writer.close()
    replies.cancel()


async def run(args: argparse.Namespace) -> None:
    redis, redis_url = start_redis()
    wrap = args.wrap.split() if args.wrap else None
    servers: list[Server] = []
    floors: list[Floor] = []
    sink: subprocess.Popen[bytes] | None = None
    try:
        for src in args.src:
            servers.append(start_server(src, redis_url, wrap=wrap))
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        sink_port = None
        if "forward" in args.floor:  # one discarding listener for every forward floor
            sink = start_sink()
            assert sink.stdout is not None
            sink_port = int(sink.stdout.readline().split()[2])
        for mode in args.floor:
            floors.append(
                start_floor(mode, redis_port, sink_port if mode == "forward" else None, wrap)
            )
        accs = accounts(args.accounts)
        shape = [("all", "")]
        shape += [(f"src{k}", f"?sources=camera-{k}") for k in range(args.per_source)]
        shape += [("never", f"?sources={NEVER}")]
        for server in servers:
            for acc in accs:
                for label, query in shape:
                    server.clients.append(await connect(server.port, acc, query, label))
        pool = messages(accs, args.sources, args.size)
        commands = [resp(c, d) for c, d in pool]
        mean = sum(len(d) for _, d in pool) / len(pool)
        print(
            f"{len(servers)} server(s), {args.accounts} accounts x {args.sources} sources, "
            f"{len(shape)} sockets/account, events {mean:.0f} B, {args.events} at {args.rate}/s"
        )
        await asyncio.sleep(1.0)  # subscriptions confirmed
        await publish(redis_url, commands, args.warmup, args.rate, args.tick)
        await asyncio.sleep(1.0)
        # Idle CPU (timers, sweeps, heartbeats): reported, and taken out of the "net" figure,
        # so a low rate does not charge the events for the seconds they are spread over.
        pids = [s.proc.pid for s in servers] + [f.proc.pid for f in floors]
        idle0, t0 = [cpu_seconds(p) for p in pids], time.perf_counter()
        await asyncio.sleep(args.idle)
        idle_rate = [
            (cpu_seconds(p) - c) / (time.perf_counter() - t0)
            for p, c in zip(pids, idle0, strict=True)
        ]
        before = [c.frames for s in servers for c in s.clients]
        floor_before = [f.counts() for f in floors]
        if args.attach:  # e.g. "strace -c -f -p {pid} -o /tmp/st-{i}.txt"; floors when wrapped
            for i, pid in enumerate(pids if args.wrap else pids[: len(servers)]):
                cmd = args.attach.format(pid=pid, i=i).split()
                tool = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
                if i < len(servers):
                    servers[i].tools.append(tool)
        if args.py_spy:
            for i, server in enumerate(servers):
                server.spy = subprocess.Popen(
                    [
                        *PY_SPY,
                        "-p",
                        str(server.proc.pid),
                        "-f",
                        "raw",
                        "-o",
                        f"{args.py_spy}-{i}.txt",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            await asyncio.sleep(1.0)
        cpu0 = [cpu_seconds(p) for p in pids]
        wall0 = time.perf_counter()
        await publish(redis_url, commands, args.events, args.rate, args.tick)
        await asyncio.sleep(0.5)
        cpu1 = [cpu_seconds(p) for p in pids]
        wall = time.perf_counter() - wall0
        for i, pid in enumerate(pids if args.detach else []):  # e.g. a profiler's dump
            subprocess.run(args.detach.format(pid=pid, i=i).split(), stdout=subprocess.DEVNULL)
        floor_after = [f.counts() for f in floors]
        for server in servers:
            for tool in server.tools:
                tool.send_signal(2)
                tool.wait(30)
            if server.spy is not None:
                server.spy.send_signal(2)
                server.spy.wait(30)
        after = [c.frames for s in servers for c in s.clients]
        per = len(accs) * len(shape)
        nets = []
        for i, server in enumerate(servers):
            frames = sum(after[i * per : (i + 1) * per]) - sum(before[i * per : (i + 1) * per])
            used = cpu1[i] - cpu0[i]
            net = used - idle_rate[i] * wall
            nets.append(net)
            print(
                f"{server.src}: {used * 1e6 / args.events:6.1f} us/event, "
                f"net of idle {net * 1e6 / args.events:6.1f}  (cpu {used:.2f} s over "
                f"{wall:.1f} s, idle {idle_rate[i] * 1e3:.1f} ms/s, {frames} frames)"
            )
            if server.spy is not None:
                summarise(f"{args.py_spy}-{i}.txt")
        for j, fl in enumerate(floors):
            i = len(servers) + j
            used = cpu1[i] - cpu0[i]
            net = used - idle_rate[i] * wall
            (m0, e0), (m1, e1) = floor_before[j], floor_after[j]
            times = "/".join(f"{n / net:.1f}x" if net > 0 else "-" for n in nets)
            print(
                f"floor {fl.mode}: {used * 1e6 / args.events:6.1f} us/event, "
                f"net of idle {net * 1e6 / args.events:6.1f}  (cpu {used:.2f} s, "
                f"idle {idle_rate[i] * 1e3:.1f} ms/s, {m1 - m0} messages, {e1 - e0} frames); "
                f"server(s) at {times} of it"
            )
        digests = [[c.digest.hexdigest() for c in s.clients] for s in servers]
        if len(servers) > 1:
            same = all(d == digests[0] for d in digests[1:])
            print("frames byte-identical across servers:", "yes" if same else "NO")
    finally:
        for fl in floors:
            fl.proc.terminate()
            fl.proc.wait(10)
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        for server in servers:
            server.proc.terminate()
        for server in servers:
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
        redis.terminate()
        redis.wait()


def summarise(path: str, top: int = 14) -> None:
    """The functions holding the most samples: own (self) and with their callees (inclusive)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        names = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        n = int(count)
        total += n
        own[names[-1]] = own.get(names[-1], 0) + n
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + n
    for title, table in (("self", own), ("inclusive", inclusive)):
        print(f"  top {title} ({total} samples):")
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {100 * n / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", action="append", help="checkout to run (repeat for A/B)")
    parser.add_argument("--accounts", type=int, default=30)
    parser.add_argument("--sources", type=int, default=30, help="cameras per account")
    parser.add_argument("--per-source", type=int, default=2, help="per-source sockets/account")
    parser.add_argument("--size", type=int, default=2700, help="event size target (bytes)")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=3.0, help="idle CPU sampling (s)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second")
    parser.add_argument(
        "--tick", type=float, default=0.005, help="publisher batch interval (s): events/wake-up"
    )
    parser.add_argument(
        "--floor",
        action="append",
        default=[],
        choices=("read", "forward"),
        help="also run a benchmarks.floor subscriber (repeat for both)",
    )
    parser.add_argument("--attach", help="a command run on each server while publishing")
    parser.add_argument(
        "--wrap", help="a command prefix for every server and floor (e.g. valgrind ...)"
    )
    parser.add_argument("--detach", help="a command run on each process after publishing")
    parser.add_argument("--py-spy", metavar="PREFIX", help="py-spy raw profiles PREFIX-<i>.txt")
    args = parser.parse_args()
    args.src = args.src or ["."]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
