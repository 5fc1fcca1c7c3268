"""A burst of costly handshakes must not hold every subscriber's deliveries back.

An outside pass opened 1,000 websockets with 128 KB queries at once: each handshake parses and
compiles its filter on the event loop, and the bus was read again only after all of them, so
deliveries to everyone else waited 2.5-4.8 s. Handshake work now takes turns with delivery
(web/turns.py). Real process, real redis-server, raw sockets.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import orjson

from .helpers import (
    LARGE_SOURCES,
    Service,
    account,
    face_event,
    no_gc_pauses,
    raw_upgrade,
    upgrade_head,
)

WATCHER = """
import asyncio, signal, sys, time
import aiohttp, orjson

async def main():
    lags = []
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(sys.argv[1], headers={"Luna-Account-Id": sys.argv[2]})
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        async def read():
            async for msg in ws:
                lags.append(time.time() - orjson.loads(msg.data)["event"]["sent_at"])
        task = asyncio.create_task(read())
        await stop.wait()
        task.cancel()
    print(" ".join(f"{x:.4f}" for x in lags), flush=True)

asyncio.run(main())
"""


PROBER = """
import signal, socket, sys, time

stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
took = []
while not stop:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
        s.sendall(b"GET /healthcheck HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    took.append(time.monotonic() - started)
    time.sleep(0.05)
print(" ".join(f"{x:.4f}" for x in took), flush=True)
"""


def _publisher(redis_server, acc: str, stop: threading.Event) -> None:
    client = redis_server.client()
    while not stop.is_set():
        message = {
            "handler_id": "h",
            "Luna-Request-Id": "1536751345,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
            "events": [face_event(sent_at=time.time())],
            "event_create_time": None,
            "event_end_time": None,
        }
        client.publish(f"luna-sender:{acc}", orjson.dumps(message))
        time.sleep(0.005)


async def test_a_burst_of_large_upgrades_does_not_stall_delivery(redis_server) -> None:
    svc = Service("--redis-url", redis_server.url)
    watched, attacker = account(), account()
    head = upgrade_head(f"sources={LARGE_SOURCES}", attacker)

    stop = threading.Event()
    # The watcher is a process of its own: this one's loop is busy with the burst's 600 clients
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER, svc.ws_url + "/ws", watched],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert (await asyncio.to_thread(watcher.stdout.readline)).strip() == "ready"
        pub = threading.Thread(target=_publisher, args=(redis_server, watched, stop))
        pub.start()
        await asyncio.sleep(1.0)
        with no_gc_pauses():
            burst = await asyncio.gather(*(raw_upgrade(svc.port, head, 120) for _ in range(600)))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.to_thread(pub.join)
        await asyncio.sleep(0.3)
        watcher.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(watcher.communicate, None, 20)
        assert {status for status, _ in burst} == {b"HTTP/1.1 101 Switching Protocols"}
        for _, writer in burst:
            writer.transport.abort()
    finally:
        stop.set()
        watcher.kill()
        assert svc.terminate() == 0
    lags = [float(x) for x in out.split()]
    assert len(lags) > 300  # 5 ms apart for over 2 s
    # Before: the subscriber waited as long as the whole burst took to compile (1-2 s here).
    assert max(lags) < 0.4, sorted(lags)[-5:]


BURST = 1300


async def test_held_heads_meet_no_deadline_and_small_requests_are_not_held(redis_server) -> None:
    """Found by the outside pass on the turns: bytes waiting for their turn ran into the head
    deadline (heads sent in full were closed unanswered), and /healthcheck waited 1.7-3.1 s
    behind a burst. Here the deadline is 1 s and the burst needs several."""
    svc = Service(
        "--redis-url", redis_server.url, env={"LUNA_SENDER_LIMITS__HTTP_HEAD_TIMEOUT": "1"}
    )
    head = upgrade_head(f"sources={LARGE_SOURCES}", account())

    try:
        # The prober is a process of its own: this one's loop is busy sending the burst
        prober = subprocess.Popen(
            [sys.executable, "-c", PROBER, str(svc.port)], stdout=subprocess.PIPE, text=True
        )
        with no_gc_pauses():  # the client must not stand still past the deadline itself
            started = time.monotonic()
            burst = await asyncio.gather(*(raw_upgrade(svc.port, head) for _ in range(BURST)))
            took = time.monotonic() - started
        prober.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(prober.communicate, None, 20)
        for _, writer in burst:
            writer.transport.abort()
    finally:
        assert svc.terminate() == 0
    probes = [float(x) for x in out.split()]
    statuses = [status for status, _ in burst]
    # The burst outlasted the 1 s deadline, so the deadline was tested. 900 upgrades took
    # 0.95-1.50 s in full runs, on either side of it; 1,300 keep clear of it.
    assert took > 1.1, took
    assert statuses.count(b"HTTP/1.1 101 Switching Protocols") == BURST, set(statuses)
    # Not held behind the burst: an outside pass saw 1.7-3.1 s when small requests were
    assert len(probes) >= 5 and max(probes) < 1.5, sorted(probes)[-5:]
