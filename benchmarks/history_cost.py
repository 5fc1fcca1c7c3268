"""What recording an event in the Redis history costs, with 1 and 3 instances appending it.

    python -m benchmarks.history_cost [--events 5000] [--size 1000] [--redis-url redis://...]

Without ``--redis-url`` a private redis-server is started on a free port (never 6379). Every
instance subscribed to a channel appends every message it receives (bus/redis_history.py), so
with N instances one event costs N script calls: the first records it, the others find its hash.
Three figures per case:

- Redis CPU per event: the server's own time in the append script (INFO commandstats,
  ``cmdstat_evalsha``), summed over all appenders and divided by the events recorded. This is the
  extra Redis work the issue asks about; it is what a shared Redis pays.
- wall per event, burst: events arriving faster than a round trip (the normal case at load), so
  appends are batched into pipelines; throughput seen by one instance.
- wall per event, one at a time: each append awaited before the next (an idle channel): about
  one round trip.
- staggered (3 appenders): the instances run one after the other, so the figure splits cleanly
  into one recording plus two hash look-ups, without the appenders competing for the CPU.

The stream is kept full (``--size`` entries, prefilled), so every append also trims one entry:
the steady state of a busy channel.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import redis

from luna_sender.bus.history import Window
from luna_sender.bus.redis_history import RedisHistory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="history-bench-")
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


def _evalsha_usec(url: str) -> tuple[int, int]:
    stats = redis.Redis.from_url(url).info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def _event(i: int) -> bytes:
    # A face event of realistic size (~600 bytes), unique per i (the hash must differ).
    pad = "x" * 480
    return f'{{"events":[{{"event_id":"{uuid.uuid4()}","n":{i},"pad":"{pad}"}}]}}'.encode()


async def _case(url: str, appenders: int, events: int, size: int, mode: str) -> tuple[float, float]:
    window = Window(size=size)
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    instances = [RedisHistory(url, window, prefix=prefix) for _ in range(appenders)]
    channel = "luna:bench"
    try:
        await asyncio.gather(*(instances[0].append(channel, _event(-i)) for i in range(size)))
        data = [_event(i) for i in range(events)]
        redis.Redis.from_url(url).config_resetstat()

        async def run(history: RedisHistory) -> None:
            if mode != "one-at-time":
                chunk = 200
                for start in range(0, events, chunk):
                    await asyncio.gather(
                        *(history.append(channel, d) for d in data[start : start + chunk])
                    )
            else:
                for d in data:
                    await history.append(channel, d)

        started = time.perf_counter()
        if mode == "staggered":  # one instance after the other: no contention between them
            for history in instances:
                await run(history)
        else:
            await asyncio.gather(*(run(h) for h in instances))
        wall = time.perf_counter() - started
        calls, usec = _evalsha_usec(url)
        assert calls >= events * appenders, (calls, events, appenders)
        return usec / events, wall / events * 1e6
    finally:
        for history in instances:
            await history.close()


def _publish_usec(url: str, events: int, subscribers: int) -> float:
    """The baseline: Redis's own time to PUBLISH one such event to ``subscribers`` instances."""
    client = redis.Redis.from_url(url)
    subs = [client.pubsub() for _ in range(subscribers)]
    for sub in subs:
        sub.subscribe("luna:bench")
        sub.get_message(timeout=1)
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    for i in range(events):
        pipe.publish("luna:bench", _event(i))
    pipe.execute()
    stats = client.info("commandstats")["cmdstat_publish"]
    for sub in subs:
        sub.close()
    return float(stats["usec"]) / events


async def main_async(url: str, events: int, size: int) -> None:
    where = url.split("@")[-1]
    print(f"{events} events of ~600 B, stream full at {size} entries, redis at {where}")
    for n in (1, 3):
        print(f"baseline: PUBLISH to {n} instance(s) {_publish_usec(url, events, n):.1f} µs/event")
    print(f"{'appenders':>9} {'mode':>12} {'Redis CPU/event':>16} {'wall/event':>11}")
    for appenders, mode in [
        (1, "burst"),
        (1, "one-at-time"),
        (3, "burst"),
        (3, "one-at-time"),
        (3, "staggered"),
    ]:
        cpu, wall = await _case(url, appenders, events, size, mode)
        print(f"{appenders:>9} {mode:>12} {cpu:>13.1f} µs {wall:>8.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--redis-url", help="use this Redis instead of a private one")
    args = parser.parse_args()
    proc = workdir = None
    url = args.redis_url
    if url is None:
        proc, url, workdir = _start_redis()
    try:
        asyncio.run(main_async(url, args.events, args.size))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
