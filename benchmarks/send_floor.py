"""The kernel's price of one websocket delivery on this machine: a bare loopback ``send()``.

    python -m benchmarks.send_floor [--n 1000] [--rate 5] [--seconds 10] [--rounds 3]

At W1's lowest rates (5-10 events/s to 1,000 sockets) nothing can be batched: each delivery is
one ``send()`` on one socket, for luna and nchan alike, and both spend most of their CPU in the
kernel. This measures that floor without any server: a plain Python loop sends one frame per
socket per tick to ``--n`` sockets read by a uvloop process, and the sender's system time per
send is read from /proc. Variants that a server could choose are measured in the same run:
``SO_SNDBUF`` fixed at 256 KiB (luna's ``ws.socket_send_buffer``), ``TCP_NODELAY``, both.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

from benchmarks.procstat import user_sys

READER = """
import asyncio, sys
import uvloop
class Sink(asyncio.Protocol):
    def data_received(self, data): pass
async def main():
    loop = asyncio.get_running_loop()
    for _ in range(int(sys.argv[2])):
        await loop.create_connection(Sink, "127.0.0.1", int(sys.argv[1]))
    await asyncio.sleep(3600)
uvloop.run(main())
"""
VARIANTS = ("default", "sndbuf", "nodelay", "both")


def one(variant: str, n: int, rate: float, seconds: float, size: int) -> tuple[float, float]:
    """(user, system) µs per send."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    reader = subprocess.Popen([sys.executable, "-c", READER, str(port), str(n)])
    conns = []
    try:
        while len(conns) < n:
            conn, _ = listener.accept()
            conn.setblocking(False)
            if variant in ("sndbuf", "both"):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            if variant in ("nodelay", "both"):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(conn)
        time.sleep(1.0)
        frame = b"\x81\x7e" + size.to_bytes(2, "big") + b"x" * size
        user0, sys0 = user_sys(os.getpid(), whole_tree=False)  # not the reader
        start, ticks, sends = time.monotonic(), 0, 0
        while time.monotonic() - start < seconds:
            for conn in conns:
                conn.send(frame)
            sends += len(conns)
            ticks += 1
            pause = start + ticks / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        user1, sys1 = user_sys(os.getpid(), whole_tree=False)
        return (user1 - user0) / sends * 1e6, (sys1 - sys0) / sends * 1e6
    finally:
        reader.kill()
        reader.wait()
        for conn in conns:
            conn.close()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="sends per socket per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=900, help="frame payload bytes")
    args = parser.parse_args()
    found: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            user, system = one(variant, args.n, args.rate, args.seconds, args.size)
            found[variant].append(system)
            print(f"round {r + 1} {variant:8s} user {user:.2f} µs, sys {system:.2f} µs per send")
    print(f"\nsys µs per send, {args.n} sockets at {args.rate}/s, median (min-max):")
    for variant, rows in found.items():
        print(f"{variant:8s} {statistics.median(rows):.2f} ({min(rows):.2f}-{max(rows):.2f})")


if __name__ == "__main__":
    main()
