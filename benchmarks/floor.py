"""The physical floor: what any Python subscriber on this machine pays for luna's event stream.

On the 2-core VM the CPU per event depends mostly on how many events arrive per process wake-up:
``read`` below costs ~20 us per event when every event is its own wake-up and ~5 us at twenty
per wake-up, ``forward`` ~60 and ~30 (docs/performance.md, "Round 3"). A figure for luna-sender
alone therefore says as much about the publisher's batching and the machine as about luna.
profile_ingest runs these processes on the same redis, fed the same events in the same run, so
luna's cost is quoted as a multiple of the floor, not in absolute microseconds that move with
the load shape.

Modes (uvloop, a bare asyncio.Protocol and hiredis.Reader, PSUBSCRIBE ``luna-sender:*``):

- ``read``: count the messages. The cost of being woken and reading the bus.
- ``forward``: per message ``orjson.loads`` the payload and, per event, ``orjson.dumps`` the
  envelope luna sends and write it as one server (unmasked) websocket text frame to one of
  ``SINKS`` TCP connections, picked by channel (so by account), to a ``sink`` process that reads
  and discards. The least work that delivers the same bytes to one socket per event.
- ``sink``: that discarding listener (not measured).

    python -m benchmarks.floor --mode sink                       # prints "sink <pid> <port>"
    python -m benchmarks.floor --redis-port P --mode read        # prints "floor <pid> ready"
    python -m benchmarks.floor --redis-port P --mode forward --sink-port S

SIGUSR1 makes a floor print ``messages <n> events <m>`` (what it has taken in so far).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import hiredis
import orjson
import uvloop

from luna_sender.delivery.frames import text_frame
from luna_sender.wire import FaceMessage

PATTERN = b"luna-sender:*"
SINKS = 40


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class Subscriber(asyncio.Protocol):
    def __init__(self, mode: str, sinks: list[asyncio.WriteTransport]) -> None:
        self.reader = hiredis.Reader()
        self.forward = mode == "forward"
        self.sinks = sinks
        self.messages = 0
        self.events = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(command(b"PSUBSCRIBE", PATTERN))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            kind = reply[0]
            if kind == b"pmessage":
                self.messages += 1
                if self.forward:
                    self.deliver(reply[2], reply[3])
            elif kind == b"psubscribe" and not self.ready.done():
                self.ready.set_result(None)

    def deliver(self, channel: bytes, data: bytes) -> None:
        msg = orjson.loads(data)
        sink = self.sinks[hash(channel) % len(self.sinks)]
        # luna's own envelope builder (wire.py), so the floor writes luna's bytes; none of
        # luna's checks (decode_face) run here.
        face = FaceMessage(
            msg.get("handler_id"),
            msg.get("Luna-Request-Id"),
            msg["events"],
            msg.get("event_create_time"),
            msg.get("event_end_time"),
        )
        for i in range(len(face.events)):  # decoded dicts: re-serialised, as luna did to 0.1
            self.events += 1
            sink.write(text_frame(face.envelope(i)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class Discard(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def sink() -> None:
    server = await asyncio.get_running_loop().create_server(Discard, "127.0.0.1", 0)
    print("sink", os.getpid(), server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def floor(redis_port: int, mode: str, sink_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    sinks: list[asyncio.WriteTransport] = []
    if mode == "forward":
        if sink_port is None:
            raise SystemExit("--mode forward needs --sink-port")
        for _ in range(SINKS):
            transport, _ = await loop.create_connection(Discard, "127.0.0.1", sink_port)
            sinks.append(transport)
    _, sub = await loop.create_connection(lambda: Subscriber(mode, sinks), "127.0.0.1", redis_port)
    await sub.ready

    def report() -> None:
        print("messages", sub.messages, "events", sub.events, flush=True)

    loop.add_signal_handler(signal.SIGUSR1, report)
    print("floor", os.getpid(), "ready", flush=True)
    await sub.lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("read", "forward", "sink"), required=True)
    parser.add_argument("--redis-port", type=int)
    parser.add_argument("--sink-port", type=int)
    args = parser.parse_args()
    if args.mode == "sink":
        uvloop.run(sink())
    elif args.redis_port is None:
        sys.exit("--redis-port is required")
    else:
        uvloop.run(floor(args.redis_port, args.mode, args.sink_port))


if __name__ == "__main__":
    main()
