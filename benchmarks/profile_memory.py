"""W7 in small: where an idle websocket's bytes go, quicker than the full benchmark.

    python -m benchmarks.profile_memory [--n 2000] [--base /tmp/luna-base] [--trace 15]

Starts redis-server and the service (this checkout, or ``--base``'s) as a subprocess, measures
its RSS, opens ``--n`` idle ``/ws`` sockets from this process (the W7 subscriber: no filter,
``Luna-Account-Id``), and prints the RSS growth per socket. With ``--trace N`` the service runs
under ``tracemalloc`` and the top N allocation sites of the growth are printed too (tracemalloc
inflates RSS, so take the KiB figure from a run without it).

The service is started through a bootstrap that watches a trigger file from a thread: the
snapshot is taken inside the server, where the sockets are, without any hook in the service.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks import procstat
from benchmarks.run import ACCOUNT

REPO = Path(__file__).resolve().parent.parent

# Runs inside the server: snapshot on request, written where the driver asked.
BOOTSTRAP = """
import os, pickle, sys, threading, time, tracemalloc, gc
trigger = os.environ["PROFILE_TRIGGER"]
def watch():
    n = 0
    while True:
        time.sleep(0.1)
        if os.path.exists(trigger):
            out = open(trigger).read().strip()
            os.unlink(trigger)
            gc.collect()
            snap = tracemalloc.take_snapshot()
            with open(out + ".tmp", "wb") as f:
                pickle.dump(snap, f)
            os.rename(out + ".tmp", out)
threading.Thread(target=watch, daemon=True).start()
from luna_sender.cli.main import main
sys.argv = ["luna-sender"] + sys.argv[1:]
main()
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} never opened")


async def open_sockets(port: int, n: int) -> list[asyncio.StreamWriter]:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Luna-Account-Id: {ACCOUNT}\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            status = await reader.readuntil(b"\r\n\r\n")
            if not status.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(status.decode(errors="replace"))
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(n)))
    return writers


def snapshot(trigger: Path, out: Path) -> tracemalloc.Snapshot:
    trigger.write_text(str(out))
    while not out.exists():
        time.sleep(0.1)
    with out.open("rb") as f:
        snap: tracemalloc.Snapshot = pickle.load(f)
    return snap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--base", help="a checkout to run instead of this one")
    parser.add_argument("--trace", type=int, default=0, help="print the top N growth sites")
    parser.add_argument("--frames", type=int, default=8, help="traceback depth with --trace")
    parser.add_argument("--loop", default="auto", help="LUNA_SENDER_EVENT_LOOP")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="luna-mem-"))
    rport, port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--save", "", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    code = str(Path(args.base).resolve()) if args.base else str(REPO)
    env = {
        **os.environ,
        "PYTHONPATH": code,
        "LUNA_SENDER_EVENT_LOOP": args.loop,
        "PROFILE_TRIGGER": str(tmp / "trigger"),
    }
    cmd = [sys.executable]
    if args.trace:
        cmd += ["-X", f"tracemalloc={args.frames}"]
    cmd += ["-c", BOOTSTRAP, "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--redis-url", f"redis://127.0.0.1:{rport}/0", "--log-level", "WARNING"]
    server = subprocess.Popen(cmd, cwd=code, env=env)
    try:
        wait_port(rport)
        wait_port(port)
        time.sleep(0.5)
        before = procstat.rss_bytes(server.pid)
        snap0 = snapshot(tmp / "trigger", tmp / "s0") if args.trace else None
        loop = asyncio.new_event_loop()
        writers = loop.run_until_complete(open_sockets(port, args.n))
        time.sleep(1.0)
        after = procstat.rss_bytes(server.pid)
        per = (after - before) / args.n / 1024
        print(
            f"{code}: {args.n} idle sockets, RSS {before / 2**20:.1f} -> "
            f"{after / 2**20:.1f} MiB, {per:.2f} KiB/connection"
        )
        if snap0 is not None:
            snap1 = snapshot(tmp / "trigger", tmp / "s1")
            stats = snap1.compare_to(snap0, "traceback")
            total = sum(s.size_diff for s in stats)
            print(f"traced growth {total / args.n:.0f} B/connection; top sites:")
            for stat in stats[: args.trace]:
                print(f"{stat.size_diff / args.n:8.0f} B/conn {stat.count_diff / args.n:6.2f} blk")
                for line in stat.traceback.format(most_recent_first=True)[: 2 * args.frames]:
                    print("        " + line.strip())
            lines = snap1.compare_to(snap0, "lineno")
            print("by line:")
            for stat in lines[: args.trace]:
                print(f"{stat.size_diff / args.n:8.0f} B/conn  {stat.traceback[0]}")
        for w in writers:
            w.close()
        loop.close()
    finally:
        server.terminate()
        server.wait(10)
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
