"""A deliberately small websocket client on raw asyncio sockets.

Thousands of aiohttp clients would make the test process the bottleneck; these read frames with a
few struct calls (the codec in luna_sender/delivery/frames.py), can stop reading on purpose (a
stalled consumer), and can send malformed frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass

from luna_sender.delivery.frames import CLOSE, PING, PONG, client_frame, read_frame


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]


class RawWS:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws",
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> RawWS:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            # A stalled client must really stop reading: asyncio reads ahead up to 2 x limit.
            limit = 2**24 if rcvbuf is None else 1024
            reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        except BaseException:
            sock.close()  # a refused or failed connect must not leave the socket to the GC
            raise
        try:
            return await cls._handshake(reader, writer, port, path, headers)
        except BaseException:
            writer.close()  # refused upgrades (e.g. 503 at max_connections) close their socket
            raise

    @classmethod
    async def _handshake(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        port: int,
        path: str,
        headers: dict[str, str] | None,
    ) -> RawWS:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        return cls(reader, writer)

    async def recv(self) -> Frame:
        b1, payload = await read_frame(self.reader.readexactly)
        return Frame(bool(b1 & 0x80), b1 & 0x0F, payload)

    async def recv_data(self) -> Frame:
        """The next text/binary/close frame, answering pings on the way."""
        while True:
            frame = await self.recv()
            if frame.opcode == PING:
                self.send(PONG, frame.payload)
                continue
            if frame.opcode == PONG:
                continue
            return frame

    def send(
        self, opcode: int, payload: bytes, fin: bool = True, length: int | None = None
    ) -> None:
        """A masked client frame; ``length`` lets a test lie about the payload size."""
        self.writer.write(client_frame(opcode, payload, fin, length))

    def close(self) -> None:
        self.writer.close()
