"""What running out of file descriptors costs the server, on either event loop.

    python -m benchmarks.fd_exhaustion --loop asyncio [--src /tmp/luna-base]

Two measurements on a service started under a low ``RLIMIT_NOFILE`` (memory bus):

- ``idle``: 150 TCP connections that never send a request, under a limit of 96 (and a
  ``ws.fd_reserve`` of 8, so that plain connections can take the last one), hold every
  descriptor; the server's CPU over 10 s is what waiting for descriptors costs it (the
  standard loop's accept retries; docs/reliability.md, "The open-file limit").
- ``burst``: 3,000 upgrades at once under a limit of 256 (default reserve): how long until every one has its
  answer or is dropped, the answers by status (0 = closed unanswered), and
  ``fd_exhausted_total`` after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks.procstat import cpu_seconds
from benchmarks.run import free_port, wait_port

UPGRADE = (
    b"GET /ws/general HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def start(src: str, loop: str, limit: int, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    port, root = free_port(), str(Path(src).resolve())

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "luna_sender.cli", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
        env={
            **os.environ,
            "PYTHONPATH": root,
            "LUNA_SENDER_EVENT_LOOP": loop,
            **env,
        },
        preexec_fn=cap,
    )
    wait_port(port)
    return proc, port


async def idle(src: str, loop: str) -> str:
    proc, port = start(src, loop, 96, LUNA_SENDER_WS__FD_RESERVE="8")
    held = []
    try:
        for _ in range(150):
            held.append((await asyncio.open_connection("127.0.0.1", port))[1])
        await asyncio.sleep(2)
        cpu0 = cpu_seconds(proc.pid)
        await asyncio.sleep(10)
        share = (cpu_seconds(proc.pid) - cpu0) / 10 * 100
        return f"idle: {share:.1f} % of a core while 150 idle connections hold the descriptors"
    finally:
        for writer in held:
            writer.close()
        proc.terminate()
        proc.wait()


async def burst(src: str, loop: str) -> str:
    proc, port = start(src, loop, 256)

    async def one() -> tuple[int, asyncio.StreamWriter | None]:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(UPGRADE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
            return int(head.split()[1]), writer
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return 0, None

    try:
        t0 = time.monotonic()
        answers = await asyncio.gather(*(one() for _ in range(3000)))
        took = time.monotonic() - t0
        for _, writer in answers:
            if writer is not None:
                writer.close()
        await asyncio.sleep(1)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
        failures = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("fd_exhausted_total")
        )
        codes = [code for code, _ in answers]
        by_code = {code: codes.count(code) for code in sorted(set(codes))}
        return f"burst: {took:.1f} s, answers {by_code}, fd_exhausted_total {failures:.0f}"
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=".", help="checkout to run")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="asyncio")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    print(args.loop, args.src)
    print(asyncio.run(idle(args.src, args.loop)))
    print(asyncio.run(burst(args.src, args.loop)))


if __name__ == "__main__":
    main()
