"""RFC 6455 framing: the one websocket frame codec of the project.

The server frames each outgoing envelope once and writes the same bytes to every matching socket
(hub.py), which only works because servers never mask. The raw test client (tests/rawws.py) and
the benchmark's load generator (benchmarks/loadgen.py) speak the client side: they must mask what
they send and parse what they get. Both sides live here so there is one reading of the length
encoding, not three hand copies that can drift apart.

Only what those users need: no fragmentation reassembly, no extensions, and the parsers accept
the unmasked frames a server sends.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Awaitable, Callable

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed text frame: servers never mask, so one frame fits all sockets."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def client_frame(
    opcode: int, payload: bytes | bytearray, fin: bool = True, length: int | None = None
) -> bytes:
    """A masked frame as a client must send it; ``length`` lets a test lie about the size."""
    n = len(payload) if length is None else length
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    mask = os.urandom(4)
    size = len(payload)
    # One big-integer XOR: a per-byte Python loop costs ~50x more on a large payload.
    key = int.from_bytes((mask * (size // 4 + 1))[:size])
    return head + mask + (int.from_bytes(payload) ^ key).to_bytes(size)


def close_frame(code: int, message: bytes = b"") -> bytes:
    """A server Close: the code and at most 123 bytes of reason (a control frame holds 125)."""
    payload = struct.pack("!H", code) + message[:123]
    return bytes((0x88, len(payload))) + payload


def pong_frame(payload: bytes) -> bytes:
    """The answer to a client's ping (its payload is at most 125 bytes, checked on read)."""
    return bytes((0x8A, len(payload))) + payload


def unmask(mask: bytes, payload: bytes | bytearray) -> bytes:
    """A client frame's payload, unmasked as one big-integer XOR (no per-byte Python loop)."""
    size = len(payload)
    if not size:
        return b""
    key = int.from_bytes((mask * (size // 4 + 1))[:size])
    return (int.from_bytes(payload) ^ key).to_bytes(size)


class FrameParser:
    """Client-side frame splitting for an ``asyncio.Protocol`` that appends what it receives to
    ``self.buf``: ``parse_frames`` hands every complete frame to ``on_frame`` and keeps an
    incomplete tail for the next chunk.

    It is a mixin method with the length decoding inline, not a function returning a list,
    because the load generator's CPU per frame shows up as latency: this shape costs no call
    or list per frame. Payloads are the bytearray slices themselves (one copy, not two).
    """

    buf: bytearray
    head: asyncio.Future[bytes]

    def on_frame(self, opcode: int, payload: bytearray, stamp: float) -> None:
        raise NotImplementedError

    def receive(self, data: bytes, stamp: float) -> None:
        """A chunk from the socket: the upgrade response's head first (``self.head`` resolves
        with it, without its blank line), frames after it."""
        buf = self.buf
        buf += data
        if not self.head.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head.set_result(bytes(buf[:end]))
            del buf[: end + 4]
        self.parse_frames(stamp)

    def parse_frames(self, stamp: float) -> None:
        buf = self.buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b1, n = buf[pos], buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, hdr = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, hdr = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < hdr + n:
                break
            payload = buf[pos + hdr : pos + hdr + n]
            pos += hdr + n
            self.on_frame(b1 & 0x0F, payload, stamp)
        if pos:
            del buf[:pos]


async def read_frame(readexactly: Callable[[int], Awaitable[bytes]]) -> tuple[int, bytes]:
    """One frame from a stream, as (first byte, payload), reading no byte beyond it: a test
    client that stops calling this really stops reading."""
    b1, b2 = await readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await readexactly(8))[0]
    return b1, await readexactly(n)
